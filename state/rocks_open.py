"""Opening a RocksDB store of ours with the options we chose, also when it exists.

rocksdict opens an existing store with the column families its OPTIONS file lists,
each with the options loaded from that file, unless it is told which to use: the
default family then loses what a file cannot hold (the block cache we size, the bloom
filters, the collector that compacts files dense with deletions), and every reopened
store (a resume, another process's reader) would run with RocksDB's 8 MB cache and no
filters. So the options are given for the default family too.
"""

from pathlib import Path

from rocksdict import AccessType, Options, Rdict


def open_rocks(path: Path, options: Options, access: AccessType | None = None) -> Rdict:
    """The store at `path` with `options` (its only column family, the default)."""
    families = {"default": options}
    if access is None:
        return Rdict(str(path), options, column_families=families)
    return Rdict(str(path), options, column_families=families, access_type=access)
