"""The playbook: what a business declares, in TOML, for Wayfinder to act on.

Contact points, journeys (defined by their goal, not by a path), segments and
actions. Loading validates everything, and every error names the file, the
entry and the field, so a marketer or data engineer can fix it without reading
code.
"""

import itertools
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, Struct

from schemas.journey import TransitionKind
from schemas.types import Vocab

Category = Literal["sales", "service", "support", "onboarding", "partner"]
Purpose = Literal["service", "marketing"]
Lifecycle = Literal["prospect", "new", "active", "dormant"]
Owner = Literal["direct", "partner"]
Scalar = str | int | float | bool

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

#: "90s", "15m", "48h", "7d", "1h30m".
Duration = Annotated[str, Meta(description="a duration such as 90s, 15m, 48h, 7d or 1h30m")]


def seconds(duration: str) -> float:
    """Seconds in a playbook duration (validated at load, so this never fails there)."""
    if not _DURATION.match(duration):
        raise ValueError(f"bad duration {duration!r} (use e.g. 90s, 15m, 48h, 7d)")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(duration))


class EventMatch(Struct, kw_only=True, forbid_unknown_fields=True):
    """Matches an event when every given field matches (lists mean any of)."""

    types: list[Vocab] = []
    channels: list[Vocab] = []
    touchpoints: list[Vocab] = []
    properties: dict[str, Scalar] = {}
    #: True: only events carrying a partner_id; False: only events without one.
    partner: bool | None = None

    def is_empty(self) -> bool:
        return not (self.types or self.channels or self.touchpoints or self.properties) and (
            self.partner is None
        )


class ContactPoint(Struct, kw_only=True, forbid_unknown_fields=True):
    """A place where customer and business meet: a page, an IVR menu, a showroom."""

    name: Vocab
    #: Channels it is served on (a help article may be on web and in the app).
    channels: list[Vocab]
    label: str = ""
    #: Contact points run by channel partners (dealers, resellers) say so.
    owner: Owner = "direct"
    #: Relative cost of serving a contact here (call centre high, help page low).
    cost: float = 0.0
    #: Interests a visit reveals, for segments (e.g. "phones", "mortgages").
    interests: list[Vocab] = []


class Milestone(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Vocab
    when: list[EventMatch]


class JourneyDef(Struct, kw_only=True, forbid_unknown_fields=True):
    """A journey: what the customer is trying to achieve, and how to tell where they are."""

    name: Vocab
    category: Category
    priority: Annotated[int, Meta(ge=0, le=100)]
    entry: list[EventMatch]
    goal: list[EventMatch]
    abandon: Duration
    stall: Duration | None = None
    milestones: list[Milestone] = []
    #: Contact points whose visits are activity in this journey (besides matches above).
    contact_points: list[Vocab] = []
    #: Property that tells concurrent instances apart (e.g. transfer_id): one per value.
    key: str | None = None
    #: Events that count as a failure inside the journey (for proactive support).
    failures: list[EventMatch] = []
    #: Categories of actions this journey suppresses while it is open.
    suppresses: list[Category] = []
    #: The intent a customer on this journey has (the label the intent model learns).
    intent: Vocab | None = None
    description: str = ""


class SegmentDef(Struct, kw_only=True, forbid_unknown_fields=True):
    """A segment: customers for whom every given rule holds."""

    name: Vocab
    description: str = ""
    value_tiers: list[Vocab] = []
    min_lifetime_value: float | None = None
    lifecycle: list[Lifecycle] = []
    #: Contact point -> minimum visits.
    visited: dict[Vocab, Annotated[int, Meta(ge=1)]] = {}
    #: Any of these interests, revealed by visited contact points.
    interests: list[Vocab] = []
    #: Profile attributes (from `profile_properties`) that must equal these values.
    attributes: dict[str, Scalar] = {}


class Trigger(Struct, kw_only=True, forbid_unknown_fields=True):
    """When an action is considered: one "on" (events, transitions or a segment entry),
    and conditions that must all hold."""

    events: list[EventMatch] = []
    transitions: list[TransitionKind] = []
    segment_entered: Vocab | None = None
    journey: Vocab | None = None
    journey_category: Category | None = None
    stages: list[Vocab] = []
    channels_tried: list[Vocab] = []
    within: Duration | None = None
    failures_at_least: Annotated[int, Meta(ge=1)] | None = None
    sentiment_below: Annotated[float, Meta(ge=-1, le=1)] | None = None
    segments: list[Vocab] = []
    value_tiers: list[Vocab] = []
    #: Fire on decision requests (a channel asking for the next action now).
    on_request: bool = False
    #: Fire when the intent model's view of the customer changes to one of these intents
    #: (with a clear margin): e.g. from browsing upgrades to suddenly needing support.
    intent_changed: list[Vocab] = []
    #: The customer's predicted intent is one of these (with `min_confidence`).
    intents: list[Vocab] = []
    #: The next-step model predicts one of these contact points next (proactive actions).
    heading_to: list[Vocab] = []
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.5


class ActionDef(Struct, kw_only=True, forbid_unknown_fields=True):
    """Something Wayfinder may do for a customer, and when."""

    name: Vocab
    category: Category
    purpose: Purpose
    channels: list[Vocab]
    when: list[Trigger]
    value: Annotated[float, Meta(ge=0)] = 1.0
    #: Business lever: a multiplier the business sets to push or hold back an action.
    lever: Annotated[float, Meta(ge=0)] = 1.0
    cooldown: Duration | None = None
    expires: Duration = "24h"
    #: Partner actions go to the partner leading the journey; direct ones to our channels.
    owner: Owner = "direct"
    #: Answer on the channel the trigger event came from (e.g. route the chat just opened).
    reply_on_trigger_channel: bool = False
    content: dict[str, Scalar] = {}
    description: str = ""


class FrequencyCap(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """At most `max` actions of these purposes per `per`, on `channel` ("*": all channels)."""

    max: Annotated[int, Meta(ge=0)]
    per: Duration
    channel: str = "*"
    purposes: tuple[Purpose, ...] = ("marketing",)


class QuietHours(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """No actions of these purposes between `start` and `end`, in the customer's time zone."""

    start: Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    purposes: tuple[Purpose, ...] = ("marketing",)
    #: Without the customer's time zone: "hold" the action, or assume `default_timezone`.
    unknown_timezone: Literal["hold", "default"] = "hold"
    default_timezone: str = "UTC"


class Fatigue(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """After `ignored` actions in a row with no response within `within`, pause for `pause`."""

    ignored: Annotated[int, Meta(ge=1)] = 3
    within: Duration = "14d"
    pause: Duration = "14d"
    purposes: tuple[Purpose, ...] = ("marketing",)


class Policies(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Contact policies, enforced on every decision."""

    #: Share of customers (by a hash of their id) held out: audited, never contacted.
    holdout_share: Annotated[float, Meta(ge=0, le=0.5)] = 0.0
    caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours | None = None
    fatigue: Fatigue | None = None
    #: How long after an action an outcome is still credited to it.
    attribution: Duration = "3d"
    #: With a response model, actions whose expected response is lower are not sent
    #: (contact pressure is spent where it works).
    min_expected_response: Annotated[float, Meta(ge=0, le=1)] = 0.0


class LifecycleSettings(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    new_days: Annotated[float, Meta(gt=0)] = 30.0
    dormant_days: Annotated[float, Meta(gt=0)] = 60.0


class Playbook(Struct, kw_only=True, forbid_unknown_fields=True):
    version: str
    channels: list[Vocab]
    #: What customers may be trying to do; journeys teach them, actions can require them.
    intents: list[Vocab] = []
    profile_properties: list[str] = []
    lifecycle: LifecycleSettings = LifecycleSettings()
    policies: Policies = Policies()
    contact_points: list[ContactPoint] = []
    journeys: list[JourneyDef] = []
    segments: list[SegmentDef] = []
    actions: list[ActionDef] = []

    def journey(self, name: str) -> JourneyDef | None:
        return next((j for j in self.journeys if j.name == name), None)


class PlaybookError(ValueError):
    """A playbook that cannot be used; the message names file, entry and field."""

    def __init__(self, file: str, entry: str, field: str | None, problem: str) -> None:
        where = f"{file}: {entry}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")
        self.file, self.entry, self.field, self.problem = file, entry, field, problem


_SECTIONS: dict[str, type[Struct]] = {
    "contact_points": ContactPoint,
    "journeys": JourneyDef,
    "segments": SegmentDef,
    "actions": ActionDef,
}
_PATH = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`$")


def _split_error(message: str) -> tuple[str | None, str]:
    """msgspec's "... - at `$.a[0].b`" into ("a[0].b", "...")."""
    match = _PATH.search(message)
    if not match:
        field = re.search(r"`(\w+)`", message) if "field" in message else None
        return (field.group(1) if field else None), message
    return match.group(1).lstrip("."), message[: match.start()]


def load_playbook(path: Path | str) -> Playbook:
    """Read, decode and validate a playbook file; raise PlaybookError naming what is wrong."""
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlaybookError(file, "file", None, "no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PlaybookError(file, "file", None, f"not valid TOML: {exc}") from None
    return parse_playbook(raw, file)


def parse_playbook(raw: dict[str, Any], file: str = "<playbook>") -> Playbook:
    """Decode a playbook from its TOML data, entry by entry, then check it as a whole."""
    for section, struct in _SECTIONS.items():
        entries = raw.get(section, [])
        if not isinstance(entries, list):
            raise PlaybookError(file, section, None, "must be an array of tables ([[...]])")
        for index, entry in enumerate(entries):
            label = _entry_label(section, index, entry)
            try:
                msgspec.convert(entry, struct)
            except msgspec.ValidationError as exc:
                field, problem = _split_error(str(exc))
                raise PlaybookError(file, label, field, problem) from None
    try:
        playbook = msgspec.convert(raw, Playbook)
    except msgspec.ValidationError as exc:
        field, problem = _split_error(str(exc))
        raise PlaybookError(file, "playbook", field, problem) from None
    _check(playbook, file)
    return playbook


def _entry_label(section: str, index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{section} '{name}'" if isinstance(name, str) else f"{section}[{index}]"


def _check(pb: Playbook, file: str) -> None:
    """Cross-entry rules: references resolve, goals can match, suppression has no cycle."""
    channels = set(pb.channels)
    for section in ("contact_points", "journeys", "segments", "actions"):
        seen: set[str] = set()
        for entry in getattr(pb, section):
            if entry.name in seen:
                raise PlaybookError(file, f"{section} '{entry.name}'", "name", "declared twice")
            seen.add(entry.name)
    points = {cp.name: cp for cp in pb.contact_points}
    interests = {i for cp in pb.contact_points for i in cp.interests}

    def fail(entry: str, field: str, problem: str) -> None:
        raise PlaybookError(file, entry, field, problem)

    def check_duration(entry: str, field: str, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            return seconds(value)
        except ValueError as exc:
            fail(entry, field, str(exc))
        return None

    def check_matches(entry: str, field: str, matches: list[EventMatch]) -> None:
        for i, m in enumerate(matches):
            where = f"{field}[{i}]"
            for ch in m.channels:
                if ch not in channels:
                    fail(entry, f"{where}.channels", f"unknown channel '{ch}'")
            for tp in m.touchpoints:
                if tp not in points:
                    fail(entry, f"{where}.touchpoints", f"unknown contact point '{tp}'")
            if (
                m.channels
                and m.touchpoints
                and not any(set(points[tp].channels) & set(m.channels) for tp in m.touchpoints)
            ):
                fail(entry, where, "can never match: none of its contact points is on its channels")

    for cp in pb.contact_points:
        if not cp.channels:
            fail(f"contact_points '{cp.name}'", "channels", "needs at least one channel")
        for ch in cp.channels:
            if ch not in channels:
                fail(f"contact_points '{cp.name}'", "channels", f"unknown channel '{ch}'")

    for j in pb.journeys:
        entry = f"journeys '{j.name}'"
        if not j.entry:
            fail(entry, "entry", "needs at least one condition")
        if not j.goal:
            fail(entry, "goal", "needs at least one condition")
        if any(m.is_empty() for m in j.goal):
            fail(
                entry,
                "goal",
                "an empty condition matches every event: the goal would be met at once",
            )
        check_matches(entry, "entry", j.entry)
        check_matches(entry, "goal", j.goal)
        check_matches(entry, "failures", j.failures)
        for k, ms in enumerate(j.milestones):
            check_matches(entry, f"milestones[{k}].when", ms.when)
        for tp in j.contact_points:
            if tp not in points:
                fail(entry, "contact_points", f"unknown contact point '{tp}'")
        stall = check_duration(entry, "stall", j.stall)
        abandon = check_duration(entry, "abandon", j.abandon)
        if stall is not None and abandon is not None and stall >= abandon:
            fail(entry, "stall", f"stall ({j.stall}) must be shorter than abandon ({j.abandon})")
        names = [m.name for m in j.milestones]
        if len(set(names)) != len(names):
            fail(entry, "milestones", "milestone names must be unique")
    _check_suppression_cycles(pb, file)

    for s in pb.segments:
        entry = f"segments '{s.name}'"
        for tp in s.visited:
            if tp not in points:
                fail(entry, "visited", f"unknown contact point '{tp}'")
        for interest in s.interests:
            if interest not in interests:
                fail(entry, "interests", f"no contact point reveals interest '{interest}'")
        for attr in s.attributes:
            if attr not in pb.profile_properties:
                fail(entry, "attributes", f"'{attr}' is not in profile_properties")

    segment_names = {s.name for s in pb.segments}
    intents = set(pb.intents)
    for j in pb.journeys:
        if j.intent is not None and j.intent not in intents:
            fail(f"journeys '{j.name}'", "intent", f"unknown intent '{j.intent}'")
    policies = pb.policies
    for i, cap in enumerate(policies.caps):
        check_duration("policies", f"caps[{i}].per", cap.per)
        if cap.channel != "*" and cap.channel not in channels:
            fail("policies", f"caps[{i}].channel", f"unknown channel '{cap.channel}'")
    if policies.fatigue is not None:
        check_duration("policies", "fatigue.within", policies.fatigue.within)
        check_duration("policies", "fatigue.pause", policies.fatigue.pause)
    check_duration("policies", "attribution", policies.attribution)
    if policies.quiet_hours is not None:
        try:
            ZoneInfo(policies.quiet_hours.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            fail("policies", "quiet_hours.default_timezone", "unknown time zone")
    for a in pb.actions:
        entry = f"actions '{a.name}'"
        if not a.channels:
            fail(entry, "channels", "needs at least one channel")
        for ch in a.channels:
            if ch not in channels:
                fail(entry, "channels", f"unknown channel '{ch}'")
        check_duration(entry, "cooldown", a.cooldown)
        check_duration(entry, "expires", a.expires)
        if not a.when:
            fail(entry, "when", "needs at least one trigger")
        for i, t in enumerate(a.when):
            where = f"when[{i}]"
            ons = (t.events, t.transitions, t.segment_entered, t.on_request, t.intent_changed)
            if sum(bool(x) for x in ons) != 1:
                fail(
                    entry,
                    where,
                    "needs exactly one of events, transitions, segment_entered, on_request or "
                    "intent_changed",
                )
            for field_name in ("intents", "intent_changed"):
                for intent in getattr(t, field_name):
                    if intent not in intents:
                        fail(entry, f"{where}.{field_name}", f"unknown intent '{intent}'")
            for point in t.heading_to:
                if point not in points:
                    fail(entry, f"{where}.heading_to", f"unknown contact point '{point}'")
            check_matches(entry, f"{where}.events", t.events)
            journey = pb.journey(t.journey) if t.journey else None
            if t.journey and journey is None:
                fail(entry, f"{where}.journey", f"unknown journey '{t.journey}'")
            if t.transitions and journey is None:
                fail(entry, f"{where}.transitions", "transitions need the journey they belong to")
            for stage in t.stages:
                if journey is None or stage not in {m.name for m in journey.milestones}:
                    fail(entry, f"{where}.stages", f"'{stage}' is not a milestone of the journey")
            if (
                (t.channels_tried or t.failures_at_least)
                and journey is None
                and (t.journey_category is None)
            ):
                fail(entry, where, "channels_tried and failures_at_least need a journey")
            for ch in t.channels_tried:
                if ch not in channels:
                    fail(entry, f"{where}.channels_tried", f"unknown channel '{ch}'")
            check_duration(entry, f"{where}.within", t.within)
            for seg in [*t.segments, *([t.segment_entered] if t.segment_entered else [])]:
                if seg not in segment_names:
                    fail(entry, where, f"unknown segment '{seg}'")
            if a.reply_on_trigger_channel and not (t.events or t.on_request):
                fail(
                    entry,
                    "reply_on_trigger_channel",
                    "only for actions triggered by events or decision requests",
                )


def _check_suppression_cycles(pb: Playbook, file: str) -> None:
    """Category A suppressing B while B suppresses A (directly or not) has no winner."""
    edges: dict[str, set[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for j in pb.journeys:
        for target in j.suppresses:
            edges.setdefault(j.category, set()).add(target)
            via.setdefault((j.category, target), j.name)

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                journeys = sorted({via[(a, b)] for a, b in itertools.pairwise(cycle)})
                raise PlaybookError(
                    file,
                    f"journeys '{journeys[0]}'",
                    "suppresses",
                    "cycle in suppression: "
                    + " -> ".join(cycle)
                    + " (journeys "
                    + ", ".join(journeys)
                    + ")",
                )
            visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])
