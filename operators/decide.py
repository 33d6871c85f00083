"""From a trigger to at most one action, with every candidate audited.

A trigger is an event, a journey transition, a change of predicted intent, a
segment entry or a decision request. Playbook actions whose trigger matches
become candidates; their conditions decide eligibility; contact policies
(operators/policies.py) decide what may be sent and where; the best is chosen by
response score x value x journey priority x business lever. A decision request
always gets a reply: the action, or an explicit `no_action`. The decision record
keeps every candidate, its status and its reasons in words, and the playbook and
model versions.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from msgspec.structs import replace

from operators.conditions import Prefilter
from operators.identity import instance_name
from operators.ids import action_id, decision_id
from operators.journeys import JourneyTracker
from operators.models import Response
from operators.playbook import ActionSpec, CompiledPlaybook, JourneySpec, TriggerSpec
from operators.policies import ContactPolicies
from operators.published import Published, PublishedDecision
from operators.wording import channel_name, clock, span, when
from schemas.action import Action
from schemas.decision import (
    Candidate,
    CandidateStatus,
    Decision,
    DecisionBasis,
    DecisionOutcome,
    SuppressionPolicy,
    Trigger,
)
from schemas.event import Event
from schemas.types import PropertyValue
from state.context import CustomerContext, JourneyInstance, SentAction, record_sent, to_snapshot

#: Scores a candidate: (context, action, channel) -> how likely the customer responds (0-1).
Propensity = Callable[[CustomerContext, ActionSpec, str], Response]
#: Predicts the customer's next contact point: context -> (contact point, confidence).
NextStep = Callable[[CustomerContext], tuple[str, float] | None]
#: What the customer is trying to do: context -> the probability of each intent.
IntentScores = Callable[[CustomerContext], dict[str, float] | None]

NO_ACTION = "no_action"
#: The customer an erased customer's answers name: nobody.
NOBODY = ""


class _IntentNow:
    """The intent scores one decision reads: asked of the model once, when an action that
    needs an intent is considered, so a decision on a stall or a segment entry reads the
    model's view of the context now, not the one left by the customer's last event. They
    stay in the context (and so in the decision's recorded input)."""

    __slots__ = ("_asked", "_ctx", "_predict")

    def __init__(self, ctx: CustomerContext, predict: IntentScores | None) -> None:
        self._ctx, self._predict, self._asked = ctx, predict, predict is None

    def scores(self) -> Mapping[str, float]:
        ctx = self._ctx
        if not self._asked and self._predict is not None:
            self._asked = True
            scores = self._predict(ctx)
            if scores:
                ctx.intent_scores = {name: round(p, 4) for name, p in scores.items()}
        return ctx.intent_scores


@dataclass
class _Verdict:
    action: ActionSpec
    status: CandidateStatus
    score: float
    reasons: list[str]
    journey: JourneySpec | None = None
    channel: str | None = None
    partner_id: str | None = None
    content: dict[str, PropertyValue] = field(default_factory=dict)
    policy: SuppressionPolicy | None = None  # (what suppressed it)


#: What a trigger other than an event names, that an action's trigger can fire on: a
#: journey's transition (journey, kind), a change to an intent, a segment entered.
_Named = tuple[str, str, str]


def _named(trigger: Trigger) -> _Named:
    transition, intent = trigger.transition, trigger.intent
    if transition is not None:
        return ("transition", transition.journey, transition.kind)
    if intent is not None:
        return ("intent", intent.intent, "")
    if trigger.segment is not None:
        return ("segment", trigger.segment, "")
    return ("", "", "")  # (names nothing: no action's trigger fires on it)


def _listening(actions: tuple[ActionSpec, ...]) -> dict[_Named, tuple[ActionSpec, ...]]:
    """The actions each transition, intent change and segment entry can fire (in the
    playbook's order), as `DecisionMaker._fires` finds them: most fire none, and are
    then decided on without looking at any action."""
    listening: dict[_Named, tuple[ActionSpec, ...]] = {}
    for action in actions:
        names: set[_Named] = set()
        for spec in action.triggers:
            if spec.journey is not None:
                names.update(("transition", spec.journey, kind) for kind in spec.transitions)
            names.update(("intent", intent, "") for intent in spec.intent_changed)
            if spec.segment_entered is not None:
                names.add(("segment", spec.segment_entered, ""))
        for name in names:
            listening[name] = (*listening.get(name, ()), action)
    return listening


class DecisionMaker:
    """Turns triggers into decisions with the playbook's actions and policies."""

    def __init__(
        self,
        playbook: CompiledPlaybook,
        *,
        propensity: Propensity | None = None,
        next_step: NextStep | None = None,
        intent: IntentScores | None = None,
        model_version: Callable[[], str | None] | None = None,
        record_inputs: bool = False,
        published: Published | None = None,
        pseudonym_of: Callable[[str], str],
    ) -> None:
        """`record_inputs`: also return what each decision was made from, to re-run it.
        `published`: what the run before a crash published, which a replay repeats.
        `pseudonym_of`: what an action names a journey instance by in its content (its
        token), as the customer step names customers."""
        self.playbook = playbook
        self._pseudonym_of = pseudonym_of
        self.record_inputs = record_inputs
        self.policies = ContactPolicies(playbook)
        self.propensity = propensity
        self.next_step = next_step
        self.intent = intent
        self.model_version = model_version
        self.published = published
        self._actions = {a.name: a for a in playbook.actions}
        self._request_actions = tuple(
            a for a in playbook.actions if any(t.on_request for t in a.triggers)
        )
        self._event_actions = Prefilter(
            [
                (a, [m for t in a.triggers for m in t.event_conditions], frozenset())
                for a in playbook.actions
            ]
        )
        self._named_actions = _listening(playbook.actions)

    def wants(self, event: Event) -> bool:
        """Whether any action could be triggered by this event (cheap, cached)."""
        return event.type == "decision_request" or bool(self._event_actions.relevant(event))

    def decide(
        self, ctx: CustomerContext, trigger: Trigger
    ) -> tuple[Action | None, Decision | None, DecisionBasis | None]:
        """Decide on one trigger (its event already folded): the action, the decision and,
        when recorded, what it was made from; all None if no action applies."""
        request = trigger.event is not None and trigger.event.type == "decision_request"
        if request:
            actions = tuple(a for a in self._request_actions if trigger.channel in a.channels)
        elif trigger.event is not None:
            actions = self._event_actions.relevant(trigger.event)
        else:
            actions = self._named_actions.get(_named(trigger), ())
            if not actions and self.published is None:
                return None, None, None  # (most transitions and entries: no action's)
        verdicts: list[_Verdict] = []
        intent = _IntentNow(ctx, self.intent)
        for candidate in actions:
            verdict = self._consider(ctx, trigger, candidate, intent)
            if verdict is not None:
                verdicts.append(verdict)
        customer = ctx.key
        published = None
        if self.published is not None:  # a replay after a crash
            published = self.published.decision(
                decision_id(customer, trigger.trigger_id, trigger.at)
            )
        if not verdicts and not request and published is None:
            return None, None, None
        if published is None and self.published is not None:
            self.published.went_past()
        dec_id = decision_id(customer, trigger.trigger_id, trigger.at)
        # Considering candidates reads the context; sending (below) changes it.
        context = to_snapshot(ctx, copy=True) if self.record_inputs else None

        sent = [v for v in verdicts if v.status == "sent"]
        best = max(sent, key=lambda v: (v.score, v.action.name)) if sent else None
        if best is not None:
            for v in sent:
                if v is not best:
                    v.status, v.policy = "suppressed", "outranked"
                    v.reasons.append(f"Outranked by {best.action.label}.")
        holdout = best is not None and self.policies.in_holdout(ctx.key)
        if best is not None and holdout:
            best.status = "holdout"
            best.reasons.append(
                f"Not sent: the customer is in the holdout group "
                f"({self.policies.holdout_share:.0%} of customers, by id), so their outcomes "
                "measure the uplift."
            )
            best = None

        model_version = self.model_version() if self.model_version else None
        created_at = datetime.fromtimestamp(trigger.at, UTC)
        action: Action | None = None
        if best is not None:
            assert best.channel is not None  # a verdict is sent only on a channel
            action = _action(ctx, trigger, dec_id, best, best.channel)
        elif request:
            # A decision request is always answered: explicitly with no action.
            why = [f"No action for {channel_name(trigger.channel or '')} now."]
            why += [f"{v.action.label}: {v.reasons[-1]}" for v in verdicts]
            action = no_action_reply(ctx.key, ctx.pseudonym, trigger, dec_id, why)
        outcome: DecisionOutcome
        if holdout:
            outcome = "holdout"
        elif action is not None and action.action != NO_ACTION:
            outcome = "sent"
        elif any(v.status == "suppressed" for v in verdicts):
            outcome = "suppressed"
        else:
            outcome = "no_action"
        decision = Decision(
            decision_id=dec_id,
            customer=ctx.pseudonym,
            trigger_id=trigger.trigger_id,
            trigger_type=trigger.type,
            trigger_channel=trigger.channel,
            created_at=created_at,
            outcome=outcome,
            candidates=[
                Candidate(
                    action=v.action.name,
                    status=v.status,
                    score=round(v.score, 4),
                    reasons=v.reasons,
                    channel=v.channel,
                    journey=v.journey.name if v.journey else None,
                    policy=v.policy,
                )
                for v in verdicts
            ],
            playbook_version=self.playbook.version,
            model_version=model_version,
            action_id=action.action_id if action else None,
            request_id=trigger.request_id,
            holdout=holdout,
        )
        if published is not None:
            action, decision = self._as_published(
                ctx, published, action, decision, trigger, verdicts
            )
        if action is not None and decision.outcome == "sent":
            spec = self._actions.get(action.action)
            if spec is not None:  # (an action of an earlier playbook: no policy counts it)
                record = SentAction(
                    action.action_id, spec.name, action.channel, spec.purpose, trigger.at
                )
                record_sent(ctx, record, self.policies.memory)
        basis = DecisionBasis(trigger, context) if context is not None else None
        return action, decision, basis

    def _as_published(
        self,
        ctx: CustomerContext,
        published: PublishedDecision,
        action: Action | None,
        decision: Decision,
        trigger: Trigger,
        verdicts: list[_Verdict],
    ) -> tuple[Action | None, Decision]:
        """The decision and action the run before a crash published for this trigger,
        where it did, in place of the ones just made (`operators.published`)."""
        if published.decision is None:
            if published.action is not None and (
                action is None or action.action_id != published.action.action_id
            ):
                # The action went out, its decision was lost with the crash: this run
                # decides otherwise. The action stands; the decision says so.
                decision = replace(
                    decision,
                    action_id=published.action.action_id,
                    outcome="sent" if published.action.action != NO_ACTION else decision.outcome,
                )
            return published.action or action, decision
        decision = published.decision
        if published.action is not None or decision.action_id is None:
            return published.action, decision
        if action is not None and action.action_id == decision.action_id:
            return action, decision  # its action was lost with the crash: the same again
        # Lost, and this run would send another: the one the decision names, as this run
        # finds it (its id follows from the trigger and the action's name).
        sent = next(
            (c for c in decision.candidates if c.status == "sent" and c.channel is not None),
            None,
        )
        verdict = next((v for v in verdicts if sent and v.action.name == sent.action), None)
        if sent is None or sent.channel is None or verdict is None:
            return None, decision
        return _action(ctx, trigger, decision.decision_id, verdict, sent.channel), decision

    # ------------------------------------------------------------------ candidates
    def _consider(
        self, ctx: CustomerContext, trigger: Trigger, action: ActionSpec, intent: _IntentNow
    ) -> _Verdict | None:
        """The best verdict over the action's triggers that fire here, or None."""
        fallback: _Verdict | None = None
        for spec in action.triggers:
            if not self._fires(spec, trigger):
                continue
            scope = self._scope(ctx, spec, trigger)
            if scope is None:
                continue
            verdict = self._evaluate(ctx, trigger, action, spec, *scope, intent)
            if verdict.status == "sent":
                return verdict
            fallback = fallback or verdict
        return fallback

    @staticmethod
    def _fires(spec: TriggerSpec, trigger: Trigger) -> bool:
        if trigger.event is not None:
            if trigger.event.type == "decision_request":
                return spec.on_request
            return spec.on_event is not None and spec.on_event(trigger.event)
        if trigger.transition is not None:
            t = trigger.transition
            return t.kind in spec.transitions and t.journey == spec.journey
        if trigger.intent is not None:
            return trigger.intent.intent in spec.intent_changed
        return trigger.segment is not None and spec.segment_entered == trigger.segment

    def _scope(
        self, ctx: CustomerContext, spec: TriggerSpec, trigger: Trigger
    ) -> tuple[JourneySpec | None, JourneyInstance | None] | None:
        """The journey the action is about, if it needs one; None if that journey is not here."""
        if trigger.transition is not None:
            t = trigger.transition
            journey = self.playbook.journey(t.journey)
            return journey, JourneyTracker.find(ctx, t.journey, t.instance or "")
        if spec.journey is not None:
            journey = self.playbook.journey(spec.journey)
            key = None
            if journey.key is not None and trigger.event is not None:
                raw = trigger.event.properties.get(journey.key)
                key = None if raw is None else str(raw)
            inst = JourneyTracker.find(ctx, journey.name, key)
            return None if inst is None else (journey, inst)
        if spec.journey_category is not None:
            open_ones = [
                (self.playbook.journey(i.journey), i)
                for i in ctx.journeys
                if self.playbook.journey(i.journey).category == spec.journey_category
            ]
            if not open_ones:
                return None
            return max(open_ones, key=lambda pair: (pair[0].priority, pair[1].last_at))
        return None, None

    def _evaluate(
        self,
        ctx: CustomerContext,
        trigger: Trigger,
        action: ActionSpec,
        spec: TriggerSpec,
        journey: JourneySpec | None,
        inst: JourneyInstance | None,
        intent: _IntentNow,
    ) -> _Verdict:
        now = trigger.at
        why: list[str] = [self._situation(trigger, journey, inst, now)]
        why_not: list[str] = []

        if spec.value_tiers:
            tier = ctx.value_tier
            if tier is not None and tier in spec.value_tiers:
                why.append(f"{tier.capitalize()}-value customer.")
            else:
                allowed = " or ".join(sorted(spec.value_tiers))
                why_not.append(f"Value tier is {tier or 'unknown'}; this action is for {allowed}.")
        for segment in sorted(spec.segments):
            if segment not in ctx.segments:
                why_not.append(f"Not in segment {segment.replace('_', ' ')}.")
        if spec.stages:
            reached = set(inst.milestones) if inst else set()
            if reached & spec.stages:
                why.append(f"Reached {', '.join(sorted(reached & spec.stages))}.")
            else:
                why_not.append(f"Has not reached {' or '.join(sorted(spec.stages))} yet.")
        if spec.channels_tried:
            self._channels_tried(spec, inst, now, why, why_not)
        if spec.failures_at_least is not None:
            failures = inst.failures if inst else 0
            if failures >= spec.failures_at_least:
                why.append(f"{failures} failures in this journey.")
            else:
                why_not.append(
                    f"{failures} failure(s) in this journey; acts from {spec.failures_at_least}."
                )
        if spec.sentiment_below is not None:
            sentiment = inst.sentiment if inst and inst.sentiment is not None else None
            if sentiment is None and ctx.sentiment.samples:
                sentiment = ctx.sentiment.value
            if sentiment is not None and sentiment < spec.sentiment_below:
                why.append(f"What the customer says is negative (sentiment {sentiment:+.2f}).")
            else:
                shown = "unknown" if sentiment is None else f"{sentiment:+.2f}"
                why_not.append(f"Sentiment {shown} is not below {spec.sentiment_below:+.2f}.")

        if spec.intents:
            # The chance that the customer wants one of the action's intents.
            wanted = " or ".join(sorted(spec.intents))
            scores = intent.scores()
            chance = sum(scores.get(i, 0.0) for i in spec.intents)
            if chance >= spec.min_confidence:
                why.append(f"Predicted intent: {wanted} ({chance:.0%}).")
            else:
                seen = f"{wanted} {chance:.0%}" if scores else "not known yet"
                why_not.append(f"Predicted intent: {seen}; acts from {spec.min_confidence:.0%}.")
        if spec.heading_to:
            predicted = self.next_step(ctx) if self.next_step else None
            if (
                predicted
                and predicted[0] in spec.heading_to
                and predicted[1] >= spec.min_confidence
            ):
                point, confidence = predicted
                why.append(
                    f"Heading for {point.replace('_', ' ')} next ({confidence:.0%} confidence): "
                    "acting before the customer gets there."
                )
            else:
                seen = f"{predicted[0]} ({predicted[1]:.0%})" if predicted else "no prediction"
                why_not.append(f"Next step predicted: {seen}.")

        verdict = _Verdict(action=action, status="sent", score=0.0, reasons=why, journey=journey)
        if why_not:
            verdict.status = "ineligible"
            verdict.reasons = [why[0], *why_not]
            return verdict
        placement, refusal = self.policies.place(ctx, action, now, trigger.channel, journey, inst)
        if placement is None:
            assert refusal is not None  # (the policies say why, always)
            verdict.status, verdict.policy = "suppressed", refusal.policy
            verdict.reasons.append(refusal.reason)
            return verdict
        priority = journey.priority if journey is not None else 0
        response = self.propensity(ctx, action, placement.channel) if self.propensity else None
        score = response.score if response is not None else 1.0
        floor = self.playbook.policies.min_expected_response
        if response is not None and score < floor:
            verdict.status, verdict.policy = "suppressed", "min_response"
            verdict.reasons.append(
                f"Not sent: {_response_words(response, 1)} is below {floor:.0%}."
            )
            return verdict
        verdict.score = score * action.value * (1.0 + priority / 100.0) * action.lever
        verdict.channel = placement.channel
        verdict.partner_id = placement.partner_id
        verdict.content = {**action.content}
        if inst is not None and inst.key and journey is not None and journey.key:
            verdict.content[journey.key] = self._pseudonym_of(instance_name(ctx.key, inst.key))
        if action.owner == "partner":
            verdict.reasons.append(
                f"Passed to partner {placement.partner_id} on the partner channel."
                if placement.partner_id
                else "Passed to the partner network (no partner leads this journey yet)."
            )
        if response is not None:
            verdict.reasons.append(f"{_response_words(response, 0).capitalize()}.")
        verdict.reasons.append(
            f"Action: {action.label} on {channel_name(placement.channel)}{placement.how}."
        )
        return verdict

    def _situation(
        self,
        trigger: Trigger,
        journey: JourneySpec | None,
        inst: JourneyInstance | None,
        now: float,
    ) -> str:
        """The first reason: what is going on, in one sentence."""
        t = trigger.transition
        if t is not None:
            label = t.journey.replace("_", " ")
            if t.kind == "stalled" and inst is not None:
                return (
                    f"The {label} journey stalled: no progress for {span(now - inst.last_at)}, "
                    f"since {clock(inst.last_at, now)}."
                )
            return f"The {label} journey {t.kind}."
        change = trigger.intent
        if change is not None:
            before = change.previous_intent or "not known"
            return (
                f"Predicted intent changed from {before} to {change.intent} "
                f"({change.confidence:.0%}, {change.margin:.0%} ahead of the next)."
            )
        if trigger.segment is not None:
            detail = "; ".join(trigger.segment_reasons)
            return f"Entered segment {trigger.segment.replace('_', ' ')}: {detail}."
        event = trigger.event
        now_part = (
            f"now {event.type.replace('_', ' ')} on {channel_name(event.channel)}" if event else ""
        )
        if journey is None or inst is None:
            return f"Customer {now_part}."
        instance = ""
        if inst.key and journey.key:  # (its value is the content's, by token: no id here)
            instance = f" (the {journey.key.removesuffix('_id').replace('_', ' ')} in its content)"
        stage = f", stage {inst.stage.replace('_', ' ')}" if inst.stage else ""
        return (
            f"On the {journey.label} journey{instance} since {when(inst.started_at, now)}"
            f"{stage}; {now_part}."
        )

    @staticmethod
    def _channels_tried(
        spec: TriggerSpec,
        inst: JourneyInstance | None,
        now: float,
        why: list[str],
        why_not: list[str],
    ) -> None:
        window = spec.within_s if spec.within_s is not None else float("inf")
        last: dict[str, float] = {}
        for touch in inst.path if inst else []:
            if touch.ts <= now:
                last[touch.channel] = touch.ts
        tried, missing = [], []
        for channel in spec.channels_tried:
            ts = last.get(channel)
            if ts is not None and now - ts <= window:
                tried.append(f"{channel_name(channel)} at {when(ts, now)}")
            elif ts is not None:
                missing.append(
                    f"Last {channel_name(channel)} contact at {when(ts, now)}, outside the "
                    f"{span(window)} window."
                )
            else:
                missing.append(f"No {channel_name(channel)} contact in this journey.")
        if missing:
            why_not.extend(missing)
        else:
            recent = f"within the last {span(window)}" if window != float("inf") else ""
            why.append(f"Tried {' and '.join(tried)} {recent}".rstrip() + ".")


def _response_words(response: Response, digits: int) -> str:
    """The expected response as a chance, and exploration as what it is: not a chance."""
    expected = f"expected response {response.expected:.{digits}%}"
    if response.exploration < 0.005:
        return expected
    return (
        f"{expected}, plus {response.exploration:.{digits}%} for what is not known yet of such "
        f"customers (exploration): score {response.score:.{digits}%}"
    )


def _action(
    ctx: CustomerContext, trigger: Trigger, decided: str, verdict: _Verdict, channel: str
) -> Action:
    """The action a verdict sends on `channel`."""
    spec = verdict.action
    created_at = datetime.fromtimestamp(trigger.at, UTC)
    return Action(
        action_id=action_id(ctx.key, trigger.trigger_id, spec.name, trigger.at),
        decision_id=decided,
        customer=ctx.pseudonym,
        channel=channel,
        action=spec.name,
        content=verdict.content,
        score=round(verdict.score, 4),
        reasons=verdict.reasons,
        trigger_event_id=trigger.trigger_id,
        created_at=created_at,
        expires_at=created_at + timedelta(seconds=spec.expires_s),
        journey=verdict.journey.name if verdict.journey else None,
        request_id=trigger.request_id,
        partner_id=verdict.partner_id,
    )


def no_action_reply(
    key: str,
    customer: str,
    trigger: Trigger,
    decided: str,
    reasons: list[str],
    answer: str = NO_ACTION,
) -> Action:
    """The answer to a decision request that there is nothing to do, and why, for the
    customer `key` (named `customer`, their pseudonym); `answer` tells its id from other
    answers to the same request."""
    created_at = datetime.fromtimestamp(trigger.at, UTC)
    return Action(
        action_id=action_id(key, trigger.trigger_id, answer, trigger.at),
        decision_id=decided,
        customer=customer,
        channel=trigger.channel or "",
        action=NO_ACTION,
        content={},
        score=0.0,
        reasons=reasons,
        trigger_event_id=trigger.trigger_id,
        created_at=created_at,
        expires_at=created_at,
        request_id=trigger.request_id,
    )


def erased_reply(request: Event, playbook_version: str) -> tuple[Action, Decision]:
    """The answer to a decision request for an erased customer, and its decision: nothing
    to do, decided from nothing of theirs. Both name nobody (the channel matches the
    answer by its request id): nothing written after an erasure names the customer."""
    trigger = Trigger.of_event(request)
    # Ids of their own, from the request alone: a request answered before the erasure,
    # delivered again after it, keeps its first answer's ids for that answer, and one
    # that reaches an erased device or its erased customer is answered the same.
    decided = decision_id(NOBODY, f"{trigger.trigger_id}:erased", trigger.at)
    reasons = ["The customer's data was erased: nothing is decided for them."]
    reply = no_action_reply(NOBODY, NOBODY, trigger, decided, reasons, answer="erased")
    decision = Decision(
        decision_id=decided,
        customer=NOBODY,
        trigger_id=trigger.trigger_id,
        trigger_type=trigger.type,
        trigger_channel=trigger.channel,
        created_at=reply.created_at,
        outcome="no_action",
        candidates=[],
        playbook_version=playbook_version,
        action_id=reply.action_id,
        request_id=trigger.request_id,
    )
    return reply, decision
