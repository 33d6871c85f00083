"""Names a playbook relies on that nothing produces: warnings, with a "did you mean".

Event types, value tiers and event properties are open vocabularies: the channels
send them, the playbook only refers to them, so a misspelt one (`transfer_faild`) is
valid and silently never matches. Given what is known to be produced (a
`Vocabulary`), `vocabulary_warnings` names every such reference, with the closest
known name when there is one. Warnings never stop a playbook from loading.
"""

import difflib
from collections.abc import Iterable, Iterator

from msgspec import Struct

from schemas.event import SPECIAL_TYPES, Event
from schemas.playbook import EventMatch, JourneyDef, Playbook, PlaybookProblem

#: How alike a known name must be to be suggested (difflib's ratio; 0.6, its default,
#: suggests `purchase` for `car_purchased`, a different event rather than a typo).
SUGGESTION_CUTOFF = 0.8

#: The event property that carries a customer's value tier.
_TIER_PROPERTY = "value_tier"


class Vocabulary(Struct, kw_only=True, frozen=True):
    """What is known to be produced outside the playbook (by channels, a simulator...).

    An empty set means "not known": that vocabulary is not checked at all.
    """

    #: Event `type`s that are sent (the special types need not be listed).
    event_types: frozenset[str] = frozenset()
    #: Values of the `value_tier` event property.
    value_tiers: frozenset[str] = frozenset()
    #: Keys of event `properties`.
    property_keys: frozenset[str] = frozenset()

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> "Vocabulary":
        """The vocabulary these events use (e.g. a sample of a simulator's output)."""
        types: set[str] = set()
        tiers: set[str] = set()
        keys: set[str] = set()
        for event in events:
            types.add(event.type)
            keys.update(event.properties)
            tier = event.properties.get(_TIER_PROPERTY)
            if isinstance(tier, str):
                tiers.add(tier)
        return cls(
            event_types=frozenset(types),
            value_tiers=frozenset(tiers),
            property_keys=frozenset(keys),
        )

    def __or__(self, other: "Vocabulary") -> "Vocabulary":
        return Vocabulary(
            event_types=self.event_types | other.event_types,
            value_tiers=self.value_tiers | other.value_tiers,
            property_keys=self.property_keys | other.property_keys,
        )


def vocabulary_warnings(
    playbook: Playbook, known: Vocabulary, file: str = "<playbook>"
) -> list[PlaybookProblem]:
    """Every event type, value tier and event property the playbook refers to that
    neither it nor `known` produces, entry by entry (one warning per place)."""
    checker = _Checker(file, known)
    checker.run(playbook)
    return checker.warnings


class _Checker:
    def __init__(self, file: str, known: Vocabulary) -> None:
        self.file = file
        # The special types are the contract's own: Wayfinder and every channel know them.
        self.types = known.event_types | SPECIAL_TYPES if known.event_types else frozenset()
        self.tiers = known.value_tiers
        self.keys = known.property_keys
        self.warnings: list[PlaybookProblem] = []

    def run(self, pb: Playbook) -> None:
        for name in pb.profile_properties:
            self.check(self.keys, "event property", name, "playbook", "profile_properties")
        for j in pb.journeys:
            entry = f"journeys '{j.name}'"
            for field, match in _journey_matches(j):
                self.match(entry, field, match)
            if j.key is not None:
                self.check(self.keys, "event property", j.key, entry, "key")
        for s in pb.segments:
            for tier in s.value_tiers:
                self.check(self.tiers, "value tier", tier, f"segments '{s.name}'", "value_tiers")
        for a in pb.actions:
            entry = f"actions '{a.name}'"
            for i, t in enumerate(a.when):
                for k, match in enumerate(t.events):
                    self.match(entry, f"when[{i}].events[{k}]", match)
                for tier in t.value_tiers:
                    self.check(self.tiers, "value tier", tier, entry, f"when[{i}].value_tiers")

    def match(self, entry: str, field: str, match: EventMatch) -> None:
        for kind in match.types:
            self.check(self.types, "event type", kind, entry, f"{field}.types")
        for key, value in match.properties.items():
            self.check(self.keys, "event property", key, entry, f"{field}.properties")
            if key == _TIER_PROPERTY and isinstance(value, str):
                self.check(self.tiers, "value tier", value, entry, f"{field}.properties")

    def check(self, known: frozenset[str], what: str, name: str, entry: str, field: str) -> None:
        if not known or name in known:
            return
        problem = f"unknown {what} '{name}' (nothing produces it)"
        close = suggestion(name, known)
        if close is not None:
            problem += f"; did you mean '{close}'?"
        self.warnings.append(PlaybookProblem(self.file, entry, field, problem))


def suggestion(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` is most likely a misspelling of, if any: one with the same
    letters in another order (`hihg`), else the closest by difflib's ratio."""
    candidates = sorted(known)
    letters = sorted(name)
    same = [c for c in candidates if sorted(c) == letters and c != name]
    if same:
        return same[0]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=SUGGESTION_CUTOFF)
    return close[0] if close else None


def _journey_matches(j: JourneyDef) -> Iterator[tuple[str, EventMatch]]:
    """(field, condition) for every event condition of a journey."""
    for field, matches in (("entry", j.entry), ("goal", j.goal), ("failures", j.failures)):
        for i, match in enumerate(matches):
            yield f"{field}[{i}]", match
    for k, milestone in enumerate(j.milestones):
        for i, match in enumerate(milestone.when):
            yield f"milestones[{k}].when[{i}]", match
