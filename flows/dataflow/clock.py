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
    """The watermark, shared by a process's steps; and whether the input had already
    ended with nothing read since (a finished run resumed: its end is not re-emitted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watermark = float("-inf")
        #: The run resumed from snapshots taken after its input ended, and has read
        #: nothing since (set from the watermark's state, cleared by the decode step).
        self.resumed_after_end = False

    def advance(self, ts: float) -> None:
        if ts > self._watermark:
            with self._lock:
                self._watermark = max(self._watermark, ts)

    @property
    def watermark(self) -> float:
        return self._watermark


#: The one key of the watermark step.
WATERMARK_KEY = "watermark"


class WatermarkLogic(StatefulBatchLogic[float, None, tuple[float, bool]]):
    """Keeps the watermark as recoverable state; a resumed run starts the clock there.

    It also keeps whether the input has ended: a run resumed after its end, with no
    new input, must not emit its end-of-input outputs (the map's open journeys) twice.
    """

    def __init__(self, clock: EventClock, resume_state: tuple[float, bool] | None) -> None:
        self._latest, self._ended = (float("-inf"), False) if resume_state is None else resume_state
        clock.advance(self._latest)
        clock.resumed_after_end = self._ended

    def on_batch(self, values: list[float]) -> tuple[Iterable[None], bool]:
        self._latest = max(self._latest, *values)
        self._ended = False
        return [], False

    def on_eof(self) -> tuple[Iterable[None], bool]:
        self._ended = True
        return [], False

    def snapshot(self) -> tuple[float, bool]:
        return self._latest, self._ended
