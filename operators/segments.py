"""Segments from playbook rules, and the entries and exits that make audiences.

Membership is re-evaluated as the customer's context changes; what changed goes
out on the audiences topic with the reason, so a channel can activate an
audience the moment someone joins it.
"""

from datetime import UTC, datetime
from typing import Literal

from operators.ids import audience_change_id
from operators.playbook import CompiledPlaybook
from schemas.audience import AudienceChange
from schemas.event import Event
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
        #: Per segment, the contact points that reveal one of its interests.
        self._interest_points = {
            segment.name: frozenset(
                point
                for point, interests in playbook.interests_of.items()
                if interests & set(segment.interests)
            )
            for segment in playbook.segments
        }
        self._watched_points = frozenset(
            point
            for segment in playbook.segments
            for point in (*segment.visited, *self._interest_points[segment.name])
        )
        self._watched_properties = frozenset(
            {"value_tier", "lifetime_value"}
            | {name for segment in playbook.segments for name in segment.attributes}
        )
        #: Segments whose membership can change with time alone (lifecycle stage).
        self._timed = tuple(s for s in playbook.segments if s.lifecycle)

    def holds(self, segment: SegmentDef, ctx: CustomerContext, now: float) -> bool:
        """Whether every rule of the segment holds (the per-event check: no wording)."""
        if segment.value_tiers and ctx.value_tier not in segment.value_tiers:
            return False
        if segment.min_lifetime_value is not None and (
            ctx.lifetime_value is None or ctx.lifetime_value < segment.min_lifetime_value
        ):
            return False
        if segment.lifecycle and lifecycle_stage(ctx, now, self.playbook) not in segment.lifecycle:
            return False
        touchpoints = ctx.touchpoints
        for point, minimum in segment.visited.items():
            if touchpoints.get(point, 0) < minimum:
                return False
        if segment.interests and self._interest_points[segment.name].isdisjoint(touchpoints):
            return False
        attributes = ctx.attributes
        return all(attributes.get(name) == value for name, value in segment.attributes.items())

    def why(self, segment: SegmentDef, ctx: CustomerContext, now: float) -> list[str]:
        """The reasons, in words, that a customer for whom `holds` is true is in the segment."""
        reasons: list[str] = []
        if segment.value_tiers:
            reasons.append(f"value tier {ctx.value_tier}")
        if segment.min_lifetime_value is not None:
            reasons.append(f"lifetime value {ctx.lifetime_value:,.0f}")
        if segment.lifecycle:
            reasons.append(f"lifecycle {lifecycle_stage(ctx, now, self.playbook)}")
        for point in segment.visited:
            reasons.append(f"visited {point} {ctx.touchpoints.get(point, 0)} times")
        if segment.interests:
            shown = sorted(self._interest_points[segment.name].intersection(ctx.touchpoints))
            reasons.append("interest shown at " + ", ".join(shown[:3]))
        for name, value in segment.attributes.items():
            reasons.append(f"{name} is {str(value).lower()}")
        return reasons

    def could_change(self, event: Event) -> bool:
        """Whether folding this event can change anything a segment rule reads, besides time."""
        if event.touchpoint is not None and event.touchpoint in self._watched_points:
            return True
        if event.type == "identify":
            return True
        return bool(event.properties) and not self._watched_properties.isdisjoint(event.properties)

    def update(
        self,
        ctx: CustomerContext,
        now: float,
        trigger_event_id: str | None,
        event: Event | None = None,
    ) -> list[AudienceChange]:
        """Re-evaluate membership; record it in the context and return the changes.

        Given the event just folded, only the segments it can affect are checked
        again (and those that depend on time); the others keep their membership.
        """
        current = ctx.segments
        if event is None or self.could_change(event) or (not ctx.known and ctx.events == 1):
            checked = self.playbook.segments
        else:
            checked = self._timed
            if not checked:
                return []
        members = tuple(  # (a list first: quicker to build than from a generator)
            [
                s.name
                for s in self.playbook.segments
                if (self.holds(s, ctx, now) if s in checked else s.name in current)
            ]
        )
        if members == current:
            return []
        changes: list[AudienceChange] = []
        at = datetime.fromtimestamp(now, UTC)
        trigger = trigger_event_id or f"t={now:.3f}"
        for segment in self.playbook.segments:
            name = segment.name
            if name in members and name not in current:
                reasons = self.why(segment, ctx, now)
                changes.append(
                    self._change(ctx, name, "entered", at, reasons, trigger, trigger_event_id)
                )
            elif name in current and name not in members:
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
        ctx.segments = ()
        return changes

    @staticmethod
    def _change(
        ctx: CustomerContext,
        segment: str,
        change: Literal["entered", "exited"],
        at: datetime,
        reasons: list[str],
        trigger: str,
        trigger_event_id: str | None,
    ) -> AudienceChange:
        return AudienceChange(
            change_id=audience_change_id(ctx.key, segment, change, trigger),
            customer=ctx.pseudonym,
            segment=segment,
            change=change,
            at=at,
            reasons=reasons,
            trigger_event_id=trigger_event_id,
        )
