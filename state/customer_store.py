"""Where customers idle longer than a setting are kept out of memory: the cold tier.

The flow's state (bytewax, snapshotted at each epoch's end) holds the hot customers; a
customer who goes cold leaves it (their key is discarded) for this store, and comes back
on their next event or when a deadline of theirs is due. Two implementations keep one
contract (`tests/unit/test_customer_store.py` runs the same suite over both): in memory
(`MemoryCustomerStore`: a context as its snapshot bytes, about a fifth of its size as
objects; nothing survives the process) and on disk (`state.rocks_customer_store`).

**Versions, for recovery.** A resume goes back to the snapshot of an earlier epoch, so the
store must be able to go back with it: never show a write made at or after the epoch the
flow resumes from. Every change is a version tagged with the epoch it was made in:
- `put`: the customer left memory, with their context and their next deadline;
- `woke`: they came back (the flow's state holds them again: the store answers nothing);
- `gone`: their context ended (an erasure's tombstone expired, nothing left to keep).
Within one epoch a change replaces the epoch's earlier one (bytewax snapshots only where
an epoch ends). Older versions are kept while a resume could still need them and dropped
once a later version is durable (`durable`: every epoch before it is in the recovery
store); a `woke` or `gone` that is durable is dropped too, with everything before it.
`resume(epoch)` drops what was written at or after it.
"""

from __future__ import annotations

import heapq
import math
import threading
from typing import Literal, Protocol

import msgspec

#: What a version says of a customer: in the store (`put`), back in memory (`woke`), or
#: no longer anywhere (`gone`).
Change = Literal["put", "woke", "gone"]


class Version(msgspec.Struct, frozen=True, gc=False):
    """One change of one customer's entry. `purge`: it replaced a `gone` of its epoch
    (a customer erased, then kept again as their tombstone): once durable, what came
    before it is purged as a `gone`'s is.

    A struct, not a dataclass: every take and leave makes two or three, and a frozen
    dataclass takes ten times as long to make (0.44 against 0.045 µs)."""

    epoch: int
    change: Change
    state: bytes = b""
    due: float | None = None
    purge: bool = False


def replacing(old: Version, new: Version) -> Version:
    """`new`, replacing `old` of the same epoch: a `gone` it replaces still purges."""
    if (old.change == "gone" or old.purge) and not new.purge:
        return msgspec.structs.replace(new, purge=True)
    return new


def purges(dropped: list[Version]) -> bool:
    """Whether dropping these versions must leave no byte of them on disk."""
    return any(v.change == "gone" or v.purge for v in dropped)


class CustomerStore(Protocol):
    """The cold tier's contract (see the module's docstring)."""

    def put(self, key: str, state: bytes, *, epoch: int, due: float | None) -> None:
        """The customer left memory at `epoch` as `state`; `due`: their next deadline
        (event time), when the flow must wake them even without an event."""
        ...

    def take(self, key: str, *, epoch: int) -> bytes | None:
        """The customer's context if they are cold, which brings them back to memory at
        `epoch`; None if the store does not hold them."""
        ...

    def get(self, key: str) -> bytes | None:
        """The customer's context if they are cold, leaving them there."""
        ...

    def read_ahead(self, keys: list[str]) -> int:
        """These customers' events are coming: a store may look them up now, together,
        so their takes find them in memory (it answers as if it had not: any change
        of a customer drops what was read of them); returns how many it holds cold."""
        ...

    def gone(self, key: str, *, epoch: int) -> None:
        """The customer's context ended at `epoch` (erased, or nothing left of it): the
        store forgets them, and once that is durable, every byte of them."""
        ...

    def flush(self) -> int:
        """Write what is not written yet (a store may keep takes in memory to write them
        together: it answers as if written); returns how many takes it wrote. The flow
        calls it where an epoch ends, before bytewax snapshots the epoch."""
        ...

    def due(self, until: float, *, limit: int) -> list[tuple[float, str]]:
        """Cold customers with a deadline at or before `until`: (deadline, key), soonest
        first, at most `limit`."""
        ...

    def cold_keys(self, *, after: str | None, limit: int) -> list[str]:
        """Cold customers' keys in key order, from the first after `after` (None: from
        the start), at most `limit`."""
        ...

    def durable(self, epoch: int) -> None:
        """Every epoch before `epoch` is in the recovery store: what no resume can need
        any more goes."""
        ...

    def resume(self, epoch: int) -> int:
        """The flow resumes from `epoch`: drop every change made at or after it; returns
        how many customers had one."""
        ...

    def __len__(self) -> int:
        """Customers held cold."""
        ...

    def close(self) -> None: ...


class MemoryCustomerStore:
    """The cold tier in this process's memory: contexts as snapshot bytes. For runs
    without a recovery folder (nothing of it survives the process)."""

    def __init__(self) -> None:
        #: Each customer's versions, oldest first (the last is what the store says now).
        self._versions: dict[str, list[Version]] = {}
        #: (deadline, key, epoch) of cold customers' deadlines; stale ones are skipped.
        self._deadlines: list[tuple[float, str, int]] = []
        #: Which customers changed in each epoch not yet durable.
        self._journal: dict[int, set[str]] = {}
        self._cold = 0
        self._lock = threading.Lock()  # the workers of a process share the store

    def put(self, key: str, state: bytes, *, epoch: int, due: float | None) -> None:
        with self._lock:
            self._change(key, Version(epoch, "put", state, finite_deadline(due)))
            if due is not None:
                heapq.heappush(self._deadlines, (due, key, epoch))

    def take(self, key: str, *, epoch: int) -> bytes | None:
        with self._lock:
            state = self.get(key)
            if state is not None:
                self._change(key, Version(epoch, "woke"))
            return state

    def get(self, key: str) -> bytes | None:
        versions = self._versions.get(key)
        if not versions or versions[-1].change != "put":
            return None
        return versions[-1].state

    def read_ahead(self, keys: list[str]) -> int:
        return sum(self.get(key) is not None for key in set(keys))  # (in memory already)

    def gone(self, key: str, *, epoch: int) -> None:
        with self._lock:
            if key in self._versions:
                self._change(key, Version(epoch, "gone"))

    def flush(self) -> int:
        return 0  # (nothing waits: every change is made at once)

    def due(self, until: float, *, limit: int) -> list[tuple[float, str]]:
        found: dict[str, float] = {}
        with self._lock:
            heap = self._deadlines
            while heap and heap[0][0] <= until and len(found) < limit:
                deadline, key, epoch = heapq.heappop(heap)
                versions = self._versions.get(key)
                latest = versions[-1] if versions else None
                if (
                    latest is None
                    or latest.change != "put"
                    or latest.epoch != epoch
                    or latest.due != deadline
                ):
                    continue  # changed since (a resume that brings it back pushes it again)
                found[key] = deadline
            for key, deadline in found.items():  # still cold until woken
                heapq.heappush(heap, (deadline, key, self._versions[key][-1].epoch))
        return [(deadline, key) for key, deadline in found.items()]

    def cold_keys(self, *, after: str | None, limit: int) -> list[str]:
        with self._lock:
            cold = sorted(
                key
                for key, versions in self._versions.items()
                if versions[-1].change == "put" and (after is None or key > after)
            )
        return cold[:limit]

    def durable(self, epoch: int) -> None:
        with self._lock:
            for done in sorted(e for e in self._journal if e < epoch):
                for key in self._journal.pop(done):
                    versions = self._versions.get(key)
                    if versions:
                        kept = after_durable(versions, epoch)
                        if kept:
                            self._versions[key] = kept
                        else:
                            del self._versions[key]

    def resume(self, epoch: int) -> int:
        with self._lock:
            touched: set[str] = set()
            for later in [e for e in self._journal if e >= epoch]:
                touched |= self._journal.pop(later)
            for key in touched:
                versions = self._versions.get(key, [])
                was_cold = bool(versions) and versions[-1].change == "put"
                kept = [v for v in versions if v.epoch < epoch]
                if kept:
                    self._versions[key] = kept
                    latest = kept[-1]
                    if latest.change == "put" and latest.due is not None:
                        heapq.heappush(self._deadlines, (latest.due, key, latest.epoch))
                else:
                    self._versions.pop(key, None)
                self._cold += (bool(kept) and kept[-1].change == "put") - was_cold
            return len(touched)

    def __len__(self) -> int:
        return self._cold

    def close(self) -> None:
        with self._lock:
            self._versions.clear()
            self._deadlines.clear()
            self._journal.clear()
            self._cold = 0

    def _change(self, key: str, version: Version) -> None:
        versions = self._versions.setdefault(key, [])
        was_cold = bool(versions) and versions[-1].change == "put"
        if versions and versions[-1].epoch == version.epoch:
            versions[-1] = replacing(versions[-1], version)  # an epoch's later change wins
        else:
            versions.append(version)
        self._journal.setdefault(version.epoch, set()).add(key)
        self._cold += (version.change == "put") - was_cold


def finite_deadline(due: float | None) -> float | None:
    if due is not None and not math.isfinite(due):
        raise ValueError(f"a deadline must be a finite time, not {due!r}")
    return due


def after_durable(versions: list[Version], durable: int) -> list[Version]:
    """What a resume can still need of one customer's versions once every epoch before
    `durable` is safe: the newest durable version (unless it says the customer is not
    here: then nothing of it) and every later one."""
    newest = max((i for i, v in enumerate(versions) if v.epoch < durable), default=None)
    if newest is None:
        return versions
    if versions[newest].change == "put":
        return versions[newest:]
    return versions[newest + 1 :]
