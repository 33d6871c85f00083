"""Event time for embedded and bounded runs: the latest event time decoded so far.

Live runs wake customers with bytewax timers on the wall clock. Replays and
simulations run far faster than their event time, so a customer's stalls and
abandonments fall due against this watermark instead: checked on each of the
customer's events and, for those who go quiet, when the input ends. The
watermark is state like any other: a stateful step keeps it and snapshots it
with the input offsets, so a resumed run ends where an uninterrupted one does.
"""

import threading
from collections.abc import Iterable

from bytewax.operators import StatefulBatchLogic


class EventTime(float):
    """The latest event time of one decoded batch (epoch seconds)."""


class EventClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watermark = float("-inf")

    def advance(self, ts: float) -> None:
        if ts > self._watermark:
            with self._lock:
                self._watermark = max(self._watermark, ts)

    @property
    def watermark(self) -> float:
        return self._watermark


#: The one key of the watermark step.
WATERMARK_KEY = "watermark"


class WatermarkLogic(StatefulBatchLogic[float, None, float]):
    """Keeps the watermark as recoverable state; a resumed run starts the clock there."""

    def __init__(self, clock: EventClock, resume_state: float | None) -> None:
        self._latest = float("-inf") if resume_state is None else resume_state
        clock.advance(self._latest)

    def on_batch(self, values: list[float]) -> tuple[Iterable[None], bool]:
        self._latest = max(self._latest, *values)
        return [], False

    def snapshot(self) -> float:
        return self._latest
