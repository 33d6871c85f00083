"""From a trigger to at most one action, with every candidate audited.

A trigger is an event, a journey transition or a segment entry. Playbook
actions whose trigger matches become candidates; their conditions decide
eligibility; contact policies (consent, cooldown, suppression between journey
categories, co-selling with partners) decide what may be sent; the channel is
chosen last. The decision record keeps every candidate, its status and its
reasons in words, and the playbook version it was made with.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from operators.conditions import Prefilter
from operators.ids import action_id, decision_id
from operators.journeys import JourneyTracker
from operators.playbook import ActionSpec, CompiledPlaybook, JourneySpec, TriggerSpec
from operators.wording import ago, channel_list, channel_name, clock, span, when
from schemas.action import Action
from schemas.decision import Candidate, CandidateStatus, Decision
from schemas.event import Event
from schemas.journey import JourneyTransition
from state.context import CustomerContext, JourneyInstance, consent_allows


@dataclass(frozen=True)
class Trigger:
    """What prompted a decision: an event, a journey transition or a segment entry."""

    trigger_id: str
    type: str
    at: float
    channel: str | None = None
    event: Event | None = None
    transition: JourneyTransition | None = None
    segment: str | None = None
    segment_reasons: tuple[str, ...] = ()
    request_id: str | None = None
    partner_id: str | None = None

    @classmethod
    def of_event(cls, event: Event) -> "Trigger":
        return cls(
            trigger_id=event.event_id,
            type=event.type,
            at=event.ts.timestamp(),
            channel=event.channel,
            event=event,
            request_id=event.request_id,
            partner_id=event.partner_id,
        )

    @classmethod
    def of_transition(cls, transition: JourneyTransition) -> "Trigger":
        return cls(
            trigger_id=transition.transition_id,
            type=f"journey_{transition.kind}",
            at=transition.at.timestamp(),
            transition=transition,
        )


@dataclass
class _Verdict:
    action: ActionSpec
    status: CandidateStatus
    score: float
    reasons: list[str]
    journey: JourneySpec | None = None
    channel: str | None = None
    partner_id: str | None = None
    content: dict = field(default_factory=dict)


class DecisionMaker:
    """Turns triggers into decisions with the playbook's actions and policies."""

    def __init__(self, playbook: CompiledPlaybook) -> None:
        self.playbook = playbook
        self._event_actions = Prefilter(
            [
                (a, [m for t in a.triggers for m in t.event_conditions], frozenset())
                for a in playbook.actions
            ]
        )

    def wants(self, event: Event) -> bool:
        """Whether any action could be triggered by this event (cheap, cached)."""
        return bool(self._event_actions.relevant(event))

    def decide(
        self, ctx: CustomerContext, trigger: Trigger
    ) -> tuple[Action | None, Decision | None]:
        """Decide on one trigger (its event already folded); (None, None) if no action applies."""
        if trigger.event is not None:
            actions = self._event_actions.relevant(trigger.event)
        else:
            actions = self.playbook.actions
        verdicts: list[_Verdict] = []
        for action in actions:
            verdict = self._consider(ctx, trigger, action)
            if verdict is not None:
                verdicts.append(verdict)
        if not verdicts:
            return None, None

        sent = [v for v in verdicts if v.status == "sent"]
        best = max(sent, key=lambda v: v.score) if sent else None
        for v in sent:
            if v is not best:
                v.status = "suppressed"
                v.reasons.append(f"Outranked by {best.action.label}.")  # type: ignore[union-attr]

        customer = ctx.key
        created_at = datetime.fromtimestamp(trigger.at, UTC)
        dec_id = decision_id(customer, trigger.trigger_id)
        action: Action | None = None
        if best is not None:
            spec = best.action
            action = Action(
                action_id=action_id(customer, trigger.trigger_id, spec.name),
                decision_id=dec_id,
                customer_id=customer,
                channel=best.channel,  # type: ignore[arg-type]
                action=spec.name,
                content=best.content,
                score=round(best.score, 4),
                reasons=best.reasons,
                trigger_event_id=trigger.trigger_id,
                created_at=created_at,
                expires_at=created_at + timedelta(seconds=spec.expires_s),
                journey=best.journey.name if best.journey else None,
                request_id=trigger.request_id,
                partner_id=best.partner_id,
            )
            ctx.last_action_at[spec.name] = trigger.at
        if action is not None:
            outcome = "sent"
        elif any(v.status == "suppressed" for v in verdicts):
            outcome = "suppressed"
        else:
            outcome = "no_action"
        decision = Decision(
            decision_id=dec_id,
            customer_id=customer,
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
                )
                for v in verdicts
            ],
            playbook_version=self.playbook.version,
            action_id=action.action_id if action else None,
            request_id=trigger.request_id,
        )
        return action, decision

    # ------------------------------------------------------------------ candidates
    def _consider(
        self, ctx: CustomerContext, trigger: Trigger, action: ActionSpec
    ) -> _Verdict | None:
        """The best verdict over the action's triggers that fire here, or None."""
        fallback: _Verdict | None = None
        for spec in action.triggers:
            if not self._fires(spec, trigger):
                continue
            scope = self._scope(ctx, spec, trigger)
            if scope is None:
                continue
            verdict = self._evaluate(ctx, trigger, action, spec, *scope)
            if verdict.status == "sent":
                return verdict
            fallback = fallback or verdict
        return fallback

    @staticmethod
    def _fires(spec: TriggerSpec, trigger: Trigger) -> bool:
        if trigger.event is not None:
            return spec.on_event is not None and spec.on_event(trigger.event)
        if trigger.transition is not None:
            t = trigger.transition
            return t.kind in spec.transitions and t.journey == spec.journey
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
    ) -> _Verdict:
        now = trigger.at
        why: list[str] = [self._situation(trigger, journey, inst, now)]
        why_not: list[str] = []

        if spec.value_tiers:
            tier = ctx.value_tier
            if tier in spec.value_tiers:
                why.append(f"{tier.capitalize()}-value customer.")  # type: ignore[union-attr]
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

        priority = journey.priority if journey is not None else 0
        score = action.value * (1.0 + priority / 100.0)
        verdict = _Verdict(action=action, status="sent", score=score, reasons=why, journey=journey)
        if why_not:
            verdict.status = "ineligible"
            verdict.score = 0.0
            verdict.reasons = [why[0], *why_not]
            return verdict
        self._apply_policies(ctx, trigger, action, journey, inst, verdict)
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
        if inst.key and journey.key:
            instance = f" ({journey.key.removesuffix('_id').replace('_', ' ')} {inst.key})"
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

    def _apply_policies(
        self,
        ctx: CustomerContext,
        trigger: Trigger,
        action: ActionSpec,
        journey: JourneySpec | None,
        inst: JourneyInstance | None,
        verdict: _Verdict,
    ) -> None:
        """Contact policies, always enforced; the channel is chosen last."""
        now = trigger.at

        def suppress(reason: str) -> None:
            verdict.status = "suppressed"
            verdict.reasons.append(reason)

        last = ctx.last_action_at.get(action.name)
        if action.cooldown_s is not None and last is not None and now - last < action.cooldown_s:
            suppress(
                f"Not sent: already sent {ago(now - last)}; cooldown {span(action.cooldown_s)}."
            )
            return
        for other in ctx.journeys:
            if other is inst:
                continue
            other_spec = self.playbook.journey(other.journey)
            if action.category in other_spec.suppresses:
                suppress(
                    f"Not sent: the open {other_spec.label} journey ({other_spec.category}) "
                    f"suppresses {action.category} actions."
                )
                return
        partner_id = None
        if action.owner == "partner":
            # Only the partner leading this journey; never one met on another journey.
            partner_id = inst.owner if inst else None
        elif (
            inst is not None and inst.owner is not None and action.category in {"sales", "partner"}
        ):
            suppress(
                f"Not sent: partner {inst.owner} leads this {journey.label if journey else ''} "
                "journey; the direct team stands back (co-selling: one owner per journey)."
            )
            return

        candidates = list(action.channels)
        if not ctx.known:
            # Nobody to address yet: an anonymous visitor is answered where they are.
            if action.owner == "partner" or trigger.channel not in candidates:
                suppress(
                    "Not sent: anonymous visitor, reachable only on "
                    f"{channel_name(trigger.channel or 'their current channel')} until they log in."
                )
                return
            candidates = [trigger.channel]  # type: ignore[list-item]
        if action.reply_on_trigger_channel:
            candidates = [c for c in candidates if c == trigger.channel]
        consented = [c for c in candidates if consent_allows(ctx, c, action.purpose)]
        if not consented:
            where = channel_list(candidates) or "any channel"
            suppress(f"Not sent: no {action.purpose} consent on {where}.")
            return
        channel, how = self._choose_channel(ctx, consented, candidates, action)
        verdict.channel = channel
        verdict.partner_id = partner_id
        verdict.content = {**action.content}
        if inst is not None and inst.key and journey is not None and journey.key:
            verdict.content[journey.key] = inst.key
        if action.owner == "partner":
            verdict.reasons.append(
                f"Passed to partner {partner_id} on the partner channel."
                if partner_id
                else "Passed to the partner network (no partner leads this journey yet)."
            )
        verdict.reasons.append(f"Action: {action.label} on {channel_name(channel)}{how}.")

    @staticmethod
    def _choose_channel(
        ctx: CustomerContext, consented: list[str], candidates: list[str], action: ActionSpec
    ) -> tuple[str, str]:
        """Consented first; then the customer's preferred channel; then the most recent one."""
        refused = [c for c in candidates if c not in consented]
        note = f" ({channel_list(refused)}: no {action.purpose} consent)" if refused else ""
        preferred = ctx.preferred_channel
        if preferred in consented:
            return preferred, f", the customer's preferred channel{note}"  # type: ignore[return-value]
        used = [(ctx.channels[c].last_seen, c) for c in consented if c in ctx.channels]
        if used:
            return max(used)[1], f", the channel the customer used last{note}"
        return consented[0], note
