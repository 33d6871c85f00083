"""A customer's context as another process reads it: who they are, where they are on
their journeys, what they agreed to, what was decided for them and why.

The flow writes one per customer (`state.context_view`); `wayfinder customer ID` prints
it, and the point-of-interaction API will serve it. It holds the customer's id, so an
erasure deletes it as it deletes everything else.
"""

from msgspec import Struct


class JourneyView(Struct, frozen=True):
    """A journey in flight: since when, how far, and when the customer last moved on it."""

    journey: str
    status: str
    stage: str | None
    started_at: float
    last_at: float


class DecisionView(Struct, frozen=True):
    """A decision made for the customer: what, on which channel, and why."""

    at: float
    outcome: str
    action: str | None
    channel: str | None
    reasons: list[str]
    trigger: str


class ContextView(Struct, frozen=True):
    """One customer's context as of `watermark` (event time), written at `written_at`
    (wall clock): how fresh it is. `customer`: their pseudonym; `id`: their id (a
    visitor's `anon:` key)."""

    customer: str
    id: str
    known: bool
    first_seen: float
    last_seen: float
    events: int
    devices: list[str]
    value_tier: str | None
    preferred_channel: str | None
    consent: dict[str, bool]
    segments: list[str]
    intent: str | None
    journeys: list[JourneyView]
    decisions: list[DecisionView]
    watermark: float
    written_at: float
