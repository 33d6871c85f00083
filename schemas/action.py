"""The outbound Action: the next interaction, published on `actions.<channel>`."""

from datetime import datetime

from msgspec import Struct

from schemas.types import PropertyValue


class Action(Struct, kw_only=True, omit_defaults=True):
    """One next interaction for one customer on one channel.

    `action_id` is deterministic from (customer, trigger event, action), so a
    replay after recovery re-emits the same id and consumers can de-duplicate.
    `reasons` are sentences a marketer or an agent reads.
    """

    action_id: str
    decision_id: str
    #: The customer's pseudonym (`operators.identity.pseudonym`): the channel resolves
    #: it to the customer with the key vault while the customer is not erased.
    customer: str
    channel: str
    action: str
    content: dict[str, PropertyValue]
    score: float
    reasons: list[str]
    trigger_event_id: str
    created_at: datetime
    expires_at: datetime
    journey: str | None = None
    intent: str | None = None
    request_id: str | None = None
    partner_id: str | None = None
