"""Playbook event conditions compiled into fast predicates.

A condition is checked for every journey and action on every event, so it is
turned once into a closure over frozensets instead of being interpreted.
"""

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from schemas.event import Event
from schemas.playbook import EventMatch

Predicate = Callable[[Event], bool]
T = TypeVar("T")


def _never(_event: Event) -> bool:
    return False


def compile_match(match: EventMatch) -> Predicate:
    """A predicate true when every field the condition gives matches the event."""
    types = frozenset(match.types)
    channels = frozenset(match.channels)
    touchpoints = frozenset(match.touchpoints)
    properties = tuple(match.properties.items())
    partner = match.partner

    def matches(event: Event) -> bool:
        if types and event.type not in types:
            return False
        if channels and event.channel not in channels:
            return False
        if touchpoints and event.touchpoint not in touchpoints:
            return False
        if properties:
            props = event.properties
            for name, value in properties:
                if props.get(name) != value:
                    return False
        return partner is None or (event.partner_id is not None) == partner

    return matches


def compile_any(matches: Sequence[EventMatch]) -> Predicate:
    """True when any of the conditions matches; never true for an empty list."""
    predicates = [compile_match(m) for m in matches]
    if not predicates:
        return _never
    if len(predicates) == 1:
        return predicates[0]

    def any_matches(event: Event) -> bool:
        return any(p(event) for p in predicates)

    return any_matches


def could_match(match: EventMatch, type_: str, channel: str, touchpoint: str | None) -> bool:
    """Whether the condition can match an event of this kind, whatever its properties."""
    return (
        (not match.types or type_ in match.types)
        and (not match.channels or channel in match.channels)
        and (not match.touchpoints or touchpoint in match.touchpoints)
    )


class Prefilter(Generic[T]):
    """Which playbook items might care about an event, by its type, channel and contact point.

    Most events concern few journeys and no action; this answers from a bounded
    cache so that the full predicates only run where they can succeed.
    """

    def __init__(
        self,
        items: Sequence[tuple[T, Sequence[EventMatch], frozenset[str]]],
        limit: int = 8192,
    ) -> None:
        self._items = items
        self._limit = limit
        self._cache: dict[tuple[str, str, str | None], tuple[T, ...]] = {}

    def relevant(self, event: Event) -> tuple[T, ...]:
        kind = (event.type, event.channel, event.touchpoint)
        found = self._cache.get(kind)
        if found is None:
            type_, channel, touchpoint = kind
            found = tuple(
                item
                for item, conditions, touchpoints in self._items
                if (touchpoint is not None and touchpoint in touchpoints)
                or any(could_match(m, type_, channel, touchpoint) for m in conditions)
            )
            if len(self._cache) >= self._limit:  # open vocabularies: stay bounded
                self._cache.clear()
            self._cache[kind] = found
        return found
