"""Drive the customer step over a whole stream in event time, without bytewax.

The same cores as the dataflow, keyed the same way, with the events topic's
loop (merges, forwards, erasures of linked devices) taken at once, and every
customer's stalls and abandonments fired as event time passes them, even for
customers who never send another event. Used for replays of history and as the
reference the dataflow's transitions are compared with.
"""

import heapq
from collections import deque
from collections.abc import Iterable

from msgspec import Struct

from operators.customer_step import CustomerStep
from operators.identity import ANONYMOUS_PREFIX, customer_key
from operators.playbook import CompiledPlaybook
from schemas.event import Event
from state.context import CustomerContext


class Replay:
    """All customers' contexts, fed one event at a time in event-time order."""

    def __init__(self, playbook: CompiledPlaybook) -> None:
        self.step = CustomerStep(playbook)
        self.contexts: dict[str, CustomerContext] = {}
        self.outputs: list[Struct] = []
        self._timers: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._now = float("-inf")

    def run(self, events: Iterable[Event], *, until: float | None = None) -> list[Struct]:
        """Feed every event (in the given order), then let time run to `until`."""
        for event in events:
            self.feed(event)
        if until is not None:
            self.advance(until)
        return self.outputs

    def feed(self, event: Event) -> None:
        """One event from the input: first the time it brings, then the event itself."""
        self.advance(event.ts.timestamp())
        pending: deque[Event] = deque([event])
        while pending:
            current = pending.popleft()
            keys = [customer_key(current)]
            if current.type == "identify":
                keys.append(ANONYMOUS_PREFIX + current.anonymous_id)  # type: ignore[operator]
            for key in keys:
                for output in self._apply(key, current):
                    if type(output) is Event:
                        pending.append(output)  # the events topic, without the wait

    def advance(self, now: float) -> None:
        """Fire every customer's deadlines that fall due by `now`, in time order."""
        self._now = max(self._now, now)
        while self._timers and self._timers[0][0] <= now:
            due, key = heapq.heappop(self._timers)
            ctx = self.contexts.get(key)
            if ctx is None or self.step.next_deadline(ctx) != due:
                continue  # moved or gone since it was scheduled
            del self._scheduled[key]
            loop = [o for o in self._collect(self.step.on_time(ctx, due)) if type(o) is Event]
            self._schedule(key, ctx)
            for event in loop:
                self.feed(event)

    def _apply(self, key: str, event: Event) -> list[Struct]:
        ctx, outputs = self.step.on_event(key, self.contexts.get(key), event)
        if ctx is None:
            self.contexts.pop(key, None)
        else:
            self.contexts[key] = ctx
            self._schedule(key, ctx)
        return self._collect(outputs)

    def _collect(self, outputs: list[Struct]) -> list[Struct]:
        self.outputs.extend(outputs)
        return outputs

    def _schedule(self, key: str, ctx: CustomerContext) -> None:
        due = self.step.next_deadline(ctx)
        if due is not None and self._scheduled.get(key) != due:
            self._scheduled[key] = due
            heapq.heappush(self._timers, (due, key))
