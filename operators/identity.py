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


def pseudonym(secret: bytes, key: str) -> str:
    """What Wayfinder's records and state name a customer (or visitor) by: a keyed hash
    (BLAKE2b, 128 bits) of their key under the deployment's secret, never the id.

    The key vault maps it back to the customer while they are not erased; after an
    erasure it names nobody to anyone without the secret and the id (what an erased
    customer's old records on an append-only topic keep)."""
    if len(secret) > 64:  # BLAKE2b takes a key of at most 64 bytes
        secret = hashlib.blake2b(secret).digest()
    return hashlib.blake2b(key.encode(), digest_size=16, key=secret).hexdigest()


def instance_name(customer_key: str, instance: str) -> str:
    """What a journey instance's token is the pseudonym of: the instance key value (a
    transfer's id) as one customer's, so that the vault files it under them."""
    return f"{customer_key}\x1f{instance}"


def keyed_digest(key: bytes, *parts: str | bytes) -> bytes:
    """HMAC-SHA256 under `key` of the parts, each prefixed with its length, so that no
    part's bytes can be shifted into the next."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.digest()


class MergeSeal:
    """Signs the loop events of a login that Wayfinder writes (a customer's handover
    request, the device's profile merge), so no other producer can forge one.

    A merge hands a visitor's whole context (consent, devices, attributes) to a
    customer, and a request asks a device for it; both travel on the events topic,
    which any producer can write. Their signature is an HMAC-SHA256, under the
    deployment's secret, of everything they say.
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def sign(self, event_id: str, *parts: str | bytes) -> str:
        return keyed_digest(self.secret, event_id, *parts).hex()

    def verify(self, event: Event) -> bool:
        """Whether a `profile_merge` or `handover_request` event carries this
        deployment's signature."""
        merge, request = event.merge, event.handover
        parts: tuple[str | bytes, ...]
        if merge is not None and event.customer_id is not None:
            parts = (
                event.customer_id,
                merge.source_key,
                merge.login_id,
                merge.sealed_to,
                merge.context,
            )
            signature = merge.signature
        elif request is not None and event.anonymous_id is not None:
            parts = (request.customer_id, event.anonymous_id, request.login_id, request.public_key)
            signature = request.signature
        else:
            return False
        return hmac.compare_digest(self.sign(event.event_id, *parts), signature)
