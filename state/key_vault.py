"""Customers' keys, ids and journey instances for readers outside the flow: `wayfinder
rerun` opening what a decision was made from, and a channel resolving the pseudonym an
action names the customer by (`VaultReader.customer`) and the token it names a
transfer by (`VaultReader.instance`).

The flow's state holds each customer's key (the truth, snapshotted and recovered with
the rest of the context); the vault is a copy on disk that a tool can read while the
flow runs, kept by the flow's key sink. It is split into a fixed number of RocksDB
parts so that a customer's key always lands in the same one, whichever worker or
process holds the customer (a flow rescaled keeps finding and destroying it).

Its keys name nobody: entries are stored under the customer's pseudonym (their state
key), since RocksDB's own bookkeeping (its manifest records each file's first and last
key) outlives a deletion. An entry's value is the length of the secret (one byte), the
secret and the customer's id (an entry of an older release: the 64-byte secret alone);
an instance's value is under `pseudonym/token`. Destroying a customer's entries is a
delete (a range for the instances), then a flush and a forced compaction of the
bottommost level, so that no file still holds the secret, the id or an instance.
"""

from __future__ import annotations

import re
from pathlib import Path

from msgspec import Struct
from rocksdict import AccessType, Options, Rdict

from state.rocks_open import open_rocks
from state.rocks_purge import purge, searchable_options

#: Parts of a vault; fixed for a vault's life (a key's part is its hash modulo this).
PARTS = 8
#: An entry of an older release: the secret alone, this long.
_OLD_SECRET_BYTES = 64
#: The character after INSTANCE_SEPARATOR: the end of a customer's range of instances.
_AFTER_SEPARATOR = "0"
_PART = re.compile(r"part-(\d+)")


class CustomerKey(Struct, frozen=True, array_like=True):
    """A customer's key made: an output of the customer step for the key sink, never
    for a topic. `key` is the customer (or device) key."""

    key: str
    secret: bytes


class KeyDestroyed(Struct, frozen=True, array_like=True):
    """A customer's (or device's) entries to destroy, with their instances: an output of
    the customer step for the key sink. By pseudonym: a device's erasure names it so."""

    pseudonym: str


class InstanceName(Struct, frozen=True, array_like=True):
    """A journey instance (`instance`: a transfer's id) that the records name by token,
    for the vault to resolve under customer `key`: an output of the customer step for
    the key sink, never for a topic."""

    key: str
    instance: str


#: Between a customer's pseudonym and an instance's token in the vault's keys: every
#: instance entry of a customer sorts under `pseudonym/` (one range to delete).
INSTANCE_SEPARATOR = "/"


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
            open_rocks(path, _options(), AccessType.read_only()).close()
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
    """Uncompressed: secrets are random (nothing to gain) and a destroyed entry is then
    absent byte for byte, which a search of the files shows."""
    return searchable_options()


class VaultPart:
    """One RocksDB part of a vault, opened for writing (the flow's key sink)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_rocks(path, _options())

    def write(
        self,
        made: dict[str, CustomerKey],
        destroyed: set[str],
        names: dict[str, str] | None = None,
    ) -> None:
        """Destroy the entries of the customers named (pseudonyms: their key, id and
        instances), then keep the keys made (by pseudonym) and the instances' values (by
        `pseudonym/token`): what is kept was made after what is destroyed."""
        for hashed in destroyed:
            self._db.delete(hashed.encode())
            self._db.delete_range(
                (hashed + INSTANCE_SEPARATOR).encode(), (hashed + _AFTER_SEPARATOR).encode()
            )
        for hashed, made_key in made.items():
            assert made_key.secret is not None and len(made_key.secret) < 256
            secret = made_key.secret
            self._db[hashed.encode()] = bytes([len(secret)]) + secret + made_key.key.encode()
        for entry, value in (names or {}).items():
            self._db[entry.encode()] = value.encode()
        if destroyed:
            purge(self._db, [(None, None)])

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
        """The key of the customer with this pseudonym; None if it was destroyed (or
        never made)."""
        entry = self._entry(hashed)
        return None if entry is None else entry[0]

    def customer(self, pseudonym: str) -> str | None:
        """Who a pseudonym is (the customer, or a visitor's `anon:` key) while their key
        is kept; None once erased (or before the flow has named them)."""
        entry = self._entry(pseudonym)
        return None if entry is None else entry[1]

    def instance(self, pseudonym: str, token: str) -> str | None:
        """The value a record names by `token` (a transfer's id in an action's content,
        a transition's instance) for the customer with this pseudonym; None once erased."""
        db = self._part(part_of(pseudonym))
        if db is None:
            return None
        found = db.get((pseudonym + INSTANCE_SEPARATOR + token).encode())
        return None if found is None else bytes(found).decode()

    def refresh(self) -> None:
        """See what the flow has written since the parts were opened (a read-only part
        is the vault as it was then)."""
        self.close()

    def _part(self, index: int) -> Rdict | None:
        if index not in self._parts:
            path = self.directory / part_name(index)
            self._parts[index] = (
                open_rocks(path, _options(), AccessType.read_only())
                if (path / "CURRENT").exists()
                else None
            )
        return self._parts[index]

    def _entry(self, hashed: str) -> tuple[bytes, str | None] | None:
        db = self._part(part_of(hashed))
        if db is None:
            return None
        found = db.get(hashed.encode())
        if found is None:
            return None
        value = bytes(found)
        if len(value) == _OLD_SECRET_BYTES:
            return value, None
        end = 1 + value[0]
        return value[1:end], value[end:].decode()

    def close(self) -> None:
        for db in self._parts.values():
            if db is not None:
                db.close()
        self._parts.clear()
