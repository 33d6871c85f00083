"""Bad input: what broken producers send, for the decoder's dead-letter path to meet.

Each bad record is modelled on a real event (same event time, its own event id) and
drawn from a generator of its own, so good records never change with how much bad
input is mixed in.
"""

from __future__ import annotations

import random

import msgspec

from schemas.codec import DEFAULT_MAX_EVENT_BYTES, encode
from schemas.event import Event

#: What broken producers send, and how often (an oversized record is rare).
BAD_INPUT_KINDS = {
    "truncated": 0.28,
    "missing_field": 0.22,
    "wrong_type": 0.25,
    "invalid_utf8": 0.15,
    "empty": 0.07,
    "oversized": 0.03,
}
_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82(", b"\x80abc")


def bad_record(rng: random.Random, event: Event, event_id: str, t: float) -> bytes:
    """A record a broken producer could send, modelled on a real event."""
    kind = rng.choices(list(BAD_INPUT_KINDS), weights=list(BAD_INPUT_KINDS.values()))[0]
    base = msgspec.structs.replace(event, event_id=event_id)
    if kind == "empty":
        return b""
    if kind == "truncated":
        raw = encode(base)
        return raw[: rng.randrange(1, len(raw) - 1)]
    if kind == "invalid_utf8":  # broken bytes inside the event_id string
        return encode(base).replace(b'"event_id":"', b'"event_id":"' + rng.choice(_BAD_UTF8), 1)
    doc = msgspec.to_builtins(base)
    if kind == "missing_field":
        field = rng.choice(("ts", "type", "channel", "event_id", "ids"))
        if field == "ids":
            doc.pop("customer_id", None)
            doc.pop("anonymous_id", None)
        else:
            del doc[field]
    elif kind == "wrong_type":
        field = rng.choice(("ts", "ts", "channel", "type", "properties", "score"))
        if field == "ts":
            doc["ts"] = t  # epoch seconds instead of RFC 3339
        elif field == "channel":
            doc["channel"] = rng.choice((7, "Call Centre", None))
        elif field == "type":
            doc["type"] = doc["type"].upper().replace("_", " ")
        elif field == "properties":
            doc["properties"] = ["not", "a", "map"]
        else:
            doc["score"] = "ten"
    else:  # oversized: a producer attaching a blob
        doc["text"] = "x" * (DEFAULT_MAX_EVENT_BYTES + rng.randrange(1, 8192))
    return encode(doc)
