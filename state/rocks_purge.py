"""How a RocksDB store of ours forgets a customer: no file of it keeps their bytes.

A delete in RocksDB writes a marker; the value stays in the memtable, the write-ahead
log and the table files until a compaction drops it. To forget, the stores delete, then
flush the memtable (its log goes with it) and force a compaction of the ranges that held
the customer down to the last level, which rewrites every file holding them.
"""

from collections.abc import Iterable

from rocksdict import BottommostLevelCompaction, CompactOptions, DBCompressionType, Options, Rdict


def purge(db: Rdict, ranges: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    """After their deletes: leave no file holding these key ranges' old values (None:
    from the first key, to the last)."""
    db.flush()
    compaction = CompactOptions()
    compaction.set_bottommost_level_compaction(BottommostLevelCompaction.force())
    for start, end in ranges:
        db.compact_range(start, end, compaction)


def searchable_options() -> Options:
    """Options of a store that keeps little and must be seen to forget: uncompressed, so
    that a search of its files for a customer's bytes is exact (a compressor may copy a
    value's bytes from an earlier match, or code them anew)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.none())
    options.set_bottommost_compression_type(DBCompressionType.none())
    return options
