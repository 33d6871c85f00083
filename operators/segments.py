"""Segments from playbook rules, and the entries and exits that make audiences.

Membership is re-evaluated as the customer's context changes; what changed goes
out on the audiences topic with the reason, so a channel can activate an
audience the moment someone joins it.
"""

from datetime import UTC, datetime

from operators.ids import audience_change_id
from operators.playbook import CompiledPlaybook
from schemas.audience import AudienceChange
from schemas.playbook import SegmentDef
from state.context import CustomerContext

DAY = 86400.0


def lifecycle_stage(ctx: CustomerContext, now: float, playbook: CompiledPlaybook) -> str:
    """prospect (not identified), new, active or dormant."""
    if not ctx.known:
        return "prospect"
    settings = playbook.lifecycle
    if now - ctx.last_seen > settings.dormant_days * DAY:
        return "dormant"
    if now - ctx.first_seen <= settings.new_days * DAY:
        return "new"
    return "active"


class SegmentEvaluator:
    """Evaluates every playbook segment for a customer and reports what changed."""

    def __init__(self, playbook: CompiledPlaybook) -> None:
        self.playbook = playbook

    def why(self, segment: SegmentDef, ctx: CustomerContext, now: float) -> list[str] | None:
        """The reasons the customer is in the segment, or None if a rule fails."""
        reasons: list[str] = []
        if segment.value_tiers:
            if ctx.value_tier not in segment.value_tiers:
                return None
            reasons.append(f"value tier {ctx.value_tier}")
        if segment.min_lifetime_value is not None:
            ltv = ctx.lifetime_value
            if ltv is None or ltv < segment.min_lifetime_value:
                return None
            reasons.append(f"lifetime value {ltv:,.0f}")
        if segment.lifecycle:
            stage = lifecycle_stage(ctx, now, self.playbook)
            if stage not in segment.lifecycle:
                return None
            reasons.append(f"lifecycle {stage}")
        for point, minimum in segment.visited.items():
            visits = ctx.touchpoints.get(point, 0)
            if visits < minimum:
                return None
            reasons.append(f"visited {point} {visits} times")
        if segment.interests:
            wanted = set(segment.interests)
            shown = sorted(
                point
                for point in ctx.touchpoints
                if self.playbook.interests_of.get(point, frozenset()) & wanted
            )
            if not shown:
                return None
            reasons.append("interest shown at " + ", ".join(shown[:3]))
        for name, value in segment.attributes.items():
            if ctx.attributes.get(name) != value:
                return None
            reasons.append(f"{name} is {str(value).lower()}")
        return reasons

    def update(
        self, ctx: CustomerContext, now: float, trigger_event_id: str | None
    ) -> list[AudienceChange]:
        """Re-evaluate membership; record it in the context and return the changes."""
        changes: list[AudienceChange] = []
        at = datetime.fromtimestamp(now, UTC)
        current = set(ctx.segments)
        members: list[str] = []
        trigger = trigger_event_id or f"t={now:.3f}"
        for segment in self.playbook.segments:
            reasons = self.why(segment, ctx, now)
            name = segment.name
            if reasons is not None:
                members.append(name)
                if name not in current:
                    changes.append(
                        self._change(ctx, name, "entered", at, reasons, trigger, trigger_event_id)
                    )
            elif name in current:
                changes.append(
                    self._change(
                        ctx,
                        name,
                        "exited",
                        at,
                        ["a rule no longer holds"],
                        trigger,
                        trigger_event_id,
                    )
                )
        ctx.segments = members
        return changes

    def leave_all(
        self, ctx: CustomerContext, now: float, trigger_event_id: str, reason: str
    ) -> list[AudienceChange]:
        """The customer leaves every segment (a visitor identified, or erased)."""
        at = datetime.fromtimestamp(now, UTC)
        changes = [
            self._change(ctx, name, "exited", at, [reason], trigger_event_id, trigger_event_id)
            for name in ctx.segments
        ]
        ctx.segments = []
        return changes

    @staticmethod
    def _change(
        ctx: CustomerContext,
        segment: str,
        change: str,
        at: datetime,
        reasons: list[str],
        trigger: str,
        trigger_event_id: str | None,
    ) -> AudienceChange:
        return AudienceChange(
            change_id=audience_change_id(ctx.key, segment, change, trigger),
            customer_id=ctx.key,
            segment=segment,
            change=change,  # type: ignore[arg-type]
            at=at,
            reasons=reasons,
            trigger_event_id=trigger_event_id,
        )
