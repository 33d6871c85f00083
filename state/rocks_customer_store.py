"""The cold tier on disk: RocksDB (rocksdict), one store per process's recovery part.

The contract and its versions are `state.customer_store`'s. The store's keys name
customers by their state key (a pseudonym, never an id); a context's bytes are the
value. One RocksDB holds six kinds of entry, told apart by their first byte:
- `c` key: the customer's current version: its head (epoch, change and deadline: 17
  bytes), then the context if it is a `put` (so taking a customer back is one point
  lookup; every new customer's first event makes one too, and most are not there,
  which the bloom filters answer in memory);
- `o` key NUL epoch: older versions a resume may still need, in the same way (few, and
  short-lived: a take keeps the context it took here until the take is durable);
- `d` deadline key: the deadlines of cold customers, in time order (`due` is a scan from
  the soonest deadline the store knows of, past the deleted entries before it);
- `j` epoch key: which customers changed in an epoch (`durable` and `resume` read only
  the epochs they concern, never the whole store);
- `n`: how many customers are cold;
- `f`: the layout's version (a store of the layout before, with contexts in entries of
  their own, is converted when opened).
Each change is one atomic write batch, but for a take's: a customer back in memory is
written with the next change or `flush` (the flow flushes where an epoch ends, before
bytewax snapshots it), in one batch with every other take since, and answered from memory
until then; so taking a customer back costs their lookup alone (its entries are made
where they are written), not a write of its own; and the lookup is made ahead: the flow
tells the store each batch's customers before their step, and one batched lookup reads
them all (`read_ahead`). A customer's gone versions are deleted, then the memtable is
flushed and the files that held them are compacted down to the last level, so no file
of the store keeps their bytes (as the key vault does, `state.key_vault`).
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rocksdict import (
    AccessType,
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
)

from state.customer_store import (
    Change,
    Version,
    after_durable,
    finite_deadline,
    purges,
    replacing,
)
from state.rocks_open import open_rocks
from state.rocks_purge import purge

#: Block cache of a store (WAYFINDER_COLD_CACHE): the hot part of the index, the bloom
#: filters and recently read contexts.
DEFAULT_CACHE_BYTES = 64 << 20

_CURRENT = b"c"
_OLDER = b"o"
_STATE = b"v"  # (the layout before: contexts in entries of their own)
_LAYOUT = b"f"
_LAYOUT_NOW = b"2"
_DEADLINE = b"d"
_JOURNAL = b"j"
_COUNT = b"n"
_SEPARATOR = b"\x00"
_CHANGES: tuple[Change, ...] = ("put", "woke", "gone")
_HEAD = struct.Struct(">QBd")  # epoch, change, deadline (NaN: none)
_PUT = _CHANGES.index("put")
_PURGE = 0x80  # (a flag in the change byte: `Version.purge`)
_EPOCH = struct.Struct(">Q")
_NONE = DBCompressionType.none()
#: Versions read ahead and kept at most (more: the oldest reads are dropped together).
_AHEAD_MOST = 8192
_UNREAD = Version(0, "gone")  # (a customer not read ahead: a marker, never stored)


def store_options(cache_bytes: int = DEFAULT_CACHE_BYTES, *, compression: bool = True) -> Options:
    """RocksDB's options for a cold tier, chosen for its work: point lookups of one
    context (3-4 KB of msgpack) by a random key, most of them misses, and few scans.

    - Bloom filters of 10 bits a key (about 1% false positives): a lookup of a customer
      the store does not hold reads no block from disk.
    - Index and filter blocks partitioned, in the block cache, with only their top
      level pinned, so memory is the cache's size whatever the number of customers (10
      million customers' filters alone are about 30 MB), and a lookup loads a 16 KB
      partition of a filter, never a whole file's. Whole filters in the cache cost a
      miss 184 µs at a million customers (data blocks evict them, and each lookup read
      them back, one a level); partitioned, 8 µs (`scripts/cold_store_bench`).
    - 4 KB blocks (eight contexts or so: their bytes are arrays, `state.context`): a
      lookup reads, checks and decompresses a whole block. At a million customers
      (`scripts/cold_tier_load`) taking a customer back took 16.4 µs against 21.0 with
      16 KB blocks, for as much disk (535 MiB against 533). The 16 KB blocks chosen
      before held contexts of twice the bytes (maps of their fields' names): at 10
      million customers, 4 KB blocks then read 40 µs against 48, for 4.6 GB on disk
      against 3.6 and 177 s against 106 to compact the store anew.
    - LZ4 on every level: a lookup decompresses a whole block, and compaction shares
      the flow's cores. At 10 million customers (the store of `scripts/cold_tier_load`,
      compacted anew each way), taking a customer back read their head and context in
      48 µs against 77 µs with Zstandard on the last level, compaction took 106 s against
      180 s, for 3.6 GB on disk against 2.8 GB.
    - A bloom filter on the memtables too (whole keys, a tenth of the write buffer): every
      lookup looks in the memtables first, and most find nothing there. At 200,000
      customers (`scripts/cold_tier_load`, two runs against one between them) taking a
      customer back took 21.6 and 19.9 µs against 23.4, and a new customer's event 55.6
      and 55.1 µs against 59.0.
    - Two background jobs: the machine's cores are the flow's first.
    - Files dense with deletion markers compacted early (the journal and the deadline
      index are deleted as fast as they are written).
    `compression`: off for a test that searches the files for a customer's bytes (a
    compressor may copy or code them anew: a search would miss them).
    """
    table = BlockBasedOptions()
    table.set_block_cache(Cache(cache_bytes))
    table.set_bloom_filter(10, False)
    table.set_index_type(BlockBasedIndexType.two_level_index_search())
    table.set_partition_filters(True)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_top_level_index_and_filter(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_block_size(4 << 10)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    codec = DBCompressionType.lz4() if compression else _NONE
    options.set_compression_type(codec)
    options.set_bottommost_compression_type(codec)
    options.set_max_background_jobs(2)
    # The journal's and the deadlines' entries are deleted as fast as they are written:
    # a file dense with deletion markers is compacted soon, so scans do not wade through.
    options.add_compact_on_deletion_collector_factory(128 << 10, 32 << 10, 0.5)
    options.set_write_buffer_size(32 << 20)
    options.set_memtable_whole_key_filtering(True)
    options.set_memtable_prefix_bloom_ratio(0.1)
    options.set_keep_log_file_num(3)
    return options


@dataclass(frozen=True)
class StoreStats:
    """RocksDB's own figures of a store, for the metrics (as Kafka Streams exports for
    its stores)."""

    estimated_keys: int
    sst_bytes: int
    memtable_bytes: int
    block_cache_bytes: int
    pending_compaction_bytes: int


class RocksCustomerStore:
    """The cold tier in a RocksDB store at `path` (made if missing)."""

    def __init__(
        self,
        path: Path,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        compression: bool = True,
        read_only: bool = False,
    ) -> None:
        """`read_only`: to count (`cold_at`), without RocksDB's lock (processes of a
        cluster count one store at once) and without a write."""
        self.path = path
        options = store_options(cache_bytes, compression=compression)
        if read_only:
            self._db = open_rocks(path, options, AccessType.read_only())
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._db = open_rocks(path, options)
            if self._db.get(_LAYOUT) != _LAYOUT_NOW:
                _convert(self._db)
        found = self._db.get(_COUNT)
        self._cold = 0 if found is None else _EPOCH.unpack(found)[0]
        self._lock = threading.Lock()  # the workers of a process share the store
        #: The journal is cleaned up to here; and the lowest epoch written to it since.
        self._journal_from = 0
        self._lowest_written = 1 << 62
        #: Changes not written yet (only takes stay so: `flush`); the head each take
        #: leaves its customer with; and the version each took, for the takes whose
        #: entries are not in the batch yet (`_write` makes them: a take only looks up).
        self._pending = WriteBatch(raw_mode=True)
        self._taken: dict[bytes, Version] = {}
        self._untold: dict[bytes, Version] = {}
        #: No deadline in the index is sooner than this (-inf: not known). A look for due
        #: deadlines before it answers from memory: the index's deleted entries are many
        #: (every take and every change deletes one) and a scan wades through them.
        self._soonest = -math.inf
        #: Current versions read ahead of their takes (`read_ahead`; None: not held), each
        #: dropped as its customer's entry is next looked up for a change or rewritten
        #: (`durable`), all of them by a resume: what is here is what the store holds.
        self._ahead: dict[bytes, Version | None] = {}
        #: Takes of a cold customer answered from what was read ahead (since opened).
        self.taken_ahead = 0

    def put(self, key: str, state: bytes, *, epoch: int, due: float | None) -> None:
        version = Version(epoch, "put", state, finite_deadline(due))
        name = _key(key)
        with self._lock:
            self._change(name, version, self._current(name))
            self._write()

    def take(self, key: str, *, epoch: int) -> bytes | None:
        name = _key(key)
        with self._lock:
            ahead = name in self._ahead
            current = self._current(name)
            if current is None or current.change != "put":
                return None
            self._took(name, current, epoch)
            self.taken_ahead += ahead
        return current.state

    def flush(self) -> int:
        if not self._taken:  # (every key's snapshot asks: most find nothing waiting; a
            return 0  # take racing this one is its own logic's, which asks too)
        with self._lock:
            return self._write()

    def get(self, key: str) -> bytes | None:
        name = _key(key)
        current = self._current(name, keep=True)
        if current is None or current.change != "put":
            return None
        return current.state

    def gone(self, key: str, *, epoch: int) -> None:
        name = _key(key)
        with self._lock:
            current = self._current(name)
            if current is not None:
                self._change(name, Version(epoch, "gone"), current)
                self._write()

    def read_ahead(self, keys: list[str]) -> int:
        """Look these customers up together (RocksDB's MultiGet), ahead of their takes;
        returns how many are held cold. A cold customer's lookup waits on memory (index,
        filter and data blocks evicted by the flow's own work since the last), and one
        batched lookup waits once for many: 20 µs a customer one by one at a million
        customers, 12 in batches of 8, 8 in batches of 64 (the README's cold tier)."""
        names = list(dict.fromkeys(map(_key, keys)))
        with self._lock:  # (no change of theirs between the lookup and what is kept)
            ahead, taken = self._ahead, self._taken
            unread = [n for n in names if n not in taken and n not in ahead]
            if unread:
                if len(ahead) + len(unread) > _AHEAD_MOST:
                    ahead.clear()  # (read for nobody: keys of another process's customers)
                found = cast("list[bytes | None]", self._db.get([_CURRENT + n for n in unread]))
                for name, raw in zip(unread, found, strict=True):
                    ahead[name] = None if raw is None else _decode(raw)
            return sum(
                (v := ahead.get(n)) is not None and v.change == "put" and n not in taken
                for n in names
            )

    def due(self, until: float, *, limit: int) -> list[tuple[float, str]]:
        if until < self._soonest:
            return []
        found: list[tuple[float, str]] = []
        with self._lock:
            self._write()  # (a customer taken back is no longer due)
            end = _DEADLINE + _order(until) + b"\xff"
            it = self._db.iter(ReadOptions())
            # (from the soonest deadline known: the deleted entries before it are skipped)
            it.seek(_DEADLINE + (_order(self._soonest) if self._soonest > -math.inf else b""))
            while it.valid() and len(found) < limit:
                entry: bytes = it.key()
                if entry >= end:
                    break
                found.append((_unorder(entry[1:9]), entry[9:].decode()))
                it.next()
            if found:
                self._soonest = found[0][0]
            elif it.valid() and it.key().startswith(_DEADLINE):
                self._soonest = _unorder(it.key()[1:9])
            else:
                self._soonest = math.inf
        return found

    def cold_keys(self, *, after: str | None, limit: int) -> list[str]:
        self.flush()
        keys: list[str] = []
        it = self._db.iter(ReadOptions())
        it.seek(_CURRENT if after is None else _CURRENT + _key(after) + _SEPARATOR)
        while it.valid() and len(keys) < limit:
            entry: bytes = it.key()
            if not entry.startswith(_CURRENT):
                break
            if _HEAD.unpack_from(it.value())[1] & ~_PURGE == _PUT:
                keys.append(entry[1:].decode())
            it.next()
        return keys

    def durable(self, epoch: int) -> None:
        erased: list[bytes] = []
        with self._lock:
            self._write()  # (the takes, first)
            # From where the last call got to (or an earlier epoch written since): the
            # journal's entries before it are deleted, and a scan over their markers
            # would cost more each time until a compaction drops them.
            start = min(self._journal_from, self._lowest_written)
            if start >= epoch:
                return
            keys = self._journal(_JOURNAL + _EPOCH.pack(start), _JOURNAL + _EPOCH.pack(epoch))
            self._journal_from, self._lowest_written = epoch, epoch
            batch = WriteBatch(raw_mode=True)
            for name, entries in keys.items():
                versions = self._versions(name)
                kept = after_durable([v for _, v in versions], epoch)
                dropped = [v for _, v in versions[: len(versions) - len(kept)]]
                if dropped and purges([*dropped, *kept[:1]]):
                    erased.append(name)
                if dropped:
                    self._rewrite(batch, name, versions, kept)
                    self._ahead.pop(name, None)  # (what was read of them may be gone)
                for entry in entries:
                    batch.delete(entry)
            self._db.write(batch)
            if erased:
                self._compact(erased)

    def resume(self, epoch: int) -> int:
        with self._lock:
            self._write()
            self._ahead.clear()  # (versions undone)
            batch = WriteBatch(raw_mode=True)
            cold = self._cold
            changed = 0
            for name, entries, versions, kept in self._since(epoch):
                changed += 1
                cold += _colder(versions, kept)
                if len(kept) < len(versions):
                    self._rewrite(batch, name, versions, kept)
                for entry in entries:
                    batch.delete(entry)
            self._count(batch, cold)
            self._db.write(batch)
            return changed

    def cold_at(self, epoch: int) -> int:
        """How many customers `resume(epoch)` would leave cold, without taking anyone
        back (a store opened `read_only` can answer)."""
        with self._lock:
            self._write()  # (the takes, first: as `resume` does)
            return self._cold + sum(_colder(v, kept) for _n, _e, v, kept in self._since(epoch))

    def stats(self) -> StoreStats:
        def number(name: str) -> int:
            value = self._db.property_int_value(f"rocksdb.{name}")
            return int(value) if value is not None else 0

        return StoreStats(
            estimated_keys=number("estimate-num-keys"),
            sst_bytes=number("total-sst-files-size"),
            memtable_bytes=number("cur-size-all-mem-tables"),
            block_cache_bytes=number("block-cache-usage"),
            pending_compaction_bytes=number("estimate-pending-compaction-bytes"),
        )

    def __len__(self) -> int:
        return self._cold

    def close(self) -> None:
        self.flush()
        self._db.close()

    def _current(self, name: bytes, *, keep: bool = False) -> Version | None:
        """A customer's current version; what was read ahead of it is used once (a change
        follows), unless `keep`."""
        taken = self._taken.get(name)
        if taken is not None:
            return taken
        ahead = self._ahead.get(name, _UNREAD) if keep else self._ahead.pop(name, _UNREAD)
        if ahead is not _UNREAD:
            return ahead
        found = self._db.get(_CURRENT + name)
        return None if found is None else _decode(found)

    def _took(self, name: bytes, current: Version, epoch: int) -> None:
        """A take of `current` (a put) at `epoch`, recorded to be written (`_write`)."""
        woke = Version(epoch, "woke")
        self._taken[name] = replacing(current, woke) if current.epoch == epoch else woke
        self._untold[name] = current
        self._cold -= 1

    def _write(self) -> int:
        """Write the changes not written yet in one atomic batch; returns how many of
        them were takes."""
        for name, took in self._untold.items():
            self._record(name, self._taken[name], took)
        self._untold.clear()
        if self._pending.is_empty():
            return 0
        taken = len(self._taken)
        self._count(self._pending, self._cold)
        self._db.write(self._pending)
        self._pending = WriteBatch(raw_mode=True)
        self._taken.clear()
        return taken

    def _versions(self, name: bytes) -> list[tuple[bytes, Version]]:
        """Every version of a customer with the entry each is stored under, oldest
        first."""
        versions: list[tuple[bytes, Version]] = []
        prefix = _OLDER + name + _SEPARATOR
        it = self._db.iter(ReadOptions())
        it.seek(prefix)
        while it.valid():
            entry: bytes = it.key()
            if not entry.startswith(prefix):
                break
            versions.append((entry, _decode(it.value())))
            it.next()
        current = self._db.get(_CURRENT + name)
        if current is not None:
            versions.append((_CURRENT + name, _decode(current)))
        return versions

    def _change(self, name: bytes, version: Version, current: Version | None) -> Version:
        """A new current version, the current one kept as an older version unless it is
        of the same epoch, which the new one replaces: added to the changes not written
        yet (`_write`); returns the version now current."""
        took = self._untold.pop(name, None)
        if took is not None:  # (a take's entries go first: the new version follows it)
            self._record(name, self._taken[name], took)
        version = self._record(name, version, current)
        self._cold += (version.change == "put") - (current is not None and current.change == "put")
        return version

    def _record(self, name: bytes, version: Version, current: Version | None) -> Version:
        """`_change`'s entries in the batch, without the count (`_write` adds it)."""
        batch = self._pending
        if current is not None:
            _unindex(batch, name, current)
            if current.epoch == version.epoch:
                version = replacing(current, version)  # an epoch's later change wins
            else:
                batch.put(_OLDER + name + _SEPARATOR + _EPOCH.pack(current.epoch), _encode(current))
        batch.put(_CURRENT + name, _encode(version))
        self._soonest = min(self._soonest, _index(batch, name, version))
        batch.put(_JOURNAL + _EPOCH.pack(version.epoch) + name, b"")
        self._lowest_written = min(self._lowest_written, version.epoch)
        return version

    def _rewrite(
        self,
        batch: WriteBatch,
        name: bytes,
        versions: list[tuple[bytes, Version]],
        kept: list[Version],
    ) -> None:
        """Store a customer's versions as `kept` (oldest first; the last is current): they
        are written anew, the others deleted."""
        for entry, version in versions:
            batch.delete(entry)
            if entry[:1] == _CURRENT:
                _unindex(batch, name, version)
        for version in kept[:-1]:
            batch.put(_OLDER + name + _SEPARATOR + _EPOCH.pack(version.epoch), _encode(version))
        if kept:
            batch.put(_CURRENT + name, _encode(kept[-1]))
            self._soonest = min(self._soonest, _index(batch, name, kept[-1]))

    def _since(
        self, epoch: int
    ) -> Iterator[tuple[bytes, list[bytes], list[tuple[bytes, Version]], list[Version]]]:
        """Each customer changed at or after `epoch`: their journal's entries since, their
        versions (with their entries) and those a resume from `epoch` keeps."""
        for name, entries in self._journal(
            _JOURNAL + _EPOCH.pack(epoch), _JOURNAL + b"\xff"
        ).items():
            versions = self._versions(name)
            yield name, entries, versions, [v for _, v in versions if v.epoch < epoch]

    def _journal(self, start: bytes, end: bytes) -> dict[bytes, list[bytes]]:
        """The customers the journal names between two of its entries, with the entries."""
        keys: dict[bytes, list[bytes]] = {}
        it = self._db.iter(ReadOptions())
        it.seek(start)
        while it.valid():
            entry: bytes = it.key()
            if entry >= end or not entry.startswith(_JOURNAL):
                break
            keys.setdefault(entry[1 + _EPOCH.size :], []).append(entry)
            it.next()
        return keys

    def _count(self, batch: WriteBatch, cold: int) -> None:
        self._cold = cold
        batch.put(_COUNT, _EPOCH.pack(cold))

    def _compact(self, names: list[bytes]) -> None:
        """Leave no file holding these customers' bytes (`state.rocks_purge`)."""
        prefixes = [p for n in names for p in (_CURRENT + n, _OLDER + n + _SEPARATOR)]
        purge(self._db, [(p, p + b"\xff") for p in prefixes])


def _colder(versions: list[tuple[bytes, Version]], kept: list[Version]) -> int:
    """How many more customers are cold with only `kept` of a customer's versions (-1, 0
    or 1)."""
    was_cold = bool(versions) and versions[-1][1].change == "put"
    return (bool(kept) and kept[-1].change == "put") - was_cold


def _key(key: str) -> bytes:
    name = key.encode()
    if _SEPARATOR in name:
        raise ValueError("a customer's state key never holds a NUL")
    return name


def _encode(version: Version) -> bytes:
    """A version's entry: its head, then its context (a put's)."""
    due = math.nan if version.due is None else version.due
    change = _CHANGES.index(version.change) | (_PURGE if version.purge else 0)
    return _HEAD.pack(version.epoch, change, due) + version.state


def _decode(raw: bytes) -> Version:
    epoch, change, due = _HEAD.unpack_from(raw)
    return Version(
        epoch,
        _CHANGES[change & ~_PURGE],
        raw[_HEAD.size :],
        None if math.isnan(due) else due,
        bool(change & _PURGE),
    )


def _convert(db: Rdict) -> None:
    """Bring a store of the layout before (each context in a `v` entry of its own, key
    NUL epoch) to this one, a page of contexts at a time; a conversion cut short is
    finished at the next open. A new store is only marked."""
    while True:
        batch = WriteBatch(raw_mode=True)
        it = db.iter(ReadOptions())
        it.seek(_STATE)
        for _ in range(10_000):
            if not it.valid():
                break
            entry: bytes = it.key()
            if not entry.startswith(_STATE):
                break
            name, epoch = entry[1 : -1 - _EPOCH.size], entry[-_EPOCH.size :]
            for head in (_CURRENT + name, _OLDER + name + _SEPARATOR + epoch):
                found = db.get(head)
                if found is not None and found[: _EPOCH.size] == epoch:  # (a head's epoch)
                    batch.put(head, bytes(found[: _HEAD.size]) + bytes(it.value()))
                    break
            batch.delete(entry)
            it.next()
        del it
        if batch.is_empty():
            break
        db.write(batch)
    db.put(_LAYOUT, _LAYOUT_NOW)


def _index(batch: WriteBatch, name: bytes, version: Version) -> float:
    """Index a put's deadline; returns it (+inf: none)."""
    if version.change == "put" and version.due is not None:
        batch.put(_DEADLINE + _order(version.due) + name, b"")
        return version.due
    return math.inf


def _unindex(batch: WriteBatch, name: bytes, version: Version) -> None:
    if version.change == "put" and version.due is not None:
        batch.delete(_DEADLINE + _order(version.due) + name)


def _order(time: float) -> bytes:
    """A time as 8 bytes that sort as the times do (negative ones too)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", time))
    return struct.pack(">Q", bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63)


def _unorder(raw: bytes) -> float:
    (bits,) = struct.unpack(">Q", raw)
    bits = bits ^ 1 << 63 if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    (time,) = struct.unpack(">d", struct.pack(">Q", bits))
    return float(time)
