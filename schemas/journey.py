"""A journey transition, published on the `journeys` topic."""

from datetime import datetime
from typing import Literal

from msgspec import Struct

#: `merged`: an anonymous visitor's journey ends here and continues in the
#: identified customer's (count distinct journeys as entered minus merged).
TransitionKind = Literal[
    "entered", "progressed", "stalled", "resumed", "completed", "abandoned", "merged"
]


class PathStep(Struct, array_like=True, frozen=True):
    """One step of a finished journey: when, at which contact point, on which channel."""

    at: datetime
    contact_point: str | None
    channel: str


class JourneyTransition(Struct, kw_only=True, omit_defaults=True):
    """A customer's journey moved: entered, reached a milestone, stalled, ended."""

    transition_id: str
    #: The customer's (or visitor's) pseudonym (`operators.identity.pseudonym`).
    customer: str
    journey: str
    category: str
    kind: TransitionKind
    at: datetime
    duration_seconds: float
    contact_points: list[str]
    channels: list[str]
    #: The instance key value (e.g. the transfer id) when the journey has one.
    instance: str | None = None
    stage: str | None = None
    milestone: str | None = None
    loops: int = 0
    trigger_event_id: str | None = None
    partner_id: str | None = None
    #: On `merged`: the pseudonym of the customer the visitor's journey continues in.
    merged_into: str | None = None
    sentiment: float | None = None
    #: The steps taken, on `completed` and `abandoned`: what the contact-point map learns from.
    path: list[PathStep] = []


class IntentTransition(Struct, kw_only=True):
    """The intent model's view of what a customer is trying to do changed, with a clear
    margin (published on the `journeys` topic beside journey transitions)."""

    transition_id: str
    #: The customer's pseudonym (`operators.identity.pseudonym`).
    customer: str
    kind: Literal["intent_changed"] = "intent_changed"
    intent: str
    previous_intent: str | None = None
    confidence: float
    margin: float
    at: datetime
    trigger_event_id: str | None = None
    model_version: str | None = None
