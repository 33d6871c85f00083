"""What one customer's logic tells the operators: the state it holds (for the gauges of
customers, bytes and open journeys) and what its outputs took.

Each key's logic adds what it holds and takes it back when that changes or the key is
discarded, so the process's gauges are exact across resumes (a resumed key adds what
its snapshot holds) without ever scanning the state.
"""

import time
from collections.abc import Callable, Sequence

from prometheus_client import Gauge

from flows.runtime import metrics
from operators.decide import NO_ACTION
from schemas.action import Action
from schemas.journey import JourneyTransition
from state.context import CustomerContext, is_tombstone


class HeldState:
    """One key's part of the process's state gauges."""

    __slots__ = ("_bytes", "_customer", "_journeys")

    def __init__(self) -> None:
        self._customer = False
        self._bytes = 0
        self._journeys: tuple[str, ...] = ()

    def holds(self, ctx: CustomerContext | None) -> None:
        """The key now holds this context (None: nothing)."""
        customer = ctx is not None and not is_tombstone(ctx)
        if customer != self._customer:
            metrics.CUSTOMERS_IN_STATE.inc(1 if customer else -1)
            self._customer = customer
        journeys = tuple(j.journey for j in ctx.journeys) if ctx is not None else ()
        if journeys != self._journeys:
            for name in self._journeys:
                _open_journeys(name).dec()
            for name in journeys:
                _open_journeys(name).inc()
            self._journeys = journeys

    def snapshotted(self, size: int) -> None:
        """The key's latest snapshot is `size` bytes (0: discarded)."""
        metrics.STATE_BYTES.inc(size - self._bytes)
        self._bytes = size

    def discarded(self) -> None:
        self.holds(None)
        self.snapshotted(0)


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


def _open_journeys(journey: str) -> Gauge:
    """The open journeys gauge's child for a journey, bound at its first use (a
    customer back from the cold tier adds each of theirs: a lookup of the labels each
    time cost several µs)."""
    child = _OPEN_JOURNEYS.get(journey)
    if child is None:
        child = _OPEN_JOURNEYS[journey] = metrics.OPEN_JOURNEYS.labels(journey)
    return child


#: The children of each labelled family, bound once (the playbook's journeys are few).
_OPEN_JOURNEYS: dict[str, Gauge] = {}
_INGEST_TO_ACTION = {k: metrics.INGEST_TO_ACTION.labels(k) for k in ("sent", "reply", "no_action")}
_GOALS = {g: metrics.GOALS_BY_GROUP.labels(g) for g in ("treated", "holdout")}
