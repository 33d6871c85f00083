"""Goal-based journeys: enter, progress, stall, resume, complete, abandon, merge.

A journey is what the customer is trying to achieve, not a path: any event that
belongs to it moves it, in any order, on any channel. Milestones are reached in
whatever order they happen; the stage is the furthest one reached. Stall and
abandonment are deadlines in event time, fired by `on_time` (bytewax timers in
live runs, event time in replays), so both give the same transitions.
"""

from bisect import insort
from collections.abc import Callable
from datetime import UTC, datetime

from operators.conditions import Prefilter
from operators.identity import instance_name
from operators.ids import transition_id
from operators.playbook import CompiledPlaybook, JourneySpec
from schemas.event import Event
from schemas.journey import JourneyTransition, PathStep, TransitionKind
from state.context import (
    MAX_FINISHED_JOURNEYS,
    MAX_JOURNEY_PATH,
    MAX_OPEN_JOURNEYS,
    CustomerContext,
    JourneyInstance,
    JourneyOutcome,
    JourneySummary,
    Touch,
)

#: Transitions that end a journey; they carry its path for the contact-point map.
_TERMINAL = frozenset({"completed", "abandoned"})


def _touch_ts(touch: Touch) -> float:
    return touch.ts


def _step(touch: Touch) -> tuple[float, str, str | None]:
    """What tells a journey's steps apart: one event is one step on both sides of a
    merge (a touch of a release before also holds the event's id)."""
    return touch.ts, touch.channel, touch.touchpoint


class JourneyTracker:
    """Applies events and time to a customer's journeys and reports the transitions."""

    def __init__(self, playbook: CompiledPlaybook, pseudonym_of: Callable[[str], str]) -> None:
        """`pseudonym_of`: what a transition names an instance by (its token: the
        pseudonym of `operators.identity.instance_name`), as the customer step names
        customers."""
        self.playbook = playbook
        self._pseudonym_of = pseudonym_of
        #: Properties that name an instance of some journey (transfer_id, ...).
        self._instance_keys = frozenset(j.key for j in playbook.journeys if j.key)
        self._prefilter = Prefilter(
            [(j, j.conditions, j.contact_points) for j in playbook.journeys]
        )

    def concerns(self, event: Event) -> bool:
        """Whether the event can matter to any journey (cheap, cached by event kind)."""
        return bool(self._prefilter.relevant(event))

    # ------------------------------------------------------------------ events
    def on_event(
        self, ctx: CustomerContext, event: Event, sentiment: float | None = None
    ) -> list[JourneyTransition]:
        """Move every journey this event belongs to; open those it starts."""
        out: list[JourneyTransition] = []
        ts = event.ts.timestamp()
        for spec in self._prefilter.relevant(event):
            self._apply(ctx, spec, event, ts, sentiment, out)
        return out

    def _apply(
        self,
        ctx: CustomerContext,
        spec: JourneySpec,
        event: Event,
        ts: float,
        sentiment: float | None,
        out: list[JourneyTransition],
    ) -> None:
        key_value = None
        if spec.key is not None:
            raw = event.properties.get(spec.key)
            key_value = None if raw is None else str(raw)
        elif self._instance_keys and not self._instance_keys.isdisjoint(event.properties):
            return  # about a specific transfer (or other keyed matter): not this journey's
        inst = self.find(ctx, spec.name, key_value)
        reached = [m for m in spec.milestones if m.matches(event)]
        entered = False
        if inst is None:
            if not spec.entry(event):  # only an entry opens a journey; milestones move it
                return
            inst = JourneyInstance(
                journey=spec.name,
                key=key_value or "",
                started_at=ts,
                last_at=ts,
                entry_event_id=event.event_id,
            )
            self._open(ctx, inst, out)
            entered = True
        elif not (reached or spec.is_activity(event)):
            return

        resumed = inst.status == "stalled"
        self._touch(inst, spec, event, ts, sentiment)
        if entered:
            out.append(self._transition(ctx, spec, inst, "entered", ts, event.event_id))
        if resumed:
            inst.status = "open"
            out.append(self._transition(ctx, spec, inst, "resumed", ts, event.event_id))
        for milestone in reached:
            first = inst.milestones.get(milestone.name)
            if first is None:
                inst.milestones[milestone.name] = ts
                inst.stage = self._stage(spec, inst)
                out.append(
                    self._transition(
                        ctx, spec, inst, "progressed", ts, event.event_id, milestone.name
                    )
                )
            elif ts < first:  # a late event from another device reached it earlier
                inst.milestones[milestone.name] = ts
        if spec.goal(event):
            out.append(self._transition(ctx, spec, inst, "completed", ts, event.event_id))
            self._finish(ctx, inst, "completed", ts)

    def _touch(
        self,
        inst: JourneyInstance,
        spec: JourneySpec,
        event: Event,
        ts: float,
        sentiment: float | None,
    ) -> None:
        touchpoint = event.touchpoint
        path = inst.path
        if (
            touchpoint is not None
            and path
            and path[-1].touchpoint != touchpoint
            and any(t.touchpoint == touchpoint for t in path)
        ):
            inst.loops += 1  # back to a contact point already visited in this journey
        touch = Touch(ts, event.channel, touchpoint)
        if not path or path[-1].ts <= ts:
            path.append(touch)
        else:
            insort(path, touch, key=_touch_ts)
        if len(path) > MAX_JOURNEY_PATH:
            del path[0]
        inst.last_at = max(inst.last_at, ts)
        inst.started_at = min(inst.started_at, ts)
        if spec.failure(event):
            inst.failures += 1
        partner = event.partner_id
        if (
            partner is not None
            and inst.owner is None
            and (event.channel == "partner" or self.playbook.is_partner_point(touchpoint))
        ):
            inst.owner = partner
        if sentiment is not None:
            old = inst.sentiment
            inst.sentiment = sentiment if old is None else 0.5 * old + 0.5 * sentiment

    # ------------------------------------------------------------------ time
    def next_deadline(self, ctx: CustomerContext) -> float | None:
        """When the next stall or abandonment falls due; None when nothing is open."""
        best: float | None = None
        for inst in ctx.journeys:
            due, _ = self._deadline(inst)
            if best is None or due < best:
                best = due
        return best

    def on_time(self, ctx: CustomerContext, now: float) -> list[JourneyTransition]:
        """Fire every stall and abandonment due at or before `now`, in time order."""
        out: list[JourneyTransition] = []
        while ctx.journeys:
            inst = min(ctx.journeys, key=lambda j: self._deadline(j)[0])
            due, kind = self._deadline(inst)
            if due > now:
                break
            spec = self.playbook.journey(inst.journey)
            out.append(self._transition(ctx, spec, inst, kind, due))
            if kind == "stalled":
                inst.status = "stalled"
            else:
                self._finish(ctx, inst, "abandoned", due)
        return out

    def _deadline(self, inst: JourneyInstance) -> tuple[float, TransitionKind]:
        spec = self.playbook.journey(inst.journey)
        if inst.status == "open" and spec.stall_s is not None:
            return inst.last_at + spec.stall_s, "stalled"
        return inst.last_at + spec.abandon_s, "abandoned"

    # ------------------------------------------------------------------ identity
    def absorb(
        self, ctx: CustomerContext, visitor: CustomerContext, trigger_event_id: str, at: float
    ) -> list[JourneyTransition]:
        """Take over an identified visitor's journeys: one journey, not two.

        The visitor's instances end as `merged`; each continues in the customer's
        instance of the same journey (combined) or becomes the customer's own.
        """
        out: list[JourneyTransition] = []
        for theirs in list(visitor.journeys):
            spec = self.playbook.journey(theirs.journey)
            out.append(
                self._transition(
                    visitor, spec, theirs, "merged", at, trigger_event_id, merged_into=ctx
                )
            )
            ours = self.find(ctx, theirs.journey, theirs.key or None)
            if ours is None:
                self._open(ctx, theirs, out)
                out.append(
                    self._transition(
                        ctx, spec, theirs, "entered", theirs.started_at, trigger_event_id
                    )
                )
                continue
            ours.started_at = min(ours.started_at, theirs.started_at)
            ours.last_at = max(ours.last_at, theirs.last_at)
            gained = []
            for name, ts in theirs.milestones.items():
                if name not in ours.milestones:
                    gained.append((ts, name))
                if name not in ours.milestones or ts < ours.milestones[name]:
                    ours.milestones[name] = ts
            ours.stage = self._stage(spec, ours)
            known = {_step(t) for t in ours.path}
            ours.path = sorted(
                [*ours.path, *(t for t in theirs.path if _step(t) not in known)], key=_touch_ts
            )[-MAX_JOURNEY_PATH:]
            ours.loops += theirs.loops
            ours.failures += theirs.failures
            ours.owner = ours.owner or theirs.owner
            if ours.status == "stalled" and theirs.status == "open":
                # Picked up again on another device while it was stalled here.
                ours.status = "open"
                out.append(self._transition(ctx, spec, ours, "resumed", at, trigger_event_id))
            for ts, name in sorted(gained):
                out.append(
                    self._transition(ctx, spec, ours, "progressed", ts, trigger_event_id, name)
                )
        visitor.journeys.clear()
        return out

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def find(ctx: CustomerContext, journey: str, key: str | None) -> JourneyInstance | None:
        """The open instance for this key, or (no key given) the most recently active one."""
        best: JourneyInstance | None = None
        for inst in ctx.journeys:
            if inst.journey != journey:
                continue
            if key is not None:
                if inst.key == key:
                    return inst
                continue
            if best is None or inst.last_at > best.last_at:
                best = inst
        return best

    def _open(
        self, ctx: CustomerContext, inst: JourneyInstance, out: list[JourneyTransition]
    ) -> None:
        ctx.journeys.append(inst)
        if len(ctx.journeys) > MAX_OPEN_JOURNEYS:
            # Bounded state: the least recently active journey is given up.
            oldest = min(ctx.journeys, key=lambda j: j.last_at)
            spec = self.playbook.journey(oldest.journey)
            out.append(self._transition(ctx, spec, oldest, "abandoned", inst.last_at))
            self._finish(ctx, oldest, "abandoned", inst.last_at)

    @staticmethod
    def _stage(spec: JourneySpec, inst: JourneyInstance) -> str | None:
        reached = [m for m in spec.milestones if m.name in inst.milestones]
        return reached[-1].name if reached else None

    @staticmethod
    def _finish(
        ctx: CustomerContext, inst: JourneyInstance, outcome: JourneyOutcome, at: float
    ) -> None:
        ctx.journeys.remove(inst)
        summary = JourneySummary(
            journey=inst.journey,
            key=inst.key,
            outcome=outcome,
            started_at=inst.started_at,
            ended_at=at,
            stage=inst.stage,
            touches=len(inst.path),
            loops=inst.loops,
        )
        ctx.finished = (*ctx.finished, summary)[-MAX_FINISHED_JOURNEYS:]

    def _transition(
        self,
        customer: CustomerContext,
        spec: JourneySpec,
        inst: JourneyInstance,
        kind: TransitionKind,
        at: float,
        trigger_event_id: str | None = None,
        milestone: str | None = None,
        merged_into: CustomerContext | None = None,
    ) -> JourneyTransition:
        contact_points: list[str] = []
        channels: list[str] = []
        for touch in inst.path:
            if touch.touchpoint is not None and touch.touchpoint not in contact_points:
                contact_points.append(touch.touchpoint)
            if touch.channel not in channels:
                channels.append(touch.channel)
        return JourneyTransition(
            transition_id=transition_id(
                customer.key,
                spec.name,
                inst.key,
                kind,
                milestone or (merged_into.key if merged_into else ""),
                at,
            ),
            customer=customer.pseudonym,
            journey=spec.name,
            category=spec.category,
            kind=kind,
            at=datetime.fromtimestamp(at, UTC),
            duration_seconds=round(at - inst.started_at, 3),
            contact_points=contact_points,
            channels=channels,
            instance=self._pseudonym_of(instance_name(customer.key, inst.key))
            if inst.key
            else None,
            stage=inst.stage,
            milestone=milestone,
            loops=inst.loops,
            trigger_event_id=trigger_event_id,
            partner_id=inst.owner,
            merged_into=merged_into.pseudonym if merged_into else None,
            sentiment=inst.sentiment,
            path=[
                PathStep(datetime.fromtimestamp(t.ts, UTC), t.touchpoint, t.channel)
                for t in inst.path
            ]
            if kind in _TERMINAL
            else [],
        )
