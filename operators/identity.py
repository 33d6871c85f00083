"""Which customer an event belongs to: the partitioning key of the dataflow."""

from schemas.event import Event

ANONYMOUS_PREFIX = "anon:"


def customer_key(event: Event) -> str:
    """The known customer id, else the anonymous (device or cookie) id, prefixed.

    The prefix keeps the two id spaces apart: an anonymous id can never collide
    with a customer id.
    """
    customer_id = event.customer_id
    if customer_id is not None:
        return customer_id
    return visitor_key(event)


def visitor_key(event: Event) -> str:
    """The key of the anonymous id an event carries (an identify event has both ids)."""
    anonymous_id = event.anonymous_id
    if anonymous_id is None:  # the codec lets no such event in
        raise ValueError(f"event {event.event_id!r} carries no anonymous id")
    return ANONYMOUS_PREFIX + anonymous_id
