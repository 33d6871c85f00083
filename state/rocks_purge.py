"""How a RocksDB store of ours forgets a customer: no file of it keeps their bytes.

A delete in RocksDB writes a marker; the value stays in the memtable, the write-ahead
log and the table files until a compaction drops it. To forget, the stores delete, then
flush the memtable (its log goes with it) and force a compaction of the ranges that held
the customer down to the last level, which rewrites every file holding them.

A compaction's input files are deleted only once no read pins the version that listed
them; one unpinned by a read (a get, or the compaction's own range check) stays on disk
until the next flush (RocksDB's "Delete Stale Files"). So the purge ends by flushing
until the directory holds no table file that the store no longer uses.
"""

import time
from collections.abc import Iterable
from pathlib import Path

from rocksdict import BottommostLevelCompaction, CompactOptions, DBCompressionType, Options, Rdict

#: Deleted to give a flush something to write (a key none of the stores uses: theirs
#: never start with a NUL and this is not the context view's `\x00erased`).
_NUDGE = b"\x00purge"
#: Flushes tried before a stale file is reported; waits between them for background
#: jobs (seconds).
_FLUSHES = 50
_IDLE_WAIT = 0.01
_IDLE_MOST = 500


class StaleFilesError(RuntimeError):
    """Table files that may hold erased bytes stayed on disk (pinned by an open read)."""


def purge(db: Rdict, ranges: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    """After their deletes: leave no file holding these key ranges' old values (None:
    from the first key, to the last)."""
    db.flush()
    compaction = CompactOptions()
    compaction.set_bottommost_level_compaction(BottommostLevelCompaction.force())
    for start, end in ranges:
        db.compact_range(start, end, compaction)
    _drop_stale_files(db)


def _drop_stale_files(db: Rdict) -> None:
    directory = Path(db.path())
    for _ in range(_FLUSHES):
        _wait_for_background_jobs(db)
        if not stale_files(db, directory):
            return
        db.delete(_NUDGE)
        db.flush()
    raise StaleFilesError(f"{len(stale_files(db, directory))} table files outlived a purge")


def stale_files(db: Rdict, directory: Path) -> list[str]:
    """Table files in the store's directory that no version of it lists any more."""
    live = {Path(f["name"]).name for f in db.live_files()}
    return sorted(p.name for p in directory.glob("*.sst") if p.name not in live)


def _wait_for_background_jobs(db: Rdict) -> None:
    """Until no flush or compaction runs (a running one's output is not live yet)."""
    for _ in range(_IDLE_MOST):
        running = db.property_int_value("rocksdb.num-running-compactions") or 0
        running += db.property_int_value("rocksdb.num-running-flushes") or 0
        if not running:
            return
        time.sleep(_IDLE_WAIT)


def searchable_options() -> Options:
    """Options of a store that keeps little and must be seen to forget: uncompressed, so
    that a search of its files for a customer's bytes is exact (a compressor may copy a
    value's bytes from an earlier match, or code them anew)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.none())
    options.set_bottommost_compression_type(DBCompressionType.none())
    return options
