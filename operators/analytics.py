"""Journey analytics from journey transitions: the same map live and in a replay.

Every finished journey (completed or abandoned) carries its path; folding those
paths into a ContactMap, per journey and for `all`, gives the live contact-point
map and the journey KPIs. The dataflow does it in a stateful step per scope;
`wayfinder replay --events` does it over the cores in event time; both call this.
When a bounded input ends (an embedded run, a replay), the journeys still in
flight are folded too, as `open`: where customers are when the story stops.
"""

from collections.abc import Iterable

from msgspec import Struct

from operators.contact_map import ALL, ContactMap, Step
from schemas.journey import JourneyTransition
from state.context import CustomerContext

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


class InFlight(Struct, frozen=True):
    """A journey still open when a bounded input ended; never published as a transition."""

    journey: str
    steps: tuple[tuple[str, float, str], ...]
    partner_id: str | None = None
    sentiment: float | None = None


def in_flight(ctx: CustomerContext) -> list[InFlight]:
    """The customer's open journeys, for the map at the end of a bounded input."""
    return [
        InFlight(
            journey=inst.journey,
            steps=tuple((t.touchpoint or t.channel, t.ts, t.channel) for t in inst.path),
            partner_id=inst.owner,
            sentiment=inst.sentiment,
        )
        for inst in ctx.journeys
        if inst.path
    ]


def fold_in_flight(cmap: ContactMap, journey: InFlight, scope: str) -> None:
    cmap.add_case(
        scope,
        [Step(point, ts, channel) for point, ts, channel in journey.steps],
        goal=False,
        outcome="open",
        partner=journey.partner_id,
        sentiment=journey.sentiment,
    )


def map_of(
    transitions: Iterable[JourneyTransition], open_journeys: Iterable[InFlight] = ()
) -> ContactMap:
    """The contact-point map of finished (and, at the end of a bounded input, open) journeys."""
    cmap = ContactMap()
    for transition in transitions:
        for scope in scopes_of(transition):
            fold_transition(cmap, transition, scope)
    for journey in open_journeys:
        for scope in (journey.journey, ALL):
            fold_in_flight(cmap, journey, scope)
    return cmap
