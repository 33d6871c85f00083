"""Segment entries and exits, published on the `audiences` topic as they happen."""

from datetime import datetime
from typing import Literal

from msgspec import Struct


class AudienceChange(Struct, kw_only=True, omit_defaults=True):
    """A customer entered or left a segment, and why, so a channel can activate an
    audience (e.g. everyone about to receive a paper bill) without polling."""

    change_id: str
    #: The customer's pseudonym: resolved to the customer with the key vault.
    customer: str
    segment: str
    change: Literal["entered", "exited"]
    at: datetime
    reasons: list[str]
    trigger_event_id: str | None = None


class Tombstone(Struct, kw_only=True):
    """An erased customer: consumers delete what they hold under this key."""

    #: The erased customer's pseudonym (the key their audience records were under).
    customer: str
    erased_at: datetime
    trigger_event_id: str
