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

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from rocksdict import BottommostLevelCompaction, CompactOptions, DBCompressionType, Options, Rdict

#: Deleted to give a flush something to write (a key none of the stores uses: theirs
#: never start with a NUL and this is not the context view's `\x00erased`).
_NUDGE = b"\x00purge"
#: How long a purge flushes for files a read still holds (seconds). A get's hold ends
#: at once and its files go at the next flush; an iterator's hold ends as it closes, and
#: RocksDB deletes the files then: a purge does not wait for it longer than this.
_PATIENCE = 5.0
_PAUSE_MOST = 0.2

logger = logging.getLogger(__name__)


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
    until = time.monotonic() + _PATIENCE
    pause = 0.0
    while True:
        if _background_jobs(db) and time.monotonic() < until:
            time.sleep(0.005)  # (a running job's output is not live yet)
            continue
        stale = stale_files(db, directory)
        if not stale:
            return
        if time.monotonic() > until:
            logger.warning(
                "%d table files outlived a purge: an open read holds them, and RocksDB "
                "deletes them as it closes",
                len(stale),
            )
            return
        db.delete(_NUDGE)
        db.flush()
        time.sleep(pause)
        pause = min(_PAUSE_MOST, pause * 2 or 0.005)


def stale_files(db: Rdict, directory: Path) -> list[str]:
    """Table files in the store's directory that no version of it lists any more."""
    live = {Path(f["name"]).name for f in db.live_files()}
    return sorted(p.name for p in directory.glob("*.sst") if p.name not in live)


def _background_jobs(db: Rdict) -> int:
    """Flushes and compactions running."""
    running = db.property_int_value("rocksdb.num-running-compactions") or 0
    return running + (db.property_int_value("rocksdb.num-running-flushes") or 0)


def searchable_options() -> Options:
    """Options of a store that keeps little and must be seen to forget: uncompressed, so
    that a search of its files for a customer's bytes is exact (a compressor may copy a
    value's bytes from an earlier match, or code them anew)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.none())
    options.set_bottommost_compression_type(DBCompressionType.none())
    return options
