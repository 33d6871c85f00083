"""One event (or one tick of time) through the customer step.

fold → sentiment → journeys → segments → decisions, as a pure function of
(key, context, event), so the embedded run, the Kafka run and a replay all
execute exactly this. Identity is handled here too: an anonymous visitor who
identifies becomes an alias that forwards the device's later anonymous events to
the customer through the events topic (the dataflow has no cycle). Their context
goes the same way, sealed to the customer: the customer's login sends the device a
`handover_request` with the public half of its handover key, and the device answers
with a `profile_merge` that only the customer's state can open, so erasing the
customer leaves no readable copy of it on the topic.

Redeliveries: an event id is folded once. Each customer remembers the ids folded
within the redelivery horizon of their latest event time; an event older than that
(a redelivery of it could no longer be recognised) is refused, `stale`. An alias keeps
the ids its visitor folded, so a redelivery of those is not forwarded to be folded again.

Erasure: an `erase` leaves a tombstone (that the key was erased, and when; nothing
else) and sends an `erase` to every device of the customer. For the redelivery horizon
after it, the erased key folds nothing as old as the erasure and nothing that comes
from a device (forwarded, in flight, or a merge), so no event in flight brings the
customer back; an event from the customer's own channels after the erasure starts a
fresh profile, under the same rule until the horizon has passed. The tombstone is
dropped once the horizon has passed (`expired`).
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial

import msgspec

from operators import basis_packing, sealing
from operators.decide import DecisionMaker, erased_reply
from operators.identity import LoopSeal, instance_name, pseudonym, visitor_key
from operators.ids import decision_id, derived_event_id, transition_id
from operators.intent import intent_features
from operators.journeys import JourneyTracker
from operators.models import (
    INTENT,
    INTENT_CONFIDENCE,
    INTENT_MARGIN,
    NEXT_STEP,
    PROPENSITY,
    ModelSet,
    Predictors,
    propensity_features,
    recent_path,
)
from operators.per_thread import PerThread
from operators.playbook import CompiledPlaybook
from operators.published import Published
from operators.segments import SegmentEvaluator
from operators.sentiment import event_sentiment, observe
from schemas.action import Action
from schemas.audience import AudienceChange, Tombstone
from schemas.codec import BadInput, encode
from schemas.decision import Decision, DecisionBasis, DecisionInput, Trigger
from schemas.event import ANONYMOUS_PREFIX, Event, Forward, HandoverRequest, ProfileMerge
from schemas.journey import IntentTransition, JourneyTransition
from schemas.learning import Example
from schemas.playbook import seconds
from state.context import (
    DEFAULT_REDELIVERY_HORIZON,
    MAX_DEVICE_KEYS,
    MAX_SEEN,
    MAX_UNOPENED,
    CustomerContext,
    Handed,
    Seen,
    SentAction,
    absorb_visitor,
    event_digest,
    fold,
    forget,
    from_snapshot,
    is_tombstone,
    new_context,
    owned,
    recall,
    remember,
    to_snapshot,
    tombstone,
)
from state.key_vault import CustomerKey, InstanceName, KeyDestroyed

_BASIS = msgspec.msgpack.Encoder()

#: Outcomes that settle what an action taught the propensity model (which predicts
#: conversion); anything else is settled as "no" when the attribution window ends.
_LABELLED_OUTCOMES = frozenset({"converted", "dismissed"})

#: How long (event time) a customer waits for a device's answer to a login before folding
#: what arrived meanwhile without it; and how many events it holds at most. Every device
#: answers, so these bound a failure, not the usual case.
MERGE_WAIT = 86400.0
MAX_HELD = 64

#: Outputs that name a customer (by pseudonym, `customer`).
_NAMING = (JourneyTransition, IntentTransition, AudienceChange, Decision, Action)

#: Outputs: transitions, audience changes, decisions (with their inputs), actions,
#: tombstones, examples for the models, Events for the events topic (merges,
#: forwards, erasures of linked devices), and customers' keys made and destroyed.
Output = (
    JourneyTransition
    | IntentTransition
    | AudienceChange
    | Tombstone
    | Decision
    | DecisionInput
    | Action
    | Example
    | Event
    | CustomerKey
    | KeyDestroyed
    | InstanceName
)


class CustomerStep:
    """Applies events and time to one customer's context and says what to emit."""

    def __init__(
        self,
        playbook: CompiledPlaybook,
        models: ModelSet | None = None,
        predictors: Predictors | None = None,
        *,
        record_inputs: bool = False,
        seal: LoopSeal | None = None,
        redelivery_horizon: float = DEFAULT_REDELIVERY_HORIZON,
        new_secret: Callable[[], bytes] = sealing.new_secret,
        handover_keys: sealing.HandoverKeys | None = None,
        published: Published | None = None,
        pseudonym_of: Callable[[str], str] | None = None,
    ) -> None:
        """`models`: the online models, which learn from the `Example`s this step emits
        (the caller feeds them); `predictors`: what decisions ask (the models by
        default; an oracle or a random policy in evaluations). Neither: rules alone.
        `record_inputs`: emit each decision's `DecisionInput`, so it can be re-run.
        `seal`: signs the loop's records this step writes and checks those it reads (the
        deployment's secret; a lab run without one signs under an empty key).
        `redelivery_horizon`: seconds of event time within which a redelivery is
        recognised (and an erased key stays a tombstone). `new_secret`: makes a
        customer's key, under which their decisions' inputs are sealed. `handover_keys`:
        the handover pairs kept from a login's request to its answer. `published`:
        what the run before a crash published, which its replay repeats
        (`operators.published`). `pseudonym_of`: what the records name a customer key
        by (the flow's state key; by default the pseudonym under `seal`'s secret)."""
        if not redelivery_horizon > 0:
            raise ValueError(f"redelivery horizon {redelivery_horizon!r}: must be positive")
        self.playbook = playbook
        self._horizon = redelivery_horizon
        self._seal = seal if seal is not None else LoopSeal(b"")
        self.pseudonym_of = pseudonym_of or partial(pseudonym, self._seal.secret)
        self._new_secret = new_secret
        self._key_logs = PerThread(_KeyLog)
        self._handover_keys = handover_keys if handover_keys is not None else sealing.HandoverKeys()
        self._channels = frozenset(playbook.channels)
        self.models = models
        self.published = published
        self.predictors = predictors = predictors if predictors is not None else models
        self.journeys = JourneyTracker(playbook, self.pseudonym_of)
        self.segments = SegmentEvaluator(playbook)
        self.decisions = DecisionMaker(
            playbook,
            propensity=predictors.propensity if predictors else None,
            next_step=predictors.next_step if predictors else None,
            intent=predictors.intent if predictors else None,
            model_version=predictors.version if predictors else None,
            record_inputs=record_inputs,
            published=published,
            pseudonym_of=self.pseudonym_of,
        )
        self._intent_of = {j.name: j.intent for j in playbook.journeys if j.intent}
        self._on_intent = any(t.intent_changed for a in playbook.actions for t in a.triggers)
        self._attribution_s = seconds(playbook.policies.attribution)

    # ------------------------------------------------------------------ events
    def on_event(
        self, key: str, ctx: CustomerContext | None, event: Event
    ) -> tuple[CustomerContext | None, list[Output]]:
        """Return the new context (None: nothing to keep) and the outputs, in order.

        Raises BadInput, before the context is touched, for an event it refuses:
        a merge Wayfinder did not sign, a request no channel of the playbook can answer,
        an event older than the redelivery horizon allows to check (`stale`).
        A redelivery, and an event an erased key does not take, are dropped: the
        context is returned as it was, with no outputs. A record of the loop (addressed
        `to` a state) names nobody: `key` is the context's own (empty: none yet).
        """
        if event.to is not None:
            key = ctx.key if ctx is not None else ""
        upgraded = ctx is not None and self._upgrade(ctx)
        after, outputs = self._on_event(key, ctx, event)
        if after is not None and (outputs or upgraded):
            self._in_vault(after, outputs, upgraded)
        return after, outputs

    def _upgrade(self, ctx: CustomerContext) -> bool:
        """Name a context of an older release's snapshot (it had no pseudonym); True if
        it was one. An alias of an older release named its customer by id: by pseudonym
        now (it has no key to seal its forwards under: they go unsealed until the next
        login)."""
        if ctx.alias_of is not None:
            ctx.alias_to = self.pseudonym_of(ctx.alias_of)
            ctx.alias_of = None
        if ctx.pseudonym or not ctx.key:
            return False
        ctx.pseudonym = self.pseudonym_of(ctx.key)
        return True

    def _in_vault(self, ctx: CustomerContext, outputs: list[Output], upgraded: bool) -> None:
        """Give the key vault the customer's key (and with it their id) when a record
        first names them, and each journey instance's value when a transition first names
        it (`entered`): consumers resolve the pseudonyms there, until the erasure. What an
        older release put there is given again (its entries had no ids)."""
        if not ctx.key:
            return
        pseudonym = ctx.pseudonym
        tokens = {
            o.instance
            for o in outputs
            if type(o) is JourneyTransition
            and o.kind == "entered"
            and o.instance is not None
            and o.customer == pseudonym
        }
        if tokens or upgraded:
            for inst in ctx.journeys:
                if inst.key and (
                    upgraded or self.pseudonym_of(instance_name(ctx.key, inst.key)) in tokens
                ):
                    outputs.append(InstanceName(ctx.key, inst.key))
        if ctx.secret:
            if upgraded:
                outputs.append(CustomerKey(ctx.key, ctx.secret))
            return
        for output in outputs:
            if isinstance(output, _NAMING) and output.customer == pseudonym:
                self._secret_of(ctx, outputs)
                return

    def _on_event(
        self, key: str, ctx: CustomerContext | None, event: Event
    ) -> tuple[CustomerContext | None, list[Output]]:
        kind = event.type
        if event.to is not None:
            self._require_signature(event)
        if kind == "decision_request" and event.channel not in self._channels:
            raise BadInput(
                "unknown_channel",
                f"a decision request on channel {event.channel!r}, which has no action topic",
            )
        if kind == "erase":
            return self._erase(key, ctx, event)
        if kind == "handover_request":
            return self._answer(key, ctx, event)
        if ctx is not None and ctx.awaiting is not None:
            return self._while_awaiting(key, ctx, event)
        ts = event.ts.timestamp()
        erased_at = None
        if ctx is not None and ctx.erased_at is not None:
            erased_at = ctx.erased_at
            if ts >= erased_at + self._horizon:
                erased_at = None  # the horizon has passed: the key is like any other
            elif ts <= erased_at or event.anonymous_id is not None or event.to is not None:
                return ctx, self._unlinked(key, event)
            if is_tombstone(ctx):
                ctx = None  # a new profile, with nothing from before the erasure
        if event.to is not None:  # a merge or a forward, for a customer
            if ctx is None:
                return ctx, []  # nobody here asked for it
            if kind == "forward":
                return self._forwarded(ctx, event)
            return self._merge(key, ctx, event, ts)
        if key.startswith(ANONYMOUS_PREFIX):
            if kind == "identify":
                assert event.customer_id is not None  # identify always carries both ids
                customer = self.pseudonym_of(event.customer_id)
                device = ctx.pseudonym if ctx is not None else self.pseudonym_of(key)
                return self._identified(key, device, ctx, event.event_id, ts, customer)
            if ctx is not None and ctx.alias_to is not None:
                return self._forward(ctx, event, ts)  # (never the loop's own records)

        fresh = ctx is None
        ctx, digest = self._admitted(key, ctx, event, ts)
        if not digest:  # a redelivery (None), or too old to tell (empty)
            return self._not_folded(ctx, event, ts, digest)
        if fresh:
            ctx.erased_at = erased_at
        outputs = self._tick(ctx, ts)
        learning = self.models is not None and event.touchpoint is not None
        before = recent_path(ctx) if learning else ()  # the path the next step follows
        fold(ctx, event, self.playbook.profile_keys, digest=digest, horizon=self._horizon)
        if ctx.erased_at is not None and ctx.last_seen >= ctx.erased_at + self._horizon:
            ctx.erased_at = None
        sample = event_sentiment(event.text, event.score)
        if sample is not None:
            observe(ctx.sentiment, sample, ts)
        transitions = self.journeys.on_event(ctx, event, sample)
        changes = self.segments.update(ctx, ts, event.event_id, event)
        outputs += transitions
        outputs += changes
        changed = None
        if self.predictors is not None:
            changed = self._learn_and_predict(ctx, event, ts, before, transitions, outputs)
        if self.decisions.wants(event):
            self._decide(ctx, Trigger.of_event(event), outputs)
        if changed is not None and self._on_intent:
            self._decide(ctx, Trigger.of_intent(changed), outputs)
        self._react(ctx, transitions, changes, outputs)
        if kind == "identify" and event.anonymous_id is not None:
            self._ask_device(ctx, event, ts, outputs)
        return ctx, outputs

    # ------------------------------------------------------------------ logins
    def _ask_device(
        self, ctx: CustomerContext, event: Event, ts: float, outputs: list[Output]
    ) -> None:
        """After a login, ask the device for its context, to be sealed to this
        customer's handover key, and wait for the answer (unless it was folded before:
        a login redelivered)."""
        public = self._handover_keys.public(self._secret_of(ctx, outputs))
        device = self.pseudonym_of(visitor_key(event))
        answer = derived_event_id("merge", device, event.event_id)
        if recall(ctx, answer, ts, self._horizon) is None:
            return
        ctx.awaiting = answer
        ctx.awaiting_since = ts
        outputs.append(
            self._seal.signed(
                Event(
                    event_id=derived_event_id("handover", ctx.pseudonym, event.event_id),
                    ts=event.ts,
                    type="handover_request",
                    channel=event.channel,
                    to=device,
                    handover=HandoverRequest(
                        customer=ctx.pseudonym, login_id=event.event_id, public_key=public
                    ),
                )
            )
        )

    def keys_made(self) -> list[bytes]:
        """The keys this step has made in this thread since the list was last emptied:
        the flow's rollback keeps them, to make the same again when it folds a
        customer's events anew (`reusing`)."""
        log = self._key_logs.get()
        if log.made is None:
            log.made = []
        return log.made

    def _new_key(self) -> bytes:
        """A random key (a customer's, a device's for its forwards), or, while `reusing`,
        the next of the keys made before."""
        log = self._key_logs.get()
        key = log.reused.pop(0) if log.reused else self._new_secret()
        if log.made is not None:
            log.made.append(key)
        return key

    @contextmanager
    def reusing(self, keys: list[bytes]) -> Iterator[None]:
        """Make these keys again, in order, before any new one: events folded anew (a
        rollback) make the same keys as the first time, which the vault and other
        states already hold."""
        log = self._key_logs.get()
        log.reused = list(keys)
        try:
            yield
        finally:
            log.reused = []

    def _secret_of(self, ctx: CustomerContext, outputs: list[Output]) -> bytes:
        """The customer's key, made now (and handed to the key sink) if this is its
        first use."""
        if not ctx.secret:
            ctx.secret = self._new_key()
            outputs.append(CustomerKey(ctx.key, ctx.secret))
        return ctx.secret

    def _while_awaiting(
        self, key: str, ctx: CustomerContext, event: Event
    ) -> tuple[CustomerContext | None, list[Output]]:
        """An event for a customer waiting for a device's answer: the answer ends the
        wait (it is folded, then what waited, in order); anything else waits (another
        device's merge too: it came round after what waits), unless the wait has lasted
        MERGE_WAIT of the customer's time or MAX_HELD events."""
        ts = event.ts.timestamp()
        known = recall(ctx, event.event_id, ts, self._horizon)
        if event.type == "profile_merge":
            opened = self._opened(ctx, event)
            if opened is None:
                # Superseded: the copy asked for under this customer's key comes under
                # the same id, and this one never opens. It does not wait either (a copy
                # that waits would stand for that id, and the one that opens be dropped
                # as its redelivery).
                return ctx, []
            if event.event_id == ctx.awaiting:
                held = self._stop_waiting(ctx)
                ctx, outputs = self._merge(key, ctx, event, ts, opened)
                return self._replay(key, ctx, held, outputs)
            if known is None:
                return self._merge(key, ctx, event, ts, opened)  # a copy: its key, no more
        if not known:  # a redelivery, or too old to tell: as it would be without the wait
            return self._not_folded(ctx, event, ts, known)
        if any(w.event_id == event.event_id and w.forward == event.forward for w in ctx.held):
            # A redelivery of what waits (a device's forward sent again by a run resumed
            # after a crash): it neither waits twice nor brings the wait nearer its end.
            # (A forward sealed again under a device key made anew is not one: of the
            # two, only one opens.)
            return ctx, []
        # (Counted by id: a forward sealed again after a crash is one event, not two.)
        if ts > ctx.awaiting_since + MERGE_WAIT or len({e.event_id for e in ctx.held}) >= MAX_HELD:
            released, outputs = self._replay(key, ctx, self._stop_waiting(ctx), [])
            after, more = self.on_event(key, released, event)
            return after, outputs + more
        ctx.held = (*ctx.held, event)
        return ctx, []

    @staticmethod
    def _stop_waiting(ctx: CustomerContext) -> tuple[Event, ...]:
        held, ctx.held = ctx.held, ()
        ctx.awaiting = None
        return held

    def _replay(
        self, key: str, ctx: CustomerContext, held: Iterable[Event], outputs: list[Output]
    ) -> tuple[CustomerContext, list[Output]]:
        """Fold the events that waited, in order. A login among them starts a new wait:
        its answer, if it is among them, is folded next; else the rest wait again."""
        queue = list(held)
        while queue:
            if ctx.awaiting is None:
                event = queue.pop(0)
            else:
                answer = next((e for e in queue if e.event_id == ctx.awaiting), None)
                if answer is None:
                    ctx.held = (*queue, *ctx.held)
                    break
                queue.remove(answer)
                ctx.awaiting = None
                event = answer
            try:
                after, more = self.on_event(key, ctx, event)
            except BadInput:  # checked when it arrived; refused now: left out
                continue
            assert after is ctx  # (erasures never wait: nothing else replaces a context)
            outputs += more
        return ctx, outputs

    def release(self, ctx: CustomerContext) -> list[Output]:
        """The input has ended: fold what waited for an answer that will not come now."""
        if ctx.awaiting is None:
            return []
        _ctx, outputs = self._replay(ctx.key, ctx, self._stop_waiting(ctx), [])
        return outputs

    # ------------------------------------------------------------------ redeliveries
    def _admitted(
        self, key: str, ctx: CustomerContext | None, event: Event, ts: float
    ) -> tuple[CustomerContext, bytes | None]:
        """The context to fold `event` into (a new one for a new key) and the digest of
        its id, as `recall` gives it: None or empty, and it is not folded."""
        if ctx is None:
            return new_context(key, event, self.pseudonym_of(key)), event_digest(event.event_id)
        return ctx, recall(ctx, event.event_id, ts, self._horizon)

    def _not_folded(
        self, ctx: CustomerContext, event: Event, ts: float, known: bytes | None
    ) -> tuple[CustomerContext, list[Output]]:
        """An event `recall` did not give a digest for: a redelivery (None) is dropped;
        one too old to tell is refused (BadInput, `stale`), except that a stale
        `identify` still links its device (so that an erasure reaches the device)."""
        if known is None:
            return ctx, []
        anonymous_id = event.anonymous_id
        if event.type == "identify" and anonymous_id is not None:
            if anonymous_id not in ctx.anonymous_ids:
                ctx.anonymous_ids = (*ctx.anonymous_ids, anonymous_id)
            return ctx, []
        raise self._stale(ctx, ts)

    def _stale(self, ctx: CustomerContext, ts: float) -> BadInput:
        floor = ctx.seen.floor
        if ts <= floor:
            why = (
                f"no later than the oldest of the {MAX_SEEN} event ids this customer keeps "
                f"for recognising redeliveries ({_iso(floor)})"
            )
        else:
            why = (
                f"more than the redelivery horizon ({self._horizon:g} s, "
                f"WAYFINDER_REDELIVERY_HORIZON) before this customer's latest event "
                f"({_iso(ctx.last_seen)})"
            )
        return BadInput(
            "stale",
            f"$.ts {_iso(ts)} is {why}: a redelivery could no longer be recognised, "
            "so it is not folded",
        )

    def _forward(
        self, alias: CustomerContext, event: Event, ts: float
    ) -> tuple[CustomerContext, list[Output]]:
        """A device that identified: its events go to the customer, except redeliveries
        of those its visitor folded before (the customer would fold them again)."""
        seen = alias.seen
        if seen.marks:
            known = recall(alias, event.event_id, ts, self._horizon)
            if not known:
                return self._not_folded(alias, event, ts, known)
            if seen.oldest() < ts - self._horizon:
                forget(seen, ts - self._horizon)  # (an alias folds nothing new)
        self._drop_handed(alias, ts)
        return alias, [self._sealed_forward(alias, event)]

    def _sealed_forward(self, alias: CustomerContext, event: Event) -> Event:
        """A device's event on its way to its customer, sealed under the device's key
        (unsealed only for an alias of an older release, which has none)."""
        body = encode(event)
        key = alias.forward_key
        if key:
            body = sealing.seal(key, event.event_id.encode(), body)
        return self._seal.signed(
            Event(
                event_id=event.event_id,
                ts=event.ts,
                type="forward",
                channel=event.channel,
                to=alias.alias_to,
                forward=Forward(source=alias.pseudonym, event=body, sealed=bool(key)),
            )
        )

    def _forwarded(
        self, ctx: CustomerContext, record: Event
    ) -> tuple[CustomerContext | None, list[Output]]:
        """A device's event, forwarded to this customer: opened with the key the device
        handed over, and folded as the customer's. One that no key this customer holds
        opens waits for the merge that hands the key over (`_await_key`)."""
        forward = record.forward
        assert forward is not None  # validated at decode
        body = forward.event
        if forward.sealed:
            for key in reversed(ctx.device_keys.get(forward.source, ())):
                try:
                    body = sealing.unseal(key, record.event_id.encode(), body)
                    break
                except sealing.Unreadable:
                    continue
            else:
                return ctx, self._await_key(ctx, record)
        try:
            event = _FORWARDED.decode(body)
        except msgspec.MsgspecError as exc:
            raise BadInput("invalid_event", f"a forwarded event: {exc}") from None
        if event.anonymous_id is None or event.to is not None:
            raise BadInput("invalid_event", "a forwarded event that is no device's")
        if ctx.unopened:  # copies sealed under a key lost in a crash: this one stands
            ctx.unopened = tuple(w for w in ctx.unopened if w.event_id != record.event_id)
        event = msgspec.structs.replace(event, customer_id=ctx.key)
        return self._on_event(ctx.key, ctx, event)

    def _await_key(self, ctx: CustomerContext, record: Event) -> list[Output]:
        """Keep a forward no key here opens until its device's key comes (`_merge`): when
        the loop lags behind the input, a device's events can come round before the
        merge that hands it over. One whose event was folded already (a copy sealed
        under a key lost in a crash) is dropped; more than MAX_UNOPENED is refused."""
        if recall(ctx, record.event_id, record.ts.timestamp(), self._horizon) is None:
            return []
        waiting = ctx.unopened
        if any(w.event_id == record.event_id and w.forward == record.forward for w in waiting):
            return []  # a redelivery of one that waits
        if len(waiting) >= MAX_UNOPENED:
            raise BadInput(
                "no_key",
                f"a device's forward that no key of its customer opens, with {MAX_UNOPENED} "
                "waiting for their device's key already",
            )
        ctx.unopened = (*waiting, record)
        return []

    def _open_waiting(self, ctx: CustomerContext, source: str) -> list[Output]:
        """Fold the forwards of device `source` that waited for the key it has just
        handed over, in the order they came (those it does not open wait on)."""
        waiting: list[Event] = []
        still: list[Event] = []
        for record in ctx.unopened:
            mine = record.forward is not None and record.forward.source == source
            (waiting if mine else still).append(record)
        if not waiting:
            return []
        ctx.unopened = tuple(still)
        outputs: list[Output] = []
        for record in waiting:
            try:
                _ctx, more = self._forwarded(ctx, record)
            except BadInput:  # refused now (stale by the time its key came): left out
                continue
            outputs += more
        return outputs

    # ------------------------------------------------------------------ models
    def _learn_and_predict(
        self,
        ctx: CustomerContext,
        event: Event,
        ts: float,
        before: tuple[str, ...],
        transitions: list[JourneyTransition],
        outputs: list[Output],
    ) -> IntentTransition | None:
        """Emit what the models learn from this event, and update the predicted intent
        (returned when it changed)."""
        if self.models is not None:
            outputs += self._examples(ctx, event, ts, before, transitions)
        if transitions or self.journeys.concerns(event):
            # What the customer is after only changes with journey-relevant steps.
            return self._update_intent(ctx, event, ts, outputs)
        return None

    def _examples(
        self,
        ctx: CustomerContext,
        event: Event,
        ts: float,
        before: tuple[str, ...],
        transitions: list[JourneyTransition],
    ) -> list[Output]:
        """Next step from every step, propensity from responses, intent from ended journeys."""
        found: list[Output] = []
        if before and event.touchpoint is not None:
            found.append(Example(NEXT_STEP, event.event_id, event.touchpoint, ts, prefix=before))
        if event.action_id is not None and event.outcome in _LABELLED_OUTCOMES:
            sent = next((s for s in ctx.actions if s.action_id == event.action_id), None)
            if sent is not None and not sent.labelled:
                found.append(self._propensity_example(ctx, sent, event.outcome == "converted"))
        found += self._intent_examples(ctx, transitions, ts)
        return found

    def _intent_examples(
        self, ctx: CustomerContext, transitions: list[JourneyTransition], at: float
    ) -> list[Output]:
        """A resolved journey (completed or abandoned) says what the customer wanted."""
        found: list[Output] = []
        for transition in transitions:
            intent = self._intent_of.get(transition.journey)
            if transition.kind in ("completed", "abandoned") and intent is not None:
                features = intent_features(ctx, resolved=transition.journey)
                found.append(Example(INTENT, transition.transition_id, intent, at, features))
        return found

    def _update_intent(
        self, ctx: CustomerContext, event: Event, ts: float, outputs: list[Output]
    ) -> IntentTransition | None:
        """Announce a change of intent when the new one leads by a clear margin."""
        predictors = self.predictors
        if predictors is None:
            return None
        scores = predictors.intent(ctx)
        ranked = sorted((scores or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        if ranked:
            ctx.intent_scores = {name: round(p, 4) for name, p in ranked}
        published = (
            self.published.intent_change(ctx.pseudonym, event.event_id) if self.published else None
        )
        if published is not None:  # announced before a crash: the same, whatever the models say
            outputs.append(published)
            ctx.intent = published.intent
            return published
        intent = self._lost_intent_change(ctx, ts)
        if intent is None:
            if not ranked:
                return None
            intent, confidence = ranked[0]
            margin = confidence - (ranked[1][1] if len(ranked) > 1 else 0.0)
            if intent == ctx.intent or confidence < INTENT_CONFIDENCE or margin < INTENT_MARGIN:
                return None
        else:
            confidence = dict(ranked).get(intent, 0.0)
            margin = confidence - max((p for i, p in ranked if i != intent), default=0.0)
        change = IntentTransition(
            transition_id=transition_id(ctx.key, "intent", intent, "changed", "", ts),
            customer=ctx.pseudonym,
            intent=intent,
            previous_intent=ctx.intent,
            confidence=round(confidence, 4),
            margin=round(margin, 4),
            at=event.ts,
            trigger_event_id=event.event_id,
            model_version=predictors.version(),
        )
        outputs.append(change)
        ctx.intent = intent
        return change

    def _lost_intent_change(self, ctx: CustomerContext, ts: float) -> str | None:
        """The intent that the run before a crash announced on this event, where only the
        decision it led to was published (a crash can fall between the producer's batches
        for two topics): the change is announced again, whatever the models say now, so
        that the decision is repeated and the context follows it."""
        published = self.published
        if published is None or not published.decided_on_intent(ctx.pseudonym):
            return None
        for intent in self.playbook.intents:
            change_id = transition_id(ctx.key, "intent", intent, "changed", "", ts)
            if published.decision(decision_id(ctx.key, change_id, ts)) is not None:
                return intent
        return None

    def _propensity_example(
        self, ctx: CustomerContext, sent: SentAction, responded: bool
    ) -> Example:
        sent.labelled = True
        return Example(
            PROPENSITY,
            f"{sent.action}|{sent.action_id}",
            "1" if responded else "0",
            sent.at,
            propensity_features(ctx, sent.channel, sent.at),
        )

    def _expired_attributions(self, ctx: CustomerContext, now: float) -> list[Output]:
        """Actions whose attribution window passed with no response: negative examples."""
        if self.models is None or not ctx.actions:
            return []
        window = self._attribution_s
        return [
            self._propensity_example(ctx, sent, False)
            for sent in ctx.actions
            if not sent.labelled and now - sent.at > window and sent.action != "no_action"
        ]

    # ------------------------------------------------------------------ time
    def on_time(self, ctx: CustomerContext, now: float) -> list[Output]:
        """Fire what falls due by `now` (stalls, abandonments) and decide on it.

        Each deadline fires at its own time, whenever the caller gets to it: a timer
        woken late by a busy process gives what an event at that moment would have."""
        if is_tombstone(ctx) or ctx.alias_of is not None or ctx.awaiting is not None:
            # A wait for a login's answer ends with the answer, the customer's own events
            # or the input's end, never with the watermark: the answer comes round the
            # events topic behind whatever backlog is there, however far the watermark
            # has gone meanwhile. What falls due meanwhile fires when it ends, at its time.
            return []
        due = self.journeys.next_deadline(ctx) if ctx.journeys else None
        if due is None or due > now:
            return []
        upgraded = self._upgrade(ctx)
        outputs = self._tick(ctx, due, until=now)
        if outputs or upgraded:
            self._in_vault(ctx, outputs, upgraded)
        return outputs

    def next_deadline(self, ctx: CustomerContext | None) -> float | None:
        """When this customer next needs waking; None holds no timer. A tombstone is
        woken when its horizon has passed, to be dropped (`expired`)."""
        if ctx is None or ctx.alias_of is not None or ctx.awaiting is not None:
            return None  # (see `on_time`)
        if ctx.erased_at is not None and is_tombstone(ctx):
            return ctx.erased_at + self._horizon
        return self.journeys.next_deadline(ctx)

    def expired(self, ctx: CustomerContext | None, now: float) -> bool:
        """Whether the context is a tombstone whose horizon has passed by `now`: nothing
        is left to keep (the caller drops the key's state)."""
        return (
            ctx is not None
            and ctx.erased_at is not None
            and is_tombstone(ctx)
            and now >= ctx.erased_at + self._horizon
        )

    def _tick(self, ctx: CustomerContext, now: float, until: float | None = None) -> list[Output]:
        """What falls due by `until` (default `now`): deadlines one by one at their own
        times, then the attribution windows that `now` closes."""
        outputs: list[Output] = []
        journeys = self.journeys
        last = now if until is None else until
        while ctx.journeys:
            due = journeys.next_deadline(ctx)
            if due is None or due > last:
                break
            transitions = journeys.on_time(ctx, due)
            outputs += transitions
            if self.models is not None:
                outputs += self._intent_examples(ctx, transitions, due)
            self._react(ctx, transitions, [], outputs)
        outputs += self._expired_attributions(ctx, now)
        return outputs

    # ------------------------------------------------------------------ decisions
    def _decide(self, ctx: CustomerContext, trigger: Trigger, outputs: list[Output]) -> None:
        action, decision, basis = self.decisions.decide(ctx, trigger)
        if decision is not None:
            outputs.append(decision)
            if basis is not None:
                outputs.append(self._recorded(ctx, decision, basis, outputs))
        if action is not None:
            outputs.append(action)

    def _recorded(
        self, ctx: CustomerContext, decision: Decision, basis: DecisionBasis, outputs: list[Output]
    ) -> DecisionInput:
        """The decision's input, its basis sealed under the customer's key (made now,
        and handed to the key sink, if this is their first). Compressed first: sealed
        bytes do not compress, and the audit topic is the flow's largest
        (`operators.basis_packing`)."""
        secret = self._secret_of(ctx, outputs)
        published = self.published.decision(decision.decision_id) if self.published else None
        for recorded in published.inputs if published else ():
            if _opens(secret, recorded):
                return recorded  # (under keys all lost in the crash, it is sealed again)
        return DecisionInput(
            decision_id=decision.decision_id,
            customer=decision.customer,
            basis=sealing.seal(
                secret, decision.decision_id.encode(), basis_packing.pack(_BASIS.encode(basis))
            ),
            playbook_version=decision.playbook_version,
            model_version=decision.model_version,
        )

    def _react(
        self,
        ctx: CustomerContext,
        transitions: list[JourneyTransition],
        changes: list[AudienceChange],
        outputs: list[Output],
    ) -> None:
        for transition in transitions:
            if transition.customer == ctx.pseudonym:
                self._decide(ctx, Trigger.of_transition(transition), outputs)
        for change in changes:
            if change.change == "entered":
                trigger = Trigger(
                    trigger_id=change.change_id,
                    type="segment_entered",
                    at=change.at.timestamp(),
                    segment=change.segment,
                    segment_reasons=tuple(change.reasons),
                )
                self._decide(ctx, trigger, outputs)

    # ------------------------------------------------------------------ identity
    def _identified(
        self,
        key: str,
        device: str,
        ctx: CustomerContext | None,
        login_id: str,
        ts: float,
        customer: str,
    ) -> tuple[CustomerContext, list[Output]]:
        """The visitor behind `key` (empty: not known yet; `device`: its pseudonym) logged
        in as `customer` (a pseudonym): become an alias, keeping a copy of the context for
        the customer's handover request (`_answer`), and a new key to seal forwards
        under."""
        if ctx is not None and ctx.alias_to is not None:
            ctx.key = ctx.key or key  # (an alias made by a request that came first)
            if ctx.handed is not None and ctx.handed.login_id == login_id:
                return ctx, []  # its request came first (the order of a resumed run)
            # A device that logged in before: it has nothing more to hand over, and keeps
            # what it handed then for that login's request. Logged in as another customer,
            # it seals under a new key, which only that customer is handed; as the same
            # one, under the same key (the earlier login's answer may come round after
            # this one, and the forwards sealed under it since with it).
            if customer != ctx.alias_to or not ctx.forward_key:
                ctx.alias_to = customer
                ctx.forward_key = self._new_key()
            ctx.last_seen = max(ts, ctx.last_seen)
            return ctx, []
        outputs: list[Output] = []
        context = b""  # the answer of a device with nothing to hand over
        if ctx is not None:
            # The visitor's audiences move to the customer with the merge.
            outputs += self.segments.leave_all(
                ctx, ts, login_id, "identified: now in the customer's profile"
            )
            if ctx.events:
                context = to_snapshot(ctx, copy=True)
        # The alias keeps the ids its visitor folded, so their redeliveries stop here.
        alias = CustomerContext(
            key=key,
            known=False,
            first_seen=ts,
            last_seen=ts if ctx is None else max(ts, ctx.last_seen),
            alias_to=customer,
            forward_key=self._new_key(),
            seen=Seen() if ctx is None else ctx.seen,
            handed=Handed(login_id, ts, context),
            pseudonym=device,
            secret=b"" if ctx is None else ctx.secret,  # (what was sealed under it still opens)
        )
        return alias, outputs

    def _answer(
        self, key: str, ctx: CustomerContext | None, event: Event
    ) -> tuple[CustomerContext | None, list[Output]]:
        """A customer's handover request, at the device: answered with the key the
        device seals its forwards under and the context it handed over at that login,
        sealed to the customer's handover key; or with nothing (the device was erased).
        A request that comes before its login (a resumed run reads the events topic
        and the input in another order) does what the login would."""
        request = event.handover
        assert request is not None and event.to is not None  # validated at decode
        ts = event.ts.timestamp()
        if ctx is not None and ctx.erased_at is not None and ts < ctx.erased_at + self._horizon:
            return ctx, [self._handover(event.to, event, None)]
        outputs: list[Output] = []
        if ctx is None or ctx.alias_to is None:  # as its login would, which comes later
            ctx, outputs = self._identified(
                key, event.to, ctx, request.login_id, ts, request.customer
            )
        self._drop_handed(ctx, ts)
        handed = ctx.handed
        context = (
            handed.context if handed is not None and handed.login_id == request.login_id else b""
        )
        # The key for forwards goes to the customer the device now belongs to, and only
        # to them (a late request of an earlier login's customer gets none).
        key_for = ctx.forward_key if request.customer == ctx.alias_to else None
        outputs.append(self._handover(event.to, event, (key_for, context)))
        return ctx, outputs

    def _opened(self, ctx: CustomerContext, event: Event) -> bytes | None:
        """What a merge hands over, opened by the customer's handover key; None for a
        merge that answers a request under a key this customer no longer holds (made in
        a run that crashed before its snapshot, whose login, replayed, asked again under
        a new one): nobody can open it, and the answer to the new request, under the
        same id, comes instead. It is superseded, not bad input; one sealed to the
        customer's key that does not open is (Unreadable)."""
        merge = event.merge
        assert merge is not None  # validated at decode
        if not ctx.secret:
            return None
        try:
            return self._handover_keys.open(ctx.secret, event.event_id.encode(), merge.context)
        except sealing.Unreadable:
            if merge.sealed_to != self._handover_keys.public(ctx.secret):
                return None
            raise

    def _drop_handed(self, alias: CustomerContext, now: float) -> None:
        """An alias keeps what it handed over for the redelivery horizon of its own
        event time after the login, as it keeps the ids its visitor folded: a request
        asked again after a crash comes behind whatever backlog the topic holds."""
        if alias.handed is not None and now >= alias.handed.at + self._horizon:
            alias.handed = None

    def _require_signature(self, event: Event) -> None:
        """Refuse a record addressed to a state (only Wayfinder writes them: requests,
        merges, forwards, erasures of devices) that does not carry its signature."""
        if not self._seal.verify(event):
            raise BadInput("forged", f"a {event.type} without Wayfinder's signature")

    def _handover(
        self, device: str, request: Event, handed: tuple[bytes | None, bytes] | None
    ) -> Event:
        """The device's answer to a handover request (a profile merge), sealed to the
        customer: its key for forwards then its context (`handed`), or nothing."""
        asked = request.handover
        assert asked is not None
        merge_id = derived_event_id("merge", device, asked.login_id)
        plain = b""
        if handed is not None and (handed[0] or handed[1]):
            plain = (handed[0] or bytes(sealing.SECRET_BYTES)) + handed[1]
        # Sealed even when empty: what is on the topic says nothing of whether the device
        # had a history, and a key no point can be agreed with fails here, for any device.
        context = sealing.seal_to(asked.public_key, merge_id.encode(), plain)
        return self._seal.signed(
            Event(
                event_id=merge_id,
                ts=request.ts,
                type="profile_merge",
                channel=request.channel,
                to=asked.customer,
                merge=ProfileMerge(
                    source=device,
                    login_id=asked.login_id,
                    sealed_to=asked.public_key,
                    context=context,
                ),
            )
        )

    def _merge(
        self, key: str, ctx: CustomerContext, event: Event, ts: float, opened: bytes | None = None
    ) -> tuple[CustomerContext, list[Output]]:
        """A device's answer to this customer's login, its signature checked (`opened`:
        already opened): the key its forwards are sealed under, and its visitor's context
        if it had one."""
        known = recall(ctx, event.event_id, ts, self._horizon)
        if opened is None:
            opened = self._opened(ctx, event)
            if opened is None:  # superseded (sealed to a key this customer no longer has)
                return ctx, []
        merge = event.merge
        assert merge is not None  # validated at decode
        keyed = False
        if opened:
            device_key, opened = opened[: sealing.SECRET_BYTES], opened[sealing.SECRET_BYTES :]
            if any(device_key):
                device_keys = ctx.device_keys = owned(ctx.device_keys)
                keys = device_keys.setdefault(merge.source, [])
                if device_key not in keys:
                    keys.append(device_key)
                    del keys[:-MAX_DEVICE_KEYS]
                    keyed = True
        ctx, outputs = self._handed_over(ctx, event, ts, known, opened)
        if keyed and ctx.unopened:
            outputs += self._open_waiting(ctx, merge.source)
        return ctx, outputs

    def _handed_over(
        self, ctx: CustomerContext, event: Event, ts: float, known: bytes | None, opened: bytes
    ) -> tuple[CustomerContext, list[Output]]:
        """What a merge's visitor context (`opened`, without the device's key) brings the
        customer: nothing for a redelivery (`known` None) or a device with no history."""
        if known is None:
            # A redelivery: only its key may be new. A device resumed after a crash
            # from before its login made a new key, and answers under the merge's id
            # again; the first copy folded may have carried the key it made before.
            return ctx, []
        if not opened:  # the device had nothing to hand over: remembered, no more
            if known:
                remember(ctx.seen, known, ctx.last_seen, self._horizon)
            return ctx, []
        if not known:  # a redelivery (None), or too old to tell (empty)
            return self._not_folded(ctx, event, ts, known)
        visitor = from_snapshot(opened)
        visitor.pseudonym = visitor.pseudonym or self.pseudonym_of(visitor.key)
        if _already_merged(ctx, visitor):
            return ctx, []
        outputs = self._tick(ctx, ts)
        absorb_visitor(ctx, visitor)
        remember(ctx.seen, known, ctx.last_seen, self._horizon)
        transitions = self.journeys.absorb(ctx, visitor, event.event_id, ts)
        changes = self.segments.update(ctx, ts, event.event_id)
        outputs += transitions
        outputs += changes
        self._react(ctx, transitions, changes, outputs)
        return ctx, outputs

    # ------------------------------------------------------------------ erasure
    def _erase(
        self, key: str, ctx: CustomerContext | None, event: Event
    ) -> tuple[CustomerContext, list[Output]]:
        """Forget the customer, keeping a tombstone; tell consumers (a Tombstone) and
        every device linked to the customer (an erase each, round the events topic).

        The tombstone's time is the erasure's, or the latest event folded if that is
        later: nothing folded before the erasure can start a profile again.
        """
        erased_at = event.ts.timestamp()
        if ctx is not None:
            erased_at = max(erased_at, ctx.last_seen, ctx.erased_at or erased_at)
        erased = event.to or self.pseudonym_of(key)  # (a device's erasure names it so)
        if ctx is not None and ctx.secret:
            self._handover_keys.forget(ctx.secret)  # (the key goes: so does its pair)
        outputs: list[Output] = [
            Tombstone(
                customer=erased,
                erased_at=event.ts.astimezone(UTC),
                trigger_event_id=event.event_id,
            ),
            # Always: a key made in a run that crashed before its snapshot is in the
            # vault, though not in the state recovered.
            KeyDestroyed(erased),
        ]
        if ctx is not None and event.to is None and not key.startswith(ANONYMOUS_PREFIX):
            outputs += (
                self._erase_device(erased, anonymous_id, event)
                for anonymous_id in ctx.anonymous_ids
            )
        if ctx is not None:  # requests that waited for a login's answer are answered
            for held in ctx.held:
                if held.type == "decision_request":
                    outputs += erased_reply(held, self.playbook.version)
        return tombstone(erased_at), outputs

    def _unlinked(self, key: str, event: Event) -> list[Output]:
        """What an erased key does with an event it does not take: nothing, except that
        a decision request is answered (with nothing), and a device identifying as an
        erased customer is erased too (no alias may outlive its customer's erasure, and
        this one is not among the customer's devices)."""
        if event.type == "decision_request":
            return list(erased_reply(event, self.playbook.version))
        anonymous_id = event.anonymous_id
        if anonymous_id is None or event.type != "identify" or key.startswith(ANONYMOUS_PREFIX):
            return []
        return [self._erase_device(self.pseudonym_of(key), anonymous_id, event)]

    def _erase_device(self, customer: str, anonymous_id: str, event: Event) -> Event:
        """The erase of one of the devices of `customer` (a pseudonym), on behalf of
        `event`, addressed to the device's state by pseudonym."""
        device = self.pseudonym_of(ANONYMOUS_PREFIX + anonymous_id)
        return self._seal.signed(
            Event(
                event_id=derived_event_id("erase", customer, device, event.event_id),
                ts=event.ts,
                type="erase",
                channel=event.channel,
                to=device,
            )
        )


_FORWARDED = msgspec.json.Decoder(Event)


class _KeyLog:
    """The keys a step made, and those it is to make again, of one thread: the workers
    of a process run one step at once (under a shared read lock)."""

    def __init__(self) -> None:
        self.made: list[bytes] | None = None
        self.reused: list[bytes] = []


def _opens(secret: bytes, recorded: DecisionInput) -> bool:
    """Whether a decision's recorded input is sealed under this key."""
    try:
        sealing.unseal(secret, recorded.decision_id.encode(), recorded.basis)
    except sealing.Unreadable:
        return False
    return True


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _already_merged(ctx: CustomerContext, visitor: CustomerContext) -> bool:
    """A merge replayed after recovery must not add the visitor's history twice."""
    if not visitor.interactions:
        return False
    known = set(ctx.interactions.digests())
    return all(digest in known for digest in visitor.interactions.digests())
