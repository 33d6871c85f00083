"""The customer step of the dataflow: one customer's context as bytewax state.

Each key's logic folds its events through the pure `CustomerStep` (operators/)
and says what to emit; in an embedded run it also tells the loop's rounds what
it folded and what will come back (see `flows.dataflow.loopback`).
"""

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime

from bytewax.operators import StatefulBatchLogic

from flows.dataflow.clock import EventClock
from flows.dataflow.rounds import Rounds
from flows.runtime import metrics
from operators.analytics import InFlight, in_flight
from operators.customer_step import CustomerStep, Output
from operators.identity import ANONYMOUS_PREFIX
from schemas.action import Action
from schemas.event import Event
from schemas.learning import Example
from schemas.topics import action_topic
from state.context import CustomerContext, from_snapshot, to_snapshot

#: (customer key, event): what the decode step hands to a customer.
Keyed = tuple[str, Event]
#: What the step emits: the core's outputs, and where each customer is when a bounded
#: input ends (for the contact-point map).
StepOutput = Output | InFlight
#: Event types the step acts on without folding them into the context.
_NOT_FOLDED = frozenset({"identify", "profile_merge"})


class CustomerLogic(StatefulBatchLogic[Keyed, StepOutput, bytes]):
    """bytewax state for one customer: the context, snapshotted as msgpack bytes.

    `live`: wake the customer with bytewax timers on the wall clock. Otherwise
    time is event time: due stalls fire on the customer's next event or, for a
    customer who goes quiet, at the end of the input against the watermark.
    `models_lock`: held while the step runs, so the models it asks do not learn meanwhile.
    `shadow`: a challenger's step, whose outputs never come back as input.
    """

    def __init__(
        self,
        step: CustomerStep,
        resume_state: bytes | None,
        *,
        live: bool,
        clock: EventClock,
        rounds: Rounds | None,
        models_lock: AbstractContextManager[object] | None = None,
        shadow: bool = False,
    ) -> None:
        self._step = step
        self._shadow = shadow
        self._models_lock = models_lock if models_lock is not None else nullcontext()
        self._live = live
        self._clock = clock
        self._rounds = rounds
        self._ctx: CustomerContext | None = (
            from_snapshot(resume_state) if resume_state is not None else None
        )

    def on_batch(self, values: list[Keyed]) -> tuple[Iterable[StepOutput], bool]:
        emitted: list[StepOutput] = []
        with self._models_lock:
            ctx = self._step_batch(values, emitted)
        self._ctx = ctx
        self._account(len(values), emitted)
        return emitted, ctx is None

    def _step_batch(self, values: list[Keyed], emitted: list[StepOutput]) -> CustomerContext | None:
        step = self._step
        ctx = self._ctx
        for key, event in values:
            if ctx is None:
                kind = "anonymous" if key.startswith(ANONYMOUS_PREFIX) else "known"
                metrics.CONTEXTS_CREATED.labels(kind).inc()
                folded_before = -1
            else:
                folded_before = ctx.events
            ctx, outputs = step.on_event(key, ctx, event)
            if ctx is None:
                if not key.startswith(ANONYMOUS_PREFIX):  # their devices go with them
                    metrics.ERASURES.inc()
            elif (
                ctx.events == folded_before
                and ctx.alias_of is None
                and event.type not in _NOT_FOLDED
            ):
                metrics.DUPLICATE_EVENTS.inc()
            if outputs:
                emitted.extend(outputs)
        return ctx

    def on_notify(self) -> tuple[Iterable[StepOutput], bool]:
        return self._wake(datetime.now(UTC).timestamp())

    def on_eof(self) -> tuple[Iterable[StepOutput], bool]:
        if self._live:
            return [], self._ctx is None
        outputs, discard = self._wake(self._clock.watermark)
        if self._ctx is not None:
            # Where this customer is when the input ends, for the contact-point map.
            outputs = [*outputs, *in_flight(self._ctx)]
        return outputs, discard

    def notify_at(self) -> datetime | None:
        if not self._live:
            return None
        due = self._step.next_deadline(self._ctx)
        return None if due is None else datetime.fromtimestamp(due, UTC)

    def snapshot(self) -> bytes:
        assert self._ctx is not None  # a discarded logic is never snapshotted
        return to_snapshot(self._ctx)

    def _wake(self, now: float) -> tuple[Iterable[StepOutput], bool]:
        if self._ctx is None:
            return [], True
        with self._models_lock:
            outputs = self._step.on_time(self._ctx, now)
        self._account(0, outputs)
        return outputs, False

    def _account(self, consumed: int, emitted: Sequence[StepOutput]) -> None:
        rounds = self._rounds
        if rounds is None:
            return
        if not self._shadow:
            back = examples = 0
            for output in emitted:
                if type(output) is Example:
                    examples += 1
                elif _comes_back(rounds, output):
                    back += 1
            rounds.emitted(back, examples)
        rounds.settled(consumed)


def _comes_back(rounds: Rounds, output: StepOutput) -> bool:
    """Whether the input reads this output back (so the next round waits for it)."""
    if isinstance(output, Event):
        return True
    return isinstance(output, Action) and rounds.fed_back(action_topic(output.channel))
