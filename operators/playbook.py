"""The playbook compiled for the hot path: predicates, seconds, lookups.

The declarative shape (schemas/playbook.py) stays what people write; this is
what the operators run: conditions as closures, durations as seconds, and a
version that pins every decision to the exact playbook it was made with.
"""

from dataclasses import dataclass, field
from hashlib import blake2b

import msgspec

from operators.conditions import Predicate, compile_any
from schemas.event import Event
from schemas.playbook import (
    ContactPoint,
    EventMatch,
    LifecycleSettings,
    Playbook,
    Policies,
    SegmentDef,
    seconds,
)


@dataclass(frozen=True)
class MilestoneSpec:
    name: str
    order: int
    matches: Predicate


@dataclass(frozen=True)
class JourneySpec:
    name: str
    category: str
    priority: int
    key: str | None
    stall_s: float | None
    abandon_s: float
    entry: Predicate
    goal: Predicate
    failure: Predicate
    milestones: tuple[MilestoneSpec, ...]
    contact_points: frozenset[str]
    suppresses: frozenset[str]
    #: Every event condition of the journey, for the prefilter.
    conditions: tuple[EventMatch, ...] = ()
    intent: str | None = None

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    def is_activity(self, event: Event) -> bool:
        """Whether the event belongs to this journey if it is in flight."""
        if event.touchpoint is not None and event.touchpoint in self.contact_points:
            return True
        if self.entry(event) or self.goal(event) or self.failure(event):
            return True
        return any(m.matches(event) for m in self.milestones)


@dataclass(frozen=True)
class TriggerSpec:
    on_event: Predicate | None
    transitions: frozenset[str]
    segment_entered: str | None
    journey: str | None
    journey_category: str | None
    stages: frozenset[str]
    channels_tried: tuple[str, ...]
    within_s: float | None
    failures_at_least: int | None
    sentiment_below: float | None
    segments: frozenset[str]
    value_tiers: frozenset[str]
    event_conditions: tuple[EventMatch, ...] = ()
    on_request: bool = False
    intent_changed: frozenset[str] = frozenset()
    intents: frozenset[str] = frozenset()
    heading_to: frozenset[str] = frozenset()
    min_confidence: float = 0.5


@dataclass(frozen=True)
class ActionSpec:
    name: str
    category: str
    purpose: str
    channels: tuple[str, ...]
    value: float
    cooldown_s: float | None
    expires_s: float
    owner: str
    lever: float
    reply_on_trigger_channel: bool
    content: dict[str, str | int | float | bool]
    triggers: tuple[TriggerSpec, ...]

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class CompiledPlaybook:
    version: str
    channels: tuple[str, ...]
    journeys: tuple[JourneySpec, ...]
    segments: tuple[SegmentDef, ...]
    actions: tuple[ActionSpec, ...]
    profile_keys: frozenset[str]
    contact_points: dict[str, ContactPoint]
    lifecycle: LifecycleSettings
    policies: Policies
    intents: tuple[str, ...]
    interests_of: dict[str, frozenset[str]] = field(default_factory=dict)
    _by_name: dict[str, JourneySpec] = field(default_factory=dict)

    def journey(self, name: str) -> JourneySpec:
        return self._by_name[name]

    def is_partner_point(self, touchpoint: str | None) -> bool:
        cp = self.contact_points.get(touchpoint) if touchpoint else None
        return cp is not None and cp.owner == "partner"


def _seconds(value: str | None) -> float | None:
    return None if value is None else seconds(value)


def compile_playbook(playbook: Playbook) -> CompiledPlaybook:
    """Compile a validated playbook (see schemas.playbook.load_playbook)."""
    digest = blake2b(msgspec.json.encode(playbook), digest_size=5).hexdigest()
    journeys = tuple(
        JourneySpec(
            name=j.name,
            category=j.category,
            priority=j.priority,
            key=j.key,
            stall_s=_seconds(j.stall),
            abandon_s=seconds(j.abandon),
            entry=compile_any(j.entry),
            goal=compile_any(j.goal),
            failure=compile_any(j.failures),
            milestones=tuple(
                MilestoneSpec(m.name, i, compile_any(m.when)) for i, m in enumerate(j.milestones)
            ),
            contact_points=frozenset(j.contact_points),
            suppresses=frozenset(j.suppresses),
            intent=j.intent,
            conditions=(
                *j.entry,
                *j.goal,
                *j.failures,
                *(m for milestone in j.milestones for m in milestone.when),
            ),
        )
        for j in playbook.journeys
    )
    actions = tuple(
        ActionSpec(
            name=a.name,
            category=a.category,
            purpose=a.purpose,
            channels=tuple(a.channels),
            value=a.value,
            cooldown_s=_seconds(a.cooldown),
            expires_s=seconds(a.expires),
            owner=a.owner,
            lever=a.lever,
            reply_on_trigger_channel=a.reply_on_trigger_channel,
            content=dict(a.content),
            triggers=tuple(
                TriggerSpec(
                    on_event=compile_any(t.events) if t.events else None,
                    transitions=frozenset(t.transitions),
                    segment_entered=t.segment_entered,
                    journey=t.journey,
                    journey_category=t.journey_category,
                    stages=frozenset(t.stages),
                    channels_tried=tuple(t.channels_tried),
                    within_s=_seconds(t.within),
                    failures_at_least=t.failures_at_least,
                    sentiment_below=t.sentiment_below,
                    segments=frozenset(t.segments),
                    value_tiers=frozenset(t.value_tiers),
                    event_conditions=tuple(t.events),
                    on_request=t.on_request,
                    intent_changed=frozenset(t.intent_changed),
                    intents=frozenset(t.intents),
                    heading_to=frozenset(t.heading_to),
                    min_confidence=t.min_confidence,
                )
                for t in a.when
            ),
        )
        for a in playbook.actions
    )
    return CompiledPlaybook(
        version=f"{playbook.version}@{digest}",
        channels=tuple(playbook.channels),
        journeys=journeys,
        segments=tuple(playbook.segments),
        actions=actions,
        profile_keys=frozenset(playbook.profile_properties),
        contact_points={cp.name: cp for cp in playbook.contact_points},
        lifecycle=playbook.lifecycle,
        policies=playbook.policies,
        intents=tuple(playbook.intents),
        interests_of={cp.name: frozenset(cp.interests) for cp in playbook.contact_points},
        _by_name={j.name: j for j in journeys},
    )
