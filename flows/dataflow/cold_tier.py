"""The cold tier as the flow uses it: who leaves memory, who comes back, and when.

A customer idle longer than `after` (event time: the watermark past their last event)
leaves bytewax's state for the store (`state.customer_store`): their logic writes their
context there and is discarded. They come back when a record of theirs arrives (their
new logic takes the context from the store), when a deadline of theirs falls due, and
at a bounded input's end (every cold customer is brought back, so the end's work is
done as for everyone else).

What the tier asks of a customer's logic comes as a `Wake`, handed over by the input
itself between its batches (`flows.dataflow.epochs`): "leave if idle" when the
watermark passes the idle time it watches for each customer in memory, "leave if you
are the least recently seen" when more customers are in memory than `most` (the hot
set's size: the customers seen longest ago leave first, idle or not), "fire what is
due" for a cold customer's deadline, "come back" at the end. So a customer leaves once
the watermark has passed their idle time however fast the run goes (no wall-clock timer
decides; with more than one worker, the reader that hands the wakes over may run a few
batches behind the others, and nothing any output says depends on it), and every write
the store gets is a record's, under the bytewax epoch its stamp names
exactly (see the store's versions). (An erasure's tombstone that expires on a timer is
said `gone` under the epoch of the latest record its logic saw: never a later one, and
a resume from between the two finds the tombstone in the flow's snapshots.)
"""

import heapq
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from flows.dataflow.clock import EventClock
from flows.dataflow.run_stores import (
    Place,
    before_opening,
    drop_other_shapes,
    opened,
    own_folder,
    shape_of,
    shapes_beside,
)
from flows.runtime import metrics
from flows.runtime.recovery_store import kept_at, kept_before, resume_epoch
from flows.runtime.settings import ColdSettings, SettingsError
from state.context import CustomerContext
from state.customer_store import CustomerStore, MemoryCustomerStore
from state.rocks_customer_store import RocksCustomerStore

#: Wakes handed over at a time, at most (a sweep of millions goes in many batches).
WAKES_PER_BATCH = 500
#: How often (wall seconds) the tier looks for due deadlines and cleans up.
_EVERY = 1.0


#: What the record beside the recovery folder that says where the tier is ends with.
_RECORD = "cold-dir"

_LEFT = metrics.COLD_MOVES.labels("left")
_RETURNED = metrics.COLD_MOVES.labels("returned")


#: What a wake asks: leave memory if idle, or if the hot set is full and nothing was seen
#: of the customer since the tier last watched them (neither brings anyone back); come
#: back and fire what is due; come back for the input's end.
WakeKind = Literal["idle", "full", "due", "end"]
#: What only asks a customer to leave.
LEAVING: frozenset[WakeKind] = frozenset({"idle", "full"})


class Wake:
    """What the tier asks of the customer with state key `key`; `idle`: (a "full"
    wake) the idle time the tier watched them for; `at`: the watermark the tier asked
    at, which the customer's logic goes by if the one its record is stamped with is
    behind it. (A service's watermark follows the wall clock only while nothing is in
    flight, and the wake itself is: the tier and the logic would otherwise disagree on
    what is idle or due, and a customer go back and forth with nothing done.)"""

    __slots__ = ("at", "idle", "key", "kind")

    def __init__(
        self, key: str, kind: WakeKind, idle: float = 0.0, at: float = float("-inf")
    ) -> None:
        self.key = key
        self.kind = kind
        self.idle = idle
        self.at = at


class ColdTier:
    """One process's cold tier: its store, the idle time, and what is waking.

    `first_epoch`: the run's first bytewax epoch (the store was resumed to it); `timers`: wake
    cold customers when their deadlines fall due (a service: an embedded run fires
    deadlines on events and at the end, cold or not); `look_every`: how often (wall
    seconds) it looks for them (0: at every batch, for event time far faster than the
    wall clock, as in a load test); `most`: the customers this process keeps in memory
    at most (None: as many as are not idle), beyond which those seen longest ago leave.
    """

    def __init__(
        self,
        store: CustomerStore,
        after: float,
        *,
        clock: EventClock,
        first_epoch: int,
        timers: bool = False,
        look_every: float = _EVERY,
        most: int | None = None,
    ) -> None:
        self.store = store
        self.after = after
        self.most = most
        self.first_epoch = first_epoch
        self._clock = clock
        self._timers = timers
        self._look_every = look_every
        self._lock = threading.Lock()
        self._waking: set[str] = set()  # wakes handed over, not yet taken
        #: Customers whose logic is in memory, as their logics tell (`held`, `let_go`):
        #: those of a batch not here are read ahead (`coming`).
        self._held: set[str] = set()
        #: (when the customer may leave, key) of customers in memory, soonest first: one
        #: entry each, which a later event of theirs makes stale (their logic watches
        #: anew when asked), so the least recently seen is the first entry not stale.
        self._idle: list[tuple[float, str]] = []
        self._ending = False
        self._swept: str | None = None  # (the input's end) the last key woken so far
        self._next_look = self._next_clean = 0.0
        metrics.COLD_CUSTOMERS.set_function(lambda: len(store))  # (kept as a count)

    @staticmethod
    def partition(parts: list[str]) -> str:
        """The input partition that hands over the tier's wakes: the last listed (an
        embedded run's loopback, which ends last; a Kafka reader)."""
        return parts[-1]

    def idle_deadline(self, ctx: CustomerContext | None) -> float | None:
        """When (event time) this customer may leave memory; None: not now."""
        if ctx is None or self._ending or ctx.awaiting is not None or ctx.held or ctx.unopened:
            return None  # (one waiting for the loop stays until it is answered)
        return ctx.last_seen + self.after

    def leave(self, key: str, state: bytes, *, epoch: int, due: float | None) -> bool:
        """Keep a customer here (their logic is then discarded); False: they stay in
        memory (the input is ending)."""
        with self._lock:
            if self._ending:
                return False
            self.store.put(key, state, epoch=epoch, due=due)
        self._held.discard(key)
        _LEFT.inc()
        return True

    def take(self, key: str, *, epoch: int) -> bytes | None:
        """A customer's context, back in memory; None if they are not here."""
        state = self.store.take(key, epoch=epoch)
        self._held.add(key)
        if self._waking:
            with self._lock:
                self._waking.discard(key)
        if state is not None:
            _RETURNED.inc()
        return state

    def held(self, key: str) -> None:
        """A customer's logic is in memory without a take (resumed from bytewax's
        snapshots)."""
        self._held.add(key)

    def let_go(self, key: str) -> None:
        """A customer's logic is discarded, their context ended (not left for the tier)."""
        self._held.discard(key)

    def coming(self, keys: list[str]) -> int:
        """A batch's customers, before their step: the store reads those not in memory
        together (`CustomerStore.read_ahead`), rather than each at their take; returns
        how many of them it holds."""
        held = self._held
        elsewhere = [key for key in keys if key not in held]
        return self.store.read_ahead(elsewhere) if elsewhere else 0

    def flush(self) -> int:
        """Before bytewax snapshots an epoch: every take of it written (the store
        writes them together); returns how many."""
        return self.store.flush()

    def gone(self, key: str, *, epoch: int) -> None:
        """A customer's context ended (erased, expired): nothing of them stays here."""
        self.store.gone(key, epoch=epoch)

    def watch(self, key: str, idle: float) -> None:
        """A customer in memory may leave at `idle` (event time): the tier will ask."""
        with self._lock:
            heapq.heappush(self._idle, (idle, key))

    def wakes(self) -> list[Wake]:
        """What to hand over now: customers in memory the watermark has made idle, those
        seen longest ago while more than `most` are in memory, and (with timers) cold
        customers whose deadline the watermark has passed (each once)."""
        if self._ending:
            return []
        watermark = self._clock.watermark
        wakes: list[Wake] = []
        with self._lock:
            idle = self._idle
            while idle and idle[0][0] <= watermark and len(wakes) < WAKES_PER_BATCH:
                wakes.append(Wake(heapq.heappop(idle)[1], "idle", at=watermark))
            over = 0 if self.most is None else len(idle) - self.most
            while over > 0 and len(wakes) < WAKES_PER_BATCH:
                watched, key = heapq.heappop(idle)
                wakes.append(Wake(key, "full", idle=watched, at=watermark))
                over -= 1
        if not self._timers:
            return wakes
        now = time.monotonic()
        if now < self._next_look:
            return wakes
        self._next_look = now + self._look_every
        found = self.store.due(watermark, limit=WAKES_PER_BATCH + len(self._waking))
        with self._lock:
            keys = [key for _due, key in found if key not in self._waking][:WAKES_PER_BATCH]
            self._waking.update(keys)
        return [*wakes, *(Wake(key, "due", at=watermark) for key in keys)]

    def sweep(self) -> list[Wake]:
        """At a bounded input's end: the next cold customers to bring back (none left:
        empty). From the first call on, nobody leaves memory."""
        clock = self._clock
        if clock.stop.requested or clock.resumed_after_end:
            return []  # a stop is not the end; a finished run resumed ended before
        with self._lock:
            self._ending = True
            keys = self.store.cold_keys(after=self._swept, limit=WAKES_PER_BATCH)
            if keys:
                self._swept = keys[-1]
        return [Wake(key, "end") for key in keys]

    def stopping(self) -> bool:
        """Whether the run was asked to stop (its input ends, cleanly)."""
        return self._clock.stop.requested

    def maintain(self, epoch: int) -> None:
        """Now and then: let the store drop what no resume can need. `epoch`: the one the
        input reads in, which bytewax lets it start only once every epoch before it is
        in the recovery store (its backpressure: the input waits on a probe of the
        recovery writes); without recovery nothing goes back at all."""
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + _EVERY
        self.store.durable(epoch)


def open_cold_tier(
    settings: ColdSettings,
    *,
    recovery: Path | None,
    clock: EventClock,
    timers: bool,
    place: Place | None = None,
) -> ColdTier | None:
    """The run's cold tier (None: off), its store back at the epoch the run starts from.

    On disk it is `settings.directory`, else beside the recovery folder (`NAME.cold`: it
    is part of the state a resume goes back to), else a temporary folder; a process of
    a cluster (`place`) has one of its own beside it (`run_stores.own_folder`). A run
    that resumes nothing starts it empty, and drops what clusters of other shapes kept
    there. A resume that would not find customers the tier holds is refused: kept by
    another shape of cluster, or with the tier off (`_resumable`), or kept elsewhere
    (the folder is said beside the recovery folder: `_where_it_was`).
    """
    first = resume_epoch(recovery) if recovery is not None else None
    base = settings.directory
    if base is None and recovery is not None:
        base = recovery.with_name(recovery.name + ".cold")
    if base is not None and first is not None:
        if recovery is not None:
            _where_it_was(recovery, base, first)
        _resumable(base, place, first, on=settings.after is not None)
    if settings.after is None:
        return None
    store: CustomerStore
    keep: tempfile.TemporaryDirectory[str] | None = None
    if settings.store == "memory":
        if recovery is not None:
            raise SettingsError(
                "WAYFINDER_COLD_STORE=memory holds customers in this process alone, which a "
                "resume from the recovery folder would lose: use rocksdb"
            )
        store = MemoryCustomerStore()
        metrics.COLD_STORE_TAKEN_AHEAD.set_function(lambda: 0)  # (not a run's before)
    else:
        if base is None:
            keep = tempfile.TemporaryDirectory(prefix="wayfinder-cold-")
            directory = Path(keep.name)
        else:
            directory = own_folder(base, place)
        before_opening(directory)
        if base is not None and first is None:  # an earlier run's, not resumed
            drop_other_shapes(base, place)
            shutil.rmtree(directory, ignore_errors=True)
        rocks = RocksCustomerStore(
            directory, cache_bytes=settings.cache_bytes, compression=settings.compression
        )
        opened(rocks, on_end=rocks.durable, folder=keep)
        if recovery is not None and base is not None:
            kept_at(recovery, _RECORD, base)
        _export(rocks)
        store = rocks
    if first is not None:
        store.resume(first)
    return ColdTier(
        store,
        settings.after,
        clock=clock,
        first_epoch=first or 1,
        timers=timers,
        most=settings.most,
    )


def _resumable(base: Path, place: Place | None, first: int, *, on: bool) -> None:
    """Refuse, in one sentence, a resume that would not find customers the tiers at
    `base` hold at the epoch it resumes from: tiers kept by a cluster of another shape
    (bytewax routes each customer by the count of workers, so it would look for them in
    another process's tier), or any tier with the tier turned off. Tiers of another
    shape that hold nobody (a bounded run brought everyone back at its end) are removed.
    """
    shape = shape_of(place)
    holding = _held(base, first, but=shape if on else None)
    if holding:
        said = ", ".join(
            f"{n:,} kept by {'a process alone' if kept == '1' else 'a cluster of ' + kept}"
            for kept, n in holding.items()
        )
        wanted = "a process alone" if place is None else f"a cluster of {shape}"
        why = (
            "with the cold tier off (WAYFINDER_COLD_AFTER=off)"
            if not on
            else f"by {wanted} (processes x workers): bytewax would look for them in "
            "another process's tier"
        )
        raise SettingsError(
            f"the cold tier at {base} holds customers the run resumes with ({said}), which a "
            f"resume {why} would not find: resume as the run that kept them did; a bounded "
            "run (WAYFINDER_KAFKA_TAIL=false) brings every cold customer back into memory "
            "at its end, and a resume after it may change either"
        )
    if on and (place is None or place.process == 0):
        drop_other_shapes(base, place)  # (they hold nobody; one process removes them)


def _where_it_was(recovery: Path, base: Path, first: int) -> None:
    """Refuse, in one sentence, a resume that would look for the tier elsewhere than
    where the run before kept it (WAYFINDER_COLD_DIR changed, or unset) while it still
    holds customers there at the epoch the resume goes back to: they would be lost,
    silently. (A tier moved there whole is found there; one moved away holds nobody.)"""
    before = kept_before(recovery, _RECORD)
    if before is None or before == base.resolve():
        return
    held = sum(_held(before, first).values())
    if held:
        raise SettingsError(
            f"the cold tier the run resumes from is at {before} ({held:,} "
            f"customer{'s' if held > 1 else ''} held there), not "
            f"at {base}: resume with WAYFINDER_COLD_DIR={before} and the tier on, or move "
            f"it there first ({before.name} and each {before.name}.p* beside it, named "
            f"after {base.name})"
        )


def _held(base: Path, epoch: int, *, but: str | None = None) -> dict[str, int]:
    """How many customers the tiers at `base` hold at `epoch`, by the shape that kept
    them (those that hold anyone; `but`: a shape not counted)."""
    counted = {
        kept: sum(_customers_at(folder, epoch) for folder in folders)
        for kept, folders in shapes_beside(base).items()
        if kept != but
    }
    return {kept: n for kept, n in counted.items() if n}


def _customers_at(folder: Path, epoch: int) -> int:
    """How many customers the tier in `folder` holds at `epoch` (as a resume from there
    would leave it). Read only: every process of a cluster counts the same folders as it
    starts, and the first process removes those that hold nobody (another one counting
    meanwhile would have found nobody as well)."""
    before_opening(folder)
    try:
        store = RocksCustomerStore(folder, read_only=True)
        try:
            return store.cold_at(epoch)
        finally:
            store.close()
    except Exception as exc:
        if not (folder / "CURRENT").is_file():
            return 0  # (removed meanwhile, by the first process: it held nobody)
        raise SettingsError(f"the cold tier at {folder} does not open: {exc}") from None


def _export(store: RocksCustomerStore) -> None:
    """RocksDB's own figures of the store, read when Prometheus scrapes."""

    def figure(name: str) -> Callable[[], float]:
        def read() -> float:
            try:
                return float(getattr(store.stats(), name))
            except Exception:  # closed at the run's end: nothing to say
                return float("nan")

        return read

    metrics.COLD_STORE_KEYS.set_function(figure("estimated_keys"))
    metrics.COLD_STORE_SST_BYTES.set_function(figure("sst_bytes"))
    metrics.COLD_STORE_MEMTABLE_BYTES.set_function(figure("memtable_bytes"))
    metrics.COLD_STORE_CACHE_BYTES.set_function(figure("block_cache_bytes"))
    metrics.COLD_STORE_PENDING_BYTES.set_function(figure("pending_compaction_bytes"))
    metrics.COLD_STORE_TAKEN_AHEAD.set_function(lambda: store.taken_ahead)
