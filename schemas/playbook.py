"""The playbook: what a business declares, in TOML, for Wayfinder to act on.

Contact points, journeys (defined by their goal, not by a path), segments and
actions. Loading validates everything and reports every error at once, each
naming the file, the entry and the field, so a marketer or data engineer can fix
them without reading code. (Names that nothing produces are warnings, not errors:
see schemas.vocabulary.)
"""

import itertools
import math
import re
import tomllib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

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
#: The longest duration a playbook may give: beyond it, times (now + duration) stop
#: being dates a clock or a datetime can hold, and nothing a business plans is longer.
MAX_DURATION = "3650d"
_MAX_SECONDS = 3650 * 86400.0

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


class PlaybookProblem(Struct, frozen=True):
    """One thing wrong (or suspicious) in a playbook: the file, the entry, the field, what."""

    file: str
    entry: str
    field: str | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.entry}" + (f": field '{self.field}'" if self.field else "")
        return f"{where}: {self.problem}"


class PlaybookError(ValueError):
    """A playbook that cannot be used, with every problem found in it.

    `problems` lists them all, each naming file, entry and field; `file`, `entry`,
    `field` and `problem` are those of the first one.
    """

    def __init__(self, problems: Sequence[PlaybookProblem]) -> None:
        if not problems:
            raise ValueError("a PlaybookError needs at least one problem")
        self.problems: tuple[PlaybookProblem, ...] = tuple(problems)
        first = self.problems[0]
        self.file, self.entry, self.field, self.problem = (
            first.file,
            first.entry,
            first.field,
            first.problem,
        )
        super().__init__(_render(self.problems))

    def __reduce__(self) -> tuple[type["PlaybookError"], tuple[tuple[PlaybookProblem, ...]]]:
        return type(self), (self.problems,)


def _render(problems: Sequence[PlaybookProblem]) -> str:
    """One problem: its line, as is. Several: a count, then one indented line each."""
    if len(problems) == 1:
        return str(problems[0])
    lines = "\n".join(f"  {p}" for p in problems)
    return f"{len(problems)} problems in {problems[0].file}:\n{lines}"


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


class _Report:
    """The problems found so far in one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[PlaybookProblem] = []

    def add(self, entry: str, field: str | None, problem: str) -> None:
        found = PlaybookProblem(self.file, entry, field, problem)
        if found not in self.problems:  # e.g. the same unknown channel listed twice
            self.problems.append(found)

    def raise_if_any(self) -> None:
        if self.problems:
            raise PlaybookError(self.problems)


#: A playbook is a few kilobytes; a file far larger is not one (or is /dev/zero).
MAX_FILE_BYTES = 16 * 1024 * 1024


def load_playbook(path: Path | str) -> Playbook:
    """Read, decode and validate a playbook file; raise PlaybookError naming what is wrong."""
    path = Path(path)
    file = str(path)
    return parse_playbook(_read_toml(path, file), file)


def _read_toml(path: Path, file: str) -> dict[str, Any]:
    """The TOML data of a file, or a PlaybookError saying why it cannot be read."""

    def unusable(problem: str) -> PlaybookError:
        return PlaybookError([PlaybookProblem(file, "file", None, problem)])

    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise unusable("no such file") from None
    except IsADirectoryError:
        raise unusable("is a directory, not a playbook file") from None
    except PermissionError:
        raise unusable("cannot be read: permission denied") from None
    except OSError as exc:
        raise unusable(f"cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise unusable(f"not a usable path: {exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise unusable(f"too large for a playbook (over {MAX_FILE_BYTES // 2**20} MB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise unusable(
            f"not UTF-8 text: byte {data[exc.start]:#04x} on line {line} (save it as UTF-8)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise unusable(f"not valid TOML: {exc}") from None
    except RecursionError:
        raise unusable("not usable TOML: arrays or tables nested too deeply") from None


def parse_playbook(raw: dict[str, Any], file: str = "<playbook>") -> Playbook:
    """Decode a playbook from its TOML data, entry by entry, then check it as a whole.

    Every problem is reported at once (in one PlaybookError). An entry or a setting
    that cannot be decoded is reported and left out; the rules across entries then run
    on the rest, without reporting again what only follows from it (a reference to a
    journey left out, an intent when `intents` is broken...).
    """
    report = _Report(file)
    good: dict[str, Any] = {}
    #: Section -> names of its entries that could not be decoded.
    broken: dict[str, set[str]] = {section: set() for section in _SECTIONS}
    #: Top-level keys (settings or whole sections) that could not be decoded.
    unusable: set[str] = set()
    for section, struct in _SECTIONS.items():
        entries = raw.get(section, [])
        if not isinstance(entries, list):
            report.add(section, None, "must be an array of tables ([[...]])")
            unusable.add(section)
            continue
        good[section] = []
        for index, entry in enumerate(entries):
            try:
                msgspec.convert(entry, struct)
            except msgspec.ValidationError as exc:
                field, problem = _split_error(str(exc))
                report.add(_entry_label(section, index, entry), field, problem)
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str):
                    broken[section].add(name)
            else:
                good[section].append(entry)
    unusable |= _decode_settings(raw, good, report)
    for name, placeholder in _PLACEHOLDERS.items():  # only read by checks it would mislead
        good.setdefault(name, placeholder)
    try:
        playbook = msgspec.convert(good, Playbook)
    except msgspec.ValidationError as exc:  # pragma: no cover - each part decoded above
        field, problem = _split_error(str(exc))
        report.add("playbook", field, problem)
        raise PlaybookError(report.problems) from None
    interests = _raw_interests(raw.get("contact_points"), broken["contact_points"])
    _check(_Context(playbook, report, broken, unusable, interests))
    report.raise_if_any()
    return playbook


#: Stand-ins for required settings that could not be decoded (checks that read them
#: are skipped).
_PLACEHOLDERS: dict[str, Any] = {"version": "", "channels": []}


def _decode_settings(raw: dict[str, Any], good: dict[str, Any], report: _Report) -> set[str]:
    """Decode each top-level setting on its own, so each broken one is reported; the
    good ones go to `good`. Returns the names of those that are missing or broken."""
    fields = {f.name: f for f in msgspec.structs.fields(Playbook) if f.name not in _SECTIONS}
    unusable: set[str] = set()
    for key, value in raw.items():
        if key in _SECTIONS:
            continue
        info = fields.get(key)
        if info is None:
            report.add("playbook", key, f"Object contains unknown field `{key}`")
            continue
        try:
            msgspec.convert(value, info.type)
        except msgspec.ValidationError as exc:
            path, problem = _split_error(str(exc))
            if path and not path.startswith("["):
                path = "." + path
            report.add("playbook", key + (path or ""), problem)
            unusable.add(key)
        else:
            good[key] = value
    for info in fields.values():
        if info.required and info.name not in raw:
            report.add("playbook", info.name, f"Object missing required field `{info.name}`")
            unusable.add(info.name)
    return unusable


def _raw_interests(entries: Any, names: set[str]) -> set[str]:
    """Interests of the contact points that could not be decoded, as far as they read."""
    found: set[str] = set()
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        if isinstance(name, str) and name in names:
            interests = entry.get("interests")
            if isinstance(interests, list):
                found.update(i for i in interests if isinstance(i, str))
    return found


def _entry_label(section: str, index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{section} '{name}'" if isinstance(name, str) else f"{section}[{index}]"


class _Context:
    """What the rules across entries share: the playbook, its names, and the report.

    The `is_...` tests also accept what cannot be checked: a name of an entry that could
    not be decoded, or any name when the whole section or setting could not be.
    """

    def __init__(
        self,
        pb: Playbook,
        report: _Report,
        broken: dict[str, set[str]],
        unusable: set[str],
        interests: set[str],
    ) -> None:
        self.pb = pb
        self.report = report
        self.broken = broken
        self.unusable = unusable
        self.channels = set(pb.channels)
        self.points = {cp.name: cp for cp in pb.contact_points}
        self.interests = {i for cp in pb.contact_points for i in cp.interests} | interests
        self.segments = {s.name for s in pb.segments}
        self.intents = set(pb.intents)

    def add(self, entry: str, field: str | None, problem: str) -> None:
        self.report.add(entry, field, problem)

    def _known(self, names: Collection[str], key: str, name: str) -> bool:
        return name in names or name in self.broken.get(key, ()) or key in self.unusable

    def is_channel(self, name: str) -> bool:
        return self._known(self.channels, "channels", name)

    def is_point(self, name: str) -> bool:
        return self._known(self.points, "contact_points", name)

    def is_interest(self, name: str) -> bool:
        return self._known(self.interests, "contact_points", name)

    def is_segment(self, name: str) -> bool:
        return self._known(self.segments, "segments", name)

    def is_intent(self, name: str) -> bool:
        return self._known(self.intents, "intents", name)

    def is_profile_property(self, name: str) -> bool:
        return self._known(self.pb.profile_properties, "profile_properties", name)

    def is_journey(self, name: str) -> bool:
        return self._known({j.name for j in self.pb.journeys}, "journeys", name)

    def duration(
        self, entry: str, field: str, value: str | None, *, optional: bool = False
    ) -> float | None:
        """Seconds in `value`, or None (and a problem) when it is not a usable duration:
        not a duration, zero, or longer than MAX_DURATION. (`optional`: the field may be
        left out, which the problem about a zero says.)"""
        if value is None:
            return None
        try:
            found = seconds(value)
        except ValueError as exc:
            self.add(entry, field, str(exc))
            return None
        if found <= 0:
            hint = " (leave it out for none)" if optional else ""
            self.add(entry, field, f"must be longer than 0s, not '{value}'{hint}")
            return None
        if not found <= _MAX_SECONDS:  # also inf, from digits beyond a float
            self.add(entry, field, f"'{value}' is too long: at most {MAX_DURATION} (ten years)")
            return None
        return found

    def finite(self, entry: str, field: str, value: float | None) -> None:
        """A number others multiply or compare with: inf and nan are not numbers there."""
        if value is not None and not math.isfinite(value):
            self.add(entry, field, f"must be a finite number, got {value}")

    def unique(self, entry: str, field: str, names: Sequence[str], what: str) -> None:
        """Each name listed once."""
        seen: set[str] = set()
        for name in names:
            if name in seen:
                self.add(entry, field, f"{what} '{name}' listed twice")
            seen.add(name)

    def matches(self, entry: str, field: str, matches: list[EventMatch]) -> None:
        for i, m in enumerate(matches):
            where = f"{field}[{i}]"
            for ch in m.channels:
                if not self.is_channel(ch):
                    self.add(entry, f"{where}.channels", f"unknown channel '{ch}'")
            for tp in m.touchpoints:
                if not self.is_point(tp):
                    self.add(entry, f"{where}.touchpoints", f"unknown contact point '{tp}'")
            for key, value in m.properties.items():
                if isinstance(value, float) and not math.isfinite(value):
                    self.add(entry, f"{where}.properties", f"'{key}' = {value} can never match")
            if (
                m.channels
                and m.touchpoints
                and all(tp in self.points for tp in m.touchpoints)
                and not any(set(self.points[tp].channels) & set(m.channels) for tp in m.touchpoints)
            ):
                self.add(
                    entry, where, "can never match: none of its contact points is on its channels"
                )


def _check(ctx: _Context) -> None:
    """Rules across entries: names are declared once, references resolve, goals can match,
    suppression has no cycle, durations and numbers are usable."""
    _check_names(ctx)
    _check_contact_points(ctx)
    for j in ctx.pb.journeys:
        _check_journey(ctx, j)
    _check_suppression_cycles(ctx)
    for s in ctx.pb.segments:
        _check_segment(ctx, s)
    _check_lifecycle(ctx)
    _check_policies(ctx)
    for a in ctx.pb.actions:
        _check_action(ctx, a)


#: Top-level lists that declare names, and what each name is.
_DECLARED = {"channels": "channel", "intents": "intent", "profile_properties": "property"}


def _check_names(ctx: _Context) -> None:
    """Every name is declared once: entries of a section, and the top-level lists."""
    for section in _SECTIONS:
        seen: set[str] = set()
        for entry in getattr(ctx.pb, section):
            if entry.name in seen:
                ctx.add(f"{section} '{entry.name}'", "name", "declared twice")
            seen.add(entry.name)
    for setting, what in _DECLARED.items():
        if setting not in ctx.unusable:
            ctx.unique("playbook", setting, getattr(ctx.pb, setting), what)


def _check_channels(ctx: _Context, entry: str, channels: list[str]) -> None:
    """An entry's `channels`: at least one, each declared, each once."""
    if not channels:
        ctx.add(entry, "channels", "needs at least one channel")
    for ch in channels:
        if not ctx.is_channel(ch):
            ctx.add(entry, "channels", f"unknown channel '{ch}'")
    ctx.unique(entry, "channels", channels, "channel")


def _check_contact_points(ctx: _Context) -> None:
    for cp in ctx.pb.contact_points:
        entry = f"contact_points '{cp.name}'"
        _check_channels(ctx, entry, cp.channels)
        ctx.finite(entry, "cost", cp.cost)


def _check_journey(ctx: _Context, j: JourneyDef) -> None:
    entry = f"journeys '{j.name}'"
    if not j.entry:
        ctx.add(entry, "entry", "needs at least one condition")
    if not j.goal:
        ctx.add(entry, "goal", "needs at least one condition")
    if any(m.is_empty() for m in j.goal):
        ctx.add(
            entry, "goal", "an empty condition matches every event: the goal would be met at once"
        )
    ctx.matches(entry, "entry", j.entry)
    ctx.matches(entry, "goal", j.goal)
    ctx.matches(entry, "failures", j.failures)
    for k, ms in enumerate(j.milestones):
        ctx.matches(entry, f"milestones[{k}].when", ms.when)
    for tp in j.contact_points:
        if not ctx.is_point(tp):
            ctx.add(entry, "contact_points", f"unknown contact point '{tp}'")
    stall = ctx.duration(entry, "stall", j.stall, optional=True)
    abandon = ctx.duration(entry, "abandon", j.abandon)
    if stall is not None and abandon is not None and stall >= abandon:
        ctx.add(entry, "stall", f"stall ({j.stall}) must be shorter than abandon ({j.abandon})")
    names = [m.name for m in j.milestones]
    if len(set(names)) != len(names):
        ctx.add(entry, "milestones", "milestone names must be unique")
    if j.intent is not None and not ctx.is_intent(j.intent):
        ctx.add(entry, "intent", f"unknown intent '{j.intent}'")


def _check_suppression_cycles(ctx: _Context) -> None:
    """Category A suppressing B while B suppresses A (directly or not) has no winner."""
    edges: dict[str, set[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for j in ctx.pb.journeys:
        for target in j.suppresses:
            edges.setdefault(j.category, set()).add(target)
            via.setdefault((j.category, target), j.name)
    reported: set[frozenset[tuple[str, str]]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                steps = frozenset(itertools.pairwise(cycle))
                if steps in reported:  # the same cycle, entered at another category
                    continue
                reported.add(steps)
                journeys = sorted({via[step] for step in steps})
                ctx.add(
                    f"journeys '{journeys[0]}'",
                    "suppresses",
                    "cycle in suppression: "
                    + " -> ".join(cycle)
                    + " (journeys "
                    + ", ".join(journeys)
                    + ")",
                )
            else:
                visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])


def _check_segment(ctx: _Context, s: SegmentDef) -> None:
    entry = f"segments '{s.name}'"
    for tp in s.visited:
        if not ctx.is_point(tp):
            ctx.add(entry, "visited", f"unknown contact point '{tp}'")
    for interest in s.interests:
        if not ctx.is_interest(interest):
            ctx.add(entry, "interests", f"no contact point reveals interest '{interest}'")
    for attr, value in s.attributes.items():
        if not ctx.is_profile_property(attr):
            ctx.add(entry, "attributes", f"'{attr}' is not in profile_properties")
        if isinstance(value, float) and not math.isfinite(value):
            ctx.add(entry, "attributes", f"'{attr}' = {value} can never match")
    ctx.finite(entry, "min_lifetime_value", s.min_lifetime_value)


def _check_lifecycle(ctx: _Context) -> None:
    if "lifecycle" not in ctx.unusable:
        ctx.finite("lifecycle", "new_days", ctx.pb.lifecycle.new_days)
        ctx.finite("lifecycle", "dormant_days", ctx.pb.lifecycle.dormant_days)


def _check_policies(ctx: _Context) -> None:
    if "policies" in ctx.unusable:
        return
    policies = ctx.pb.policies
    for i, cap in enumerate(policies.caps):
        ctx.duration("policies", f"caps[{i}].per", cap.per)
        if cap.channel != "*" and not ctx.is_channel(cap.channel):
            ctx.add("policies", f"caps[{i}].channel", f"unknown channel '{cap.channel}'")
        _check_purposes(ctx, f"caps[{i}]", cap.purposes)
    if policies.fatigue is not None:
        ctx.duration("policies", "fatigue.within", policies.fatigue.within)
        ctx.duration("policies", "fatigue.pause", policies.fatigue.pause)
        _check_purposes(ctx, "fatigue", policies.fatigue.purposes)
    ctx.duration("policies", "attribution", policies.attribution)
    quiet = policies.quiet_hours
    if quiet is not None:
        problem = time_zone_problem(quiet.default_timezone)
        if problem:
            ctx.add("policies", "quiet_hours.default_timezone", problem)
        if quiet.start == quiet.end:
            ctx.add(
                "policies",
                "quiet_hours.end",
                f"the same as start ({quiet.start}): quiet all day, every day",
            )
        _check_purposes(ctx, "quiet_hours", quiet.purposes)


def _check_purposes(ctx: _Context, field: str, purposes: tuple[str, ...]) -> None:
    """A policy applies to the purposes it lists: none means it does nothing."""
    if not purposes:
        ctx.add("policies", f"{field}.purposes", "needs at least one purpose (or leave it out)")


def time_zone_problem(name: str) -> str | None:
    """What is wrong with an IANA time zone name (None: it is one).

    zoneinfo raises ZoneInfoNotFoundError for an unknown name, ValueError for one that
    is not a normalised relative key (or names a file that is not a zone), and OSError
    for a folder of zones ("Europe") or a name the file system refuses.
    """
    if not name.isprintable():
        return f"unknown time zone {name!r} (it has control characters)"
    try:
        ZoneInfo(name)
    except IsADirectoryError:
        examples = sorted(z for z in available_timezones() if z.startswith(name + "/"))
        hint = f", e.g. '{examples[0]}'" if examples else ""
        return f"'{name}' is a region, not a time zone: name a zone in it{hint}"
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone '{name}' (use an IANA name such as 'Europe/Paris' or 'UTC')"
    return None


def _check_action(ctx: _Context, a: ActionDef) -> None:
    entry = f"actions '{a.name}'"
    _check_channels(ctx, entry, a.channels)
    ctx.duration(entry, "cooldown", a.cooldown, optional=True)
    ctx.duration(entry, "expires", a.expires)
    ctx.finite(entry, "value", a.value)
    ctx.finite(entry, "lever", a.lever)
    for key, value in a.content.items():
        if isinstance(value, float) and not math.isfinite(value):
            ctx.add(entry, "content", f"'{key}' must be a finite number, got {value}")
    if not a.when:
        ctx.add(entry, "when", "needs at least one trigger")
    for i, t in enumerate(a.when):
        _check_trigger(ctx, entry, f"when[{i}]", t)
    if a.reply_on_trigger_channel and not all(t.events or t.on_request for t in a.when):
        ctx.add(
            entry,
            "reply_on_trigger_channel",
            "only for actions triggered by events or decision requests",
        )


def _check_trigger(ctx: _Context, entry: str, where: str, t: Trigger) -> None:
    ons = (t.events, t.transitions, t.segment_entered, t.on_request, t.intent_changed)
    if sum(bool(x) for x in ons) != 1:
        ctx.add(
            entry,
            where,
            "needs exactly one of events, transitions, segment_entered, on_request or "
            "intent_changed",
        )
    for field_name in ("intents", "intent_changed"):
        for intent in getattr(t, field_name):
            if not ctx.is_intent(intent):
                ctx.add(entry, f"{where}.{field_name}", f"unknown intent '{intent}'")
    for point in t.heading_to:
        if not ctx.is_point(point):
            ctx.add(entry, f"{where}.heading_to", f"unknown contact point '{point}'")
    ctx.matches(entry, f"{where}.events", t.events)
    _check_trigger_journey(ctx, entry, where, t)
    for ch in t.channels_tried:
        if not ctx.is_channel(ch):
            ctx.add(entry, f"{where}.channels_tried", f"unknown channel '{ch}'")
    ctx.duration(entry, f"{where}.within", t.within, optional=True)
    for seg in [*t.segments, *([t.segment_entered] if t.segment_entered else [])]:
        if not ctx.is_segment(seg):
            ctx.add(entry, where, f"unknown segment '{seg}'")


def _check_trigger_journey(ctx: _Context, entry: str, where: str, t: Trigger) -> None:
    """The journey a trigger names, and what needs one (a journey that is unknown or
    left out is reported once, not again for every condition that needs it)."""
    journey = ctx.pb.journey(t.journey) if t.journey else None
    if t.journey and not ctx.is_journey(t.journey):
        ctx.add(entry, f"{where}.journey", f"unknown journey '{t.journey}'")
    if t.transitions and t.journey is None:
        ctx.add(entry, f"{where}.transitions", "transitions need the journey they belong to")
    if t.journey is None or journey is not None:
        milestones = {m.name for m in journey.milestones} if journey else set()
        for stage in t.stages:
            if stage not in milestones:
                ctx.add(entry, f"{where}.stages", f"'{stage}' is not a milestone of the journey")
    if (
        (t.channels_tried or t.failures_at_least)
        and t.journey is None
        and t.journey_category is None
    ):
        ctx.add(entry, where, "channels_tried and failures_at_least need a journey")
