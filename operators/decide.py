"""From a trigger event to at most one action, with every candidate audited.

Rules propose candidates; consent is enforced before anything is sent; the best
remaining candidate becomes the action. The decision record keeps every
candidate with its status and reasons, and what the decision was made with.
"""

from dataclasses import dataclass
from datetime import UTC, timedelta
from hashlib import blake2b
from typing import Protocol

from operators.ids import action_id, decision_id
from operators.priority_routing import StuckTransferRouting, Verdict
from operators.wording import channel_name
from schemas.action import Action
from schemas.decision import Candidate, Decision
from schemas.event import Event
from state.context import CustomerContext, consent_allows


class Rule(Protocol):
    """A source of candidate actions for trigger events it recognises."""

    expires_seconds: float

    def applies(self, event: Event) -> bool: ...

    def evaluate(self, ctx: CustomerContext, event: Event) -> Verdict: ...


@dataclass(frozen=True)
class RuleSet:
    """The rules in force, and a version that changes whenever any of them does."""

    rules: tuple[Rule, ...]

    @property
    def version(self) -> str:
        return "rules-" + blake2b(repr(self.rules).encode(), digest_size=6).hexdigest()


DEFAULT_RULES = RuleSet(rules=(StuckTransferRouting(),))


def decide(
    ctx: CustomerContext, event: Event, rules: RuleSet
) -> tuple[Action | None, Decision | None]:
    """Decide on one event already folded into `ctx`; (None, None) if no rule applies."""
    applicable = [rule for rule in rules.rules if rule.applies(event)]
    if not applicable:
        return None, None

    candidates: list[Candidate] = []
    best: tuple[Verdict, Rule] | None = None
    for rule in applicable:
        verdict = rule.evaluate(ctx, event)
        status = "sent" if verdict.eligible else "ineligible"
        reasons = verdict.reasons
        if verdict.eligible and not consent_allows(ctx, verdict.channel, verdict.purpose):
            status = "suppressed"
            reasons = [
                *reasons,
                f"Not sent: the customer has not agreed to {verdict.purpose} contact "
                f"on {channel_name(verdict.channel)}.",
            ]
        if status == "sent" and (best is None or verdict.score > best[0].score):
            best = (verdict, rule)
        candidates.append(
            Candidate(
                action=verdict.action,
                status=status,
                score=verdict.score,
                reasons=reasons,
                channel=verdict.channel,
                journey=verdict.journey,
            )
        )

    customer = ctx.key
    created_at = event.ts.astimezone(UTC)
    dec_id = decision_id(customer, event.event_id)
    action: Action | None = None
    if best is not None:
        verdict, rule = best
        for candidate in candidates:
            if candidate.status == "sent" and candidate.action != verdict.action:
                candidate.status = "suppressed"
                candidate.reasons = [*candidate.reasons, f"Outranked by {verdict.action}."]
        action = Action(
            action_id=action_id(customer, event.event_id, verdict.action),
            decision_id=dec_id,
            customer_id=customer,
            channel=verdict.channel,
            action=verdict.action,
            content=verdict.content,
            score=verdict.score,
            reasons=verdict.reasons,
            trigger_event_id=event.event_id,
            created_at=created_at,
            expires_at=created_at + timedelta(seconds=rule.expires_seconds),
            journey=verdict.journey,
            request_id=event.request_id,
            partner_id=event.partner_id,
        )
    if action is not None:
        outcome = "sent"
    elif any(c.status == "suppressed" for c in candidates):
        outcome = "suppressed"
    else:
        outcome = "no_action"
    decision = Decision(
        decision_id=dec_id,
        customer_id=customer,
        trigger_event_id=event.event_id,
        trigger_type=event.type,
        trigger_channel=event.channel,
        created_at=created_at,
        outcome=outcome,
        candidates=candidates,
        rules_version=rules.version,
        action_id=action.action_id if action else None,
        request_id=event.request_id,
    )
    return action, decision
