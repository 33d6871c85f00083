"""Drive the customer step over a whole stream in event time, without bytewax.

The same cores as the dataflow, keyed the same way, with the events topic's
loop (merges, forwards, erasures of linked devices) taken at once. Time works
as in the embedded dataflow: a customer's due stalls and abandonments fire
before their next event, and, for customers who go quiet, when the replay is
told how far time has run (`advance`). Live runs fire the same deadlines on the
wall clock; the transitions are the same.
"""

from collections import deque
from collections.abc import Callable, Iterable

from operators.analytics import InFlight, in_flight
from operators.customer_step import CustomerStep, Output
from operators.identity import customer_key, visitor_key
from operators.models import ModelSet, Predictors
from operators.playbook import CompiledPlaybook
from operators.published import Published
from schemas.codec import BadInput
from schemas.event import Event
from schemas.learning import Example
from state.context import CustomerContext, is_tombstone


class Replay:
    """All customers' contexts, fed one event at a time."""

    def __init__(
        self,
        playbook: CompiledPlaybook,
        *,
        learn: bool = True,
        predictors: Predictors | None = None,
        record_inputs: bool = False,
        published: Published | None = None,
        pseudonym_of: Callable[[str], str] | None = None,
    ) -> None:
        """`learn`: with the online models, learning from what happens as it happens;
        `predictors`: what decisions ask instead of them (evaluations); `record_inputs`:
        emit each decision's input too, as the flow does; `published`: what a run before
        published, which this one repeats (a replay after a crash); `pseudonym_of`: what
        the outputs name a customer by (`CustomerStep`)."""
        self.models = ModelSet(playbook) if learn else None
        self.step = CustomerStep(
            playbook,
            self.models,
            predictors,
            record_inputs=record_inputs,
            published=published,
            pseudonym_of=pseudonym_of,
        )
        self.contexts: dict[str, CustomerContext] = {}
        #: Whose state a pseudonym is: the loop's records name no one else.
        self._named: dict[str, str] = {}
        #: Erased keys: their tombstones, for the redelivery horizon (no customer's data).
        self.erased: dict[str, CustomerContext] = {}
        self.outputs: list[Output] = []
        #: Events the step refused (the flow's dead letters from the customer step).
        self.refused = 0

    def run(self, events: Iterable[Event], *, until: float | None = None) -> list[Output]:
        """Feed every event (in the given order), then let time run to `until`."""
        for event in events:
            self.feed(event)
        if until is not None:
            self.advance(until)
        return self.outputs

    def feed(self, event: Event) -> None:
        """One event from the input, and whatever it sends round the events topic."""
        self._drain(deque([event]))

    def advance(self, now: float) -> None:
        """Time has run to `now`: fire every customer's deadlines that fall due by then."""
        for key in [k for k, ctx in self.erased.items() if self.step.expired(ctx, now)]:
            del self.erased[key]  # an erasure's tombstone, kept long enough
        for key in sorted(self.contexts):
            ctx = self.contexts.get(key)
            if ctx is None:
                continue
            due = self.step.next_deadline(ctx)
            if due is not None and due <= now:
                outputs = self._collect(self.step.on_time(ctx, now))
                self._drain(deque(o for o in outputs if isinstance(o, Event)))

    def in_flight(self) -> list[InFlight]:
        """Every customer's journeys still open (call at the end of the input)."""
        return [j for key in sorted(self.contexts) for j in in_flight(self.contexts[key])]

    def _drain(self, pending: deque[Event]) -> None:
        while pending:
            current = pending.popleft()
            if current.to is not None:
                keys = [self._named.get(current.to, current.to)]
            else:
                keys = [customer_key(current)]
                if current.type == "identify":
                    keys.append(visitor_key(current))
            for key in keys:
                before = self.contexts.get(key) or self.erased.get(key)
                if before is None and current.to is None:
                    self._named[self.step.pseudonym_of(key)] = key
                try:
                    ctx, outputs = self.step.on_event(key, before, current)
                except BadInput:  # refused, as the flow dead-letters it
                    self.refused += 1
                    continue
                if ctx is None or is_tombstone(ctx):
                    self.contexts.pop(key, None)
                    if ctx is not None:
                        self.erased[key] = ctx
                else:
                    self.contexts[key] = ctx
                    if before is not None and before is not ctx:
                        self.erased.pop(key, None)
                pending.extend(o for o in self._collect(outputs) if isinstance(o, Event))

    def _collect(self, outputs: list[Output]) -> list[Output]:
        models = self.models
        for output in outputs:
            if isinstance(output, Example):
                if models is not None:
                    models.learn(output)
            else:
                self.outputs.append(output)
        return outputs
