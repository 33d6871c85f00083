"""Event time for embedded and bounded runs: the latest event time decoded so far.

Live runs wake customers with bytewax timers on the wall clock. Replays and
simulations run far faster than their event time, so a customer's stalls and
abandonments fall due against this watermark instead: checked on each of the
customer's events and, for those who go quiet, when the input ends.
"""

import threading


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
