"""Which customer an event belongs to: the partitioning key of the dataflow."""

import hashlib
import hmac

from schemas.event import ANONYMOUS_PREFIX, Event


def customer_key(event: Event) -> str:
    """The known customer id, else the anonymous (device or cookie) id, prefixed.

    The prefix keeps the two id spaces apart: no customer id may start with it
    (the event schema refuses one), so no input can reach a visitor's state.
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


class MergeSeal:
    """Signs the profile merges Wayfinder writes, so no other producer can forge one.

    A merge hands a visitor's whole context (consent, devices, attributes) to a
    customer; it travels on the events topic, which any producer can write. Its
    signature is an HMAC-SHA256, under the deployment's secret, of everything the
    merge says: who, from which visitor, which event, and the context bytes.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, event_id: str, customer_id: str, source_key: str, context: bytes) -> str:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in (event_id.encode(), customer_id.encode(), source_key.encode(), context):
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest()

    def verify(self, event: Event) -> bool:
        """Whether a `profile_merge` event carries this deployment's signature."""
        merge = event.merge
        if merge is None or event.customer_id is None:
            return False
        expected = self.sign(event.event_id, event.customer_id, merge.source_key, merge.context)
        return hmac.compare_digest(expected, merge.signature)
