"""The customer step of the dataflow: one customer's context as bytewax state.

Each key's logic folds its events through the pure `CustomerStep` (operators/)
and says what to emit; it also tells the run's ledger (an embedded run's rounds) what
it folded and what will come back (see `flows.dataflow.loopback`).
"""

import logging
import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime

from bytewax.operators import StatefulBatchLogic

from flows.dataflow.clock import EventClock
from flows.dataflow.cold_tier import LEAVING, ColdTier, Wake, WakeKind
from flows.dataflow.held_state import HeldState, took
from flows.dataflow.ledger import FlowLedger
from flows.runtime import metrics
from operators.analytics import InFlight, in_flight
from operators.customer_step import CustomerStep, Output
from schemas.action import Action
from schemas.codec import BadInput, encode
from schemas.context_view import DecisionView
from schemas.deadletter import DeadLetter, DeadLetterReason, dead_letter
from schemas.decision import Decision
from schemas.event import ANONYMOUS_PREFIX, Event
from schemas.learning import Example
from schemas.topics import action_topic
from state.context import CustomerContext, from_snapshot, is_tombstone, to_snapshot
from state.context_view import DECISIONS_KEPT, ContextViewStore, decision_view, view_of

#: Where event time was when an event was decoded: the decoding process's watermark and
#: the latest event time it had read. Every record carries it, so a process that reads
#: no input itself (a cluster's other processes) knows the watermark all the same. Then
#: when its batch was read (wall clock), which its actions are timed from, and the
#: bytewax epoch it is in (`flows.dataflow.epochs`).
Stamp = tuple[float, float, float, int]
#: (customer key, event, stamp): what the decode step hands to a customer; or ("", a
#: wake of the cold tier, stamp).
Keyed = tuple[str, Event | Wake, Stamp]
#: What the step emits: the core's outputs, where each customer is when a bounded
#: input ends (for the contact-point map), and the records it could not use.
StepOutput = Output | InFlight | DeadLetter
logger = logging.getLogger(__name__)

#: Event types the step acts on without folding them into the context.
_NOT_FOLDED = frozenset({"identify", "profile_merge", "handover_request"})
#: Contexts made, known customers' and visitors' (a child bound once for each).
_CREATED = metrics.Children(metrics.CONTEXTS_CREATED)
#: What a batch asks when there is no cold tier to wake anyone.
_NOTHING_ASKED: frozenset[WakeKind] = frozenset()


class CustomerLogic(StatefulBatchLogic[Keyed, StepOutput, bytes]):
    """bytewax state for one customer: the context, snapshotted as msgpack bytes.

    Time is event time. Due stalls fire on the customer's next event, at the end of
    a bounded input against the watermark and, with `timers`, when the watermark
    passes them (bytewax timers, set for when the watermark should have got there).
    An embedded run has no timers: its rounds fire them on events and at the end.
    `models_lock`: held while the step runs, so the models it asks do not learn meanwhile.
    `shadow`: a challenger's step, whose outputs never come back as input (its state
    stays in memory). `cold`: the cold tier, where the customer goes when idle and
    comes back from (`flows.dataflow.cold_tier`). `views`: where the customer's context
    view is written where an epoch ends (`state.context_view`).

    No record stops the flow: one the step refuses, or fails on, becomes a dead
    letter and leaves the context as it was before it (`_Rollback`).
    """

    def __init__(
        self,
        step: CustomerStep,
        resume_state: bytes | None,
        *,
        timers: bool,
        clock: EventClock,
        ledger: FlowLedger | None,
        models_lock: AbstractContextManager[object] | None = None,
        shadow: bool = False,
        cold: ColdTier | None = None,
        views: ContextViewStore | None = None,
    ) -> None:
        self._step = step
        self._shadow = shadow
        self._models_lock = models_lock if models_lock is not None else nullcontext()
        self._timers = timers
        self._clock = clock
        self._ledger = ledger
        self._ctx: CustomerContext | None = (
            from_snapshot(resume_state) if resume_state is not None else None
        )
        self._rollback = _Rollback(resume_state)
        #: A deadline whose wake failed: not asked for again (a timer would loop on it).
        self._failed_due: float | None = None
        #: This key's part of the state gauges (a challenger's state is not counted).
        self._held = None if shadow else HeldState()
        if self._held is not None and resume_state is not None:
            self._held.holds(self._ctx)
            self._held.snapshotted(len(resume_state))
        self._cold = None if shadow else cold
        #: The customer's state key (known from their first record), and the epoch of
        #: the latest record (a resumed logic's: the run's first, never later).
        self._key = ""
        self._epoch = cold.first_epoch if cold is not None else 0
        #: Whether the cold tier may hold this customer (a new logic, not resumed), and
        #: whether it watches for them to be idle.
        self._may_be_cold = resume_state is None
        self._watched = False
        self._views = None if shadow else views
        #: The latest decisions for the view, latest first (None: not read yet).
        self._decided: list[DecisionView] | None = None

    def on_batch(self, values: list[Keyed]) -> tuple[Iterable[StepOutput], bool]:
        watermark, latest, ingested, epoch = values[-1][2]  # (the latest: one a batch)
        self._clock.observe(watermark, latest, ingested)
        self._epoch = epoch
        asked: AbstractSet[WakeKind] = _NOTHING_ASKED
        if self._cold is not None:
            wakes = [v[1] for v in values if type(v[1]) is Wake]
            if wakes:
                asked = {w.kind for w in wakes}
                watermark = max(watermark, *(w.at for w in wakes))  # (as the tier saw it)
        emitted: list[StepOutput] = []
        if not self._key and (self._cold is not None or self._views is not None):
            key, first, _stamp = values[0]
            self._key = (
                first.key if isinstance(first, Wake) else first.to or self._step.pseudonym_of(key)
            )
            if self._cold is not None and not self._may_be_cold:
                self._cold.held(self._key)  # (resumed: in memory without a take)
        if self._cold is not None:
            self._from_cold(values, asked)
        with self._models_lock:
            ctx, erased = self._step_batch(values, emitted)
        self._ctx = ctx
        if erased and self._views is not None:
            self._views.erase(self._key)  # (a new profile after it has a view again)
            self._decided = []
        self._account(len(values), emitted)
        if "due" in asked:  # (a cold customer's deadline: on time as a timer)
            outputs, _discard = self._wake(watermark)  # (accounted there)
            emitted += outputs
        self._observe(emitted, ingested)
        if self._cold is not None:
            return emitted, self._to_cold(watermark, erased, asked, values)
        return emitted, self._ctx is None

    def _from_cold(self, values: list[Keyed], asked: AbstractSet[WakeKind]) -> None:
        """Bring the customer back from the cold tier when this logic is new and has a
        record or a wake that brings them back (a wake for a customer in memory: what the
        tier still holds of them is stale)."""
        cold = self._cold
        assert cold is not None
        if not self._may_be_cold:
            if "due" in asked or "end" in asked:
                cold.take(self._key, epoch=self._epoch)
            return
        if _only_leaving(values, asked):
            return  # (to leave memory, for someone not in it: nothing to do)
        self._may_be_cold = False
        state = cold.take(self._key, epoch=self._epoch)
        if state is None:
            return
        self._ctx = from_snapshot(state)
        self._rollback.saved(state)
        if self._held is not None:  # (what it holds: told after the batch, `_observe`)
            self._held.snapshotted(len(state))

    def _to_cold(
        self, watermark: float, erased: bool, asked: AbstractSet[WakeKind], values: list[Keyed]
    ) -> bool:
        """After a batch: leave memory for the cold tier if asked and idle long enough,
        or seen longest ago of those in memory when the hot set is full; say an erasure
        or an ended context to it. Returns whether to discard the logic."""
        cold = self._cold
        assert cold is not None
        ctx = self._ctx
        if ctx is None:
            if erased or not _only_leaving(values, asked):
                cold.gone(self._key, epoch=self._epoch)
            cold.let_go(self._key)
            return True
        if erased:
            cold.gone(self._key, epoch=self._epoch)  # (an erasure: once durable, every byte)
        if not asked or asked == {"end"}:
            return False
        idle = cold.idle_deadline(ctx)
        if (
            idle is not None
            and (idle <= watermark or ("full" in asked and _watched_for(values, idle)))
            and self._leave(ctx)
        ):
            return True
        self._watched = False  # (not idle yet: watched again from its new idle time)
        return False

    def _leave(self, ctx: CustomerContext) -> bool:
        """Write the customer to the cold tier and let the logic go (False: they stay)."""
        cold = self._cold
        assert cold is not None
        state = to_snapshot(ctx)
        if not cold.leave(self._key, state, epoch=self._epoch, due=self._step.next_deadline(ctx)):
            return False
        if self._views is not None:  # (a discarded logic is not snapshotted)
            self._write_view(ctx, self._views)
        self._ctx = None
        if self._held is not None:
            self._held.discarded()
        return True

    def _step_batch(
        self, values: list[Keyed], emitted: list[StepOutput]
    ) -> tuple[CustomerContext | None, bool]:
        """Fold the batch's events; returns the context and whether one erased it."""
        step = self._step
        ctx = self._ctx
        rollback = self._rollback
        since = rollback.since
        made = step.keys_made()
        erased = False
        for key, event, _stamp in values:
            if isinstance(event, Wake):
                continue
            folded_before = -1 if ctx is None else ctx.events
            try:
                after, outputs = step.on_event(key, ctx, event)
                if made:  # keys made: kept, so that a rollback makes the same ones
                    rollback.keys += made
                    made.clear()
            except BadInput as exc:  # refused before the context was touched
                emitted.append(_refused(exc.reason, exc.detail, event))
                continue
            except Exception as exc:  # one record never stops the flow
                made.clear()  # (the failed record's)
                ctx = rollback.restore(step)
                emitted.append(_refused("fold_failed", f"{type(exc).__name__}: {exc}", event))
                logger.warning(
                    "a %s event failed to fold (%s); the customer's context is kept as before",
                    event.type,
                    type(exc).__name__,
                )
                continue
            if (
                (ctx is None or ctx.erased_at is not None)
                and after is not None
                and _created(ctx, after)
            ):
                _CREATED("known" if after.known else "anonymous").inc()
            ctx = after
            if outputs:
                emitted.extend(outputs)
            kind_of_event = event.type
            if ctx is None or kind_of_event == "erase":
                erased = True
                rollback.saved(None if ctx is None else to_snapshot(ctx))
                if (
                    kind_of_event == "erase"
                    and event.to is None
                    and not key.startswith(ANONYMOUS_PREFIX)
                ):
                    metrics.ERASURES.inc()  # their devices go with them
                continue
            since.append((key, event))  # (the rollback's bookkeeping, inline: every event)
            if len(since) > _Rollback.REDO:
                rollback.saved(to_snapshot(ctx))
            if (
                ctx.events == folded_before
                and ctx.alias_to is None
                and kind_of_event not in _NOT_FOLDED
                and not (ctx.held and ctx.held[-1] is event)  # it waits for a login's answer
                and not (ctx.unopened and ctx.unopened[-1] is event)  # ... or for a key
            ):
                metrics.DUPLICATE_EVENTS.inc()
        return ctx, erased

    def on_notify(self) -> tuple[Iterable[StepOutput], bool]:
        outputs, discard = self._wake(self._clock.watermark)
        self._observe(outputs, None)
        return outputs, discard

    def _known(self, ctx: CustomerContext) -> bool:
        """Whether this logic knows its state key (a resumed one that has had no record
        yet: the context's pseudonym, when it has one)."""
        if not self._key:
            self._key = ctx.pseudonym
        return bool(self._key)

    def on_eof(self) -> tuple[Iterable[StepOutput], bool]:
        clock = self._clock
        # A stop is not the input's end; and a resumed finished run emitted its end before.
        if clock.stop.requested or clock.resumed_after_end:
            return [], self._ctx is None
        released: list[StepOutput] = []
        if self._ctx is not None and self._ctx.awaiting is not None:
            try:
                with self._models_lock:
                    released += self._step.release(self._ctx)  # no answer will come now
                    self._settled()
            except Exception as exc:  # what waited never stops the flow either
                self._failed("what waited for a login's answer", exc)
        outputs, discard = self._wake(clock.at_end())
        outputs = [*released, *outputs]
        if self._ctx is not None:
            # Where this customer is when the input ends, for the contact-point map.
            outputs = [*outputs, *in_flight(self._ctx)]
        self._observe(outputs, None)
        return outputs, discard

    def notify_at(self) -> datetime | None:
        cold = self._cold
        if cold is not None and not self._watched and self._ctx is not None:
            idle = cold.idle_deadline(self._ctx)  # (the tier asks when it passes)
            if idle is not None and self._known(self._ctx):
                cold.watch(self._key, idle)
                self._watched = True
        if not self._timers:
            return None
        due = self.deadline()
        return None if due is None else datetime.fromtimestamp(self._clock.wake_at(due), UTC)

    def deadline(self) -> float | None:
        """When (event time) this customer's timer is due: what `notify_at` asks bytewax
        to wake them for (None: no timer; one that failed is not asked again)."""
        due = self._step.next_deadline(self._ctx)
        return None if due is None or due == self._failed_due else due

    def snapshot(self) -> bytes:
        assert self._ctx is not None  # a discarded logic is never snapshotted
        if self._cold is not None:
            # A take of this epoch is written before bytewax keeps the epoch: a logic
            # that took is snapshotted (one discarded since wrote the store itself).
            self._cold.flush()
        if self._views is not None:
            self._write_view(self._ctx, self._views)
        started = time.perf_counter()
        state = to_snapshot(self._ctx)
        self._rollback.saved(state)
        if self._held is not None:
            self._held.snapshotted(len(state))
            metrics.SNAPSHOT_SECONDS.inc(time.perf_counter() - started)
            metrics.SNAPSHOTS.inc()
            metrics.LAST_SNAPSHOT.set(time.time())
        return state

    def _write_view(self, ctx: CustomerContext, views: ContextViewStore) -> None:
        """Where an epoch ends: the customer's view, for other processes to read."""
        if not self._known(ctx):
            return
        decided = self._decided if self._decided is not None else self._earlier(views)
        view = view_of(ctx, decided, watermark=self._clock.watermark, written_at=time.time())
        if view is not None:
            views.write(view)

    def _earlier(self, views: ContextViewStore) -> list[DecisionView]:
        """The decisions the view held when this logic was made (resumed, or back from
        the cold tier): kept, as the logic's own list starts empty."""
        earlier = views.get(self._key) if self._key else None
        self._decided = list(earlier.decisions) if earlier is not None else []
        return self._decided

    def _remember(self, outputs: list[StepOutput], views: ContextViewStore) -> None:
        new = [decision_view(o) for o in outputs if type(o) is Decision]
        if new:
            decided = self._decided if self._decided is not None else self._earlier(views)
            latest = sorted([*new, *decided], key=lambda d: d.at, reverse=True)
            self._decided = latest[:DECISIONS_KEPT]

    def _observe(self, outputs: list[StepOutput], ingested: float | None) -> None:
        """Tell the operators' gauges what the key holds now, and what its outputs took."""
        if self._views is not None and outputs:
            self._remember(outputs, self._views)
        held = self._held
        if held is None:
            return
        ctx = self._ctx
        if ctx is None:
            held.discarded()
        else:
            held.holds(ctx)
        if outputs:
            policies = self._step.decisions.policies
            took(outputs, ingested, lambda: ctx is not None and policies.in_holdout(ctx.key))

    def _wake(self, now: float) -> tuple[list[StepOutput], bool]:
        if self._ctx is None:
            return [], True
        if self._step.expired(self._ctx, now):  # an erasure's tombstone, kept long enough
            if self._cold is not None and self._known(self._ctx):
                self._cold.gone(self._key, epoch=self._epoch)
                self._cold.let_go(self._key)
            self._ctx = None
            self._rollback.saved(None)
            return [], True
        try:
            with self._models_lock:
                outputs: list[StepOutput] = list(self._step.on_time(self._ctx, now))
                if outputs or self._step.keys_made():  # (most wakes change nothing)
                    self._settled()
        except Exception as exc:  # a timer never stops the flow either
            self._failed_due = self._step.next_deadline(self._ctx)
            self._failed("a customer's timer", exc)
            return [], self._ctx is None
        self._account(0, outputs)
        return outputs, False

    def _settled(self) -> None:
        """What time did to the context (outside any event: a timer, the input's end) is
        where a rollback starts from, with the keys it made."""
        self._step.keys_made().clear()
        self._rollback.saved(None if self._ctx is None else to_snapshot(self._ctx))

    def _failed(self, what: str, exc: Exception) -> None:
        with self._models_lock:
            self._step.keys_made().clear()  # (the failed call's)
            self._ctx = self._rollback.restore(self._step)
        metrics.DEAD_LETTERS.labels("fold_failed").inc()
        logger.warning("%s failed (%s); the context is kept as before", what, type(exc).__name__)

    def _account(self, consumed: int, emitted: Sequence[StepOutput]) -> None:
        ledger = self._ledger
        if ledger is None:
            return
        if not self._shadow:
            back = examples = 0
            for output in emitted:
                if type(output) is Example:
                    examples += 1
                elif _comes_back(ledger, output):
                    back += 1
            ledger.emitted(back, examples)
        ledger.settled(consumed)


class _Rollback:
    """What puts a context back as it was before a record the step failed on.

    The step changes a context in place, and copying it before every event would
    cost more than the fold's own work. Instead it keeps the context's last
    snapshot bytes and the events folded since (at most `REDO` of them), and
    rebuilds by folding those again; what that second fold emits was already
    emitted and is dropped. Only the failure path pays for this: bytewax asks for a
    snapshot at every epoch's end (recovery or not), so the events since are few, and
    a customer with more than `REDO` of them in one epoch is snapshotted here.
    The customer step appends to `since` itself (one call less per event).
    """

    REDO = 256

    def __init__(self, state: bytes | None) -> None:
        self._state = state
        self.since: list[tuple[str, Event]] = []
        #: The keys the step made while folding `since` (random: made again, they would
        #: differ from what the vault and the customer's devices hold).
        self.keys: list[bytes] = []

    def saved(self, state: bytes | None) -> None:
        """The context is now these bytes (None: no context); nothing folded since."""
        self._state = state
        self.since.clear()
        self.keys.clear()

    def restore(self, step: CustomerStep) -> CustomerContext | None:
        ctx = from_snapshot(self._state) if self._state is not None else None
        kept: list[tuple[str, Event]] = []
        made = step.keys_made()
        with step.reusing(self.keys):
            for key, event in self.since:
                try:
                    ctx, _outputs = step.on_event(key, ctx, event)
                except Exception:  # refused now: left out
                    continue
                kept.append((key, event))
        self.since[:] = kept
        self.keys[:] = made
        made.clear()
        return ctx


def _only_leaving(values: list[Keyed], asked: AbstractSet[WakeKind]) -> bool:
    """Whether a batch only asks its customer to leave memory (no record, no other wake)."""
    return bool(asked) and asked <= LEAVING and all(type(v[1]) is Wake for v in values)


def _watched_for(values: list[Keyed], idle: float) -> bool:
    """Whether a "full" wake of the batch is for this idle time: nothing was seen of the
    customer since the tier watched them, so they are the least recently seen."""
    return any(type(v[1]) is Wake and v[1].kind == "full" and v[1].idle == idle for v in values)


def _created(before: CustomerContext | None, after: CustomerContext) -> bool:
    """Whether a step made a context where there was none (or only a tombstone)."""
    return (before is None or is_tombstone(before)) and not is_tombstone(after)


def _refused(reason: DeadLetterReason, detail: str, event: Event) -> DeadLetter:
    """The dead letter of a record the customer step could not use: the decoded event,
    re-encoded (the record's source and offset stay with the decode step)."""
    metrics.DEAD_LETTERS.labels(reason).inc()
    return dead_letter(reason, f"event {event.event_id!r}: {detail}", encode(event), "customer")


def _comes_back(ledger: FlowLedger, output: StepOutput) -> bool:
    """Whether the input reads this output back (so the next round waits for it)."""
    if isinstance(output, Event):
        return True
    return isinstance(output, Action) and ledger.fed_back(action_topic(output.channel))
