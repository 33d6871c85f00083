"""A journey transition, published on the `journeys` topic."""

from datetime import datetime
from typing import Literal

from msgspec import Struct

TransitionKind = Literal["entered", "progressed", "stalled", "completed", "abandoned", "resumed"]


class JourneyTransition(Struct, kw_only=True, omit_defaults=True):
    """A customer's journey moved: entered, reached a milestone, stalled, ended."""

    transition_id: str
    customer_id: str
    journey: str
    kind: TransitionKind
    at: datetime
    duration_seconds: float
    contact_points: list[str]
    channels: list[str]
    trigger_event_id: str | None = None
    milestone: str | None = None
    partner_id: str | None = None
