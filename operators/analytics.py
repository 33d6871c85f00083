"""Journey analytics from journey transitions: the same map live and in a replay.

Every finished journey (completed or abandoned) carries its path; folding those
paths into a ContactMap, per journey and for `all`, gives the live contact-point
map and the journey KPIs. The dataflow does it in a stateful step per scope;
`wayfinder replay --events` does it over the cores in event time; both call this.
"""

from collections.abc import Iterable

from operators.contact_map import ALL, ContactMap, Step
from schemas.journey import JourneyTransition

TERMINAL = frozenset({"completed", "abandoned"})


def steps_of(transition: JourneyTransition) -> list[Step]:
    """The path of a finished journey as map steps (the channel stands in for a
    step without a contact point)."""
    return [
        Step(p.contact_point or p.channel, p.at.timestamp(), p.channel) for p in transition.path
    ]


def scopes_of(transition: JourneyTransition) -> tuple[str, ...]:
    """The map scopes a finished journey counts in: the journey itself, and all."""
    return (transition.journey, ALL)


def fold_transition(cmap: ContactMap, transition: JourneyTransition, scope: str) -> bool:
    """Fold a finished journey into one scope of the map; False for other transitions."""
    if transition.kind not in TERMINAL or not transition.path:
        return False
    cmap.add_case(
        scope,
        steps_of(transition),
        goal=transition.kind == "completed",
        outcome=transition.kind,
        partner=transition.partner_id,
        sentiment=transition.sentiment,
    )
    return True


def map_of(transitions: Iterable[JourneyTransition]) -> ContactMap:
    """The contact-point map of a set of transitions (a replay, or a test's oracle)."""
    cmap = ContactMap()
    for transition in transitions:
        for scope in scopes_of(transition):
            fold_transition(cmap, transition, scope)
    return cmap
