"""Customers' keys for readers outside the flow: `wayfinder rerun` opening what a
decision was made from.

The flow's state holds each customer's key (the truth, snapshotted and recovered with
the rest of the context); the vault is a copy on disk that a tool can read while the
flow runs, kept by the flow's key sink. It is split into a fixed number of RocksDB
parts so that a customer's key always lands in the same one, whichever worker or
process holds the customer (a flow rescaled keeps finding and destroying it).

Nothing in it names anybody: keys are stored under the customer's keyed hash (the
state key), since RocksDB's own bookkeeping (its manifest records each file's first
and last key) outlives a deletion. Destroying a key is a delete, then a flush and a
forced compaction of the bottommost level, so that no file still holds the secret.
"""

from __future__ import annotations

import re
from pathlib import Path

from msgspec import Struct
from rocksdict import (
    AccessType,
    BottommostLevelCompaction,
    CompactOptions,
    Options,
    Rdict,
)

#: Parts of a vault; fixed for a vault's life (a key's part is its hash modulo this).
PARTS = 8
_PART = re.compile(r"part-(\d+)")


class CustomerKey(Struct, frozen=True, array_like=True):
    """A customer's key made (`secret`) or destroyed (None): an output of the customer
    step for the key sink, never for a topic. `key` is the customer (or device) key."""

    key: str
    secret: bytes | None


class KeyVaultError(Exception):
    """A vault the flow cannot write to (said before the flow starts)."""


def check(directory: Path) -> None:
    """Refuse, in one sentence, a vault whose parts are not RocksDB stores that open
    (damaged, or a file where a part's folder should be): the keys it holds are the
    only copy outside the flow, so nothing starts over them."""
    if directory.exists() and not directory.is_dir():
        raise KeyVaultError(f"key vault {directory} is a file, not a folder")
    for index in range(PARTS):
        path = directory / part_name(index)
        if path.is_dir() and not (path / "CURRENT").exists():
            continue  # never made whole (a process killed as it made it): made anew
        if not path.exists():
            continue
        try:
            Rdict(str(path), _options(), access_type=AccessType.read_only()).close()
        except Exception as exc:  # rocksdict raises plain Exceptions
            raise KeyVaultError(
                f"key vault part {path} does not open ({str(exc).strip()[:200]}): restore "
                "it from a backup, or move it aside (its keys are then lost to rerun)"
            ) from None


def part_of(hashed: str) -> int:
    """The vault part that holds the key of the customer with this keyed hash."""
    return int(hashed[:8], 16) % PARTS


def part_name(index: int) -> str:
    return f"part-{index}"


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


class VaultPart:
    """One RocksDB part of a vault, opened for writing (the flow's key sink)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), _options())

    def write(self, made: dict[str, bytes], destroyed: set[str]) -> None:
        """Keep the keys made and destroy those named (hashed keys)."""
        for hashed, secret in made.items():
            self._db[hashed.encode()] = secret
        if not destroyed:
            return
        for hashed in destroyed:
            self._db.delete(hashed.encode())
        self._db.flush()
        compaction = CompactOptions()
        compaction.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        self._db.compact_range(None, None, compaction)

    def close(self) -> None:
        self._db.close()


class VaultReader:
    """A vault read by a tool while (or after) the flow writes it: each part opened
    read-only when first asked, as it is on disk then."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._parts: dict[int, Rdict | None] = {}

    def exists(self) -> bool:
        return self.directory.is_dir() and any(
            _PART.fullmatch(p.name) for p in self.directory.iterdir()
        )

    def secret(self, hashed: str) -> bytes | None:
        """The key of the customer with this keyed hash; None if it was destroyed (or
        never made)."""
        index = part_of(hashed)
        if index not in self._parts:
            path = self.directory / part_name(index)
            self._parts[index] = (
                Rdict(str(path), _options(), access_type=AccessType.read_only())
                if (path / "CURRENT").exists()
                else None
            )
        db = self._parts[index]
        if db is None:
            return None
        found = db.get(hashed.encode())
        return bytes(found) if found is not None else None

    def close(self) -> None:
        for db in self._parts.values():
            if db is not None:
                db.close()
        self._parts.clear()
