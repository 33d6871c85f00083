"""Playbook event conditions compiled into fast predicates.

A condition is checked for every journey and action on every event, so it is
turned once into a closure over frozensets instead of being interpreted.
"""

from collections.abc import Callable, Sequence

from schemas.event import Event
from schemas.playbook import EventMatch

Predicate = Callable[[Event], bool]


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
