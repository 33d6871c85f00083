"""What one customer's logic tells the operators: the state it holds (for the gauges of
customers, bytes and open journeys) and what its outputs took.

Each key's logic adds what it holds and takes it back when that changes or the key is
discarded, so the process's gauges are exact across resumes (a resumed key adds what
its snapshot holds) without ever scanning the state.
"""

import threading
import time
from collections.abc import Callable, Sequence

from flows.runtime import metrics
from operators.decide import NO_ACTION
from operators.per_thread import PerThread
from schemas.action import Action
from schemas.journey import JourneyTransition
from state.context import CustomerContext, is_tombstone


class HeldState:
    """One key's part of the process's state gauges."""

    __slots__ = ("_bytes", "_customer", "_journeys", "_thread")

    def __init__(self) -> None:
        self._customer = False
        self._bytes = 0
        self._journeys: tuple[str, ...] = ()
        #: (a key's logic runs on the one worker thread: made there, it adds there)
        self._thread = _THREADS.get()

    def holds(self, ctx: CustomerContext | None) -> None:
        """The key now holds this context (None: nothing)."""
        customer = ctx is not None and not is_tombstone(ctx)
        thread = self._thread
        if customer != self._customer:
            thread.customers += 1 if customer else -1
            self._customer = customer
        journeys = tuple(j.journey for j in ctx.journeys) if ctx is not None else ()
        if journeys != self._journeys:
            counts = thread.journeys
            for name in self._journeys:
                counts[name] -= 1
            for name in journeys:
                if name not in counts:
                    _count_open(name)
                    counts[name] = 0
                counts[name] += 1
            self._journeys = journeys

    def snapshotted(self, size: int) -> None:
        """The key's latest snapshot is `size` bytes (0: discarded)."""
        self._thread.bytes += size - self._bytes
        self._bytes = size

    def discarded(self) -> None:
        self.holds(None)
        self.snapshotted(0)


class _ThreadHeld:
    """What the keys of one worker thread hold. The gauges add every thread's up when
    they are read: a change is then plain arithmetic, where a gauge's own takes a lock
    (about 0.5 µs: a customer back from the cold tier, or leaving, changed four or five),
    and each thread writes only its own."""

    __slots__ = ("bytes", "customers", "journeys")

    def __init__(self) -> None:
        self.customers = 0
        self.bytes = 0
        self.journeys: dict[str, int] = {}


#: Each thread's (`PerThread`: a `threading.local` would be lost, each loss adding a
#: share that every reading of the gauges adds up ever after).
_THREADS = PerThread(_ThreadHeld)
_OPEN_BOUND_LOCK = threading.Lock()


def _threads() -> list[_ThreadHeld]:
    return _THREADS.every()


def _count_open(journey: str) -> None:
    """The open journeys gauge of a journey reads the threads' counts (bound once)."""
    with _OPEN_BOUND_LOCK:
        if journey in _OPEN_BOUND:
            return
        _OPEN_BOUND.add(journey)
    metrics.OPEN_JOURNEYS.labels(journey).set_function(
        lambda: sum(t.journeys.get(journey, 0) for t in _threads())
    )


_OPEN_BOUND: set[str] = set()
metrics.CUSTOMERS_IN_STATE.set_function(lambda: sum(t.customers for t in _threads()))
metrics.STATE_BYTES.set_function(lambda: sum(t.bytes for t in _threads()))


def took(outputs: Sequence[object], ingested: float | None, in_holdout: Callable[[], bool]) -> None:
    """What a step's outputs say: how long their actions took from the batch of their
    trigger being read (`ingested`; None: a timer's, which no batch brought), and the
    group of whoever completed a journey (for the uplift)."""
    now = time.time()
    for output in outputs:
        if isinstance(output, Action):
            if ingested is None:
                continue
            _INGEST_TO_ACTION[action_kind(output)].observe(now - ingested)
        elif isinstance(output, JourneyTransition) and output.kind == "completed":
            _GOALS["holdout" if in_holdout() else "treated"].inc()


def action_kind(action: Action) -> str:
    """sent (pushed), reply (an answer to a decision request) or no_action (an answer
    that there is nothing to do)."""
    if action.action == NO_ACTION:
        return "no_action"
    return "reply" if action.request_id is not None else "sent"


#: The children of each labelled family, bound once (the playbook's journeys are few).
_INGEST_TO_ACTION = {k: metrics.INGEST_TO_ACTION.labels(k) for k in ("sent", "reply", "no_action")}
_GOALS = {g: metrics.GOALS_BY_GROUP.labels(g) for g in ("treated", "holdout")}
