"""Strict, size-limited codecs: bytes in, Structs out, and back.

One msgspec pass decodes and validates an event; nothing on the hot path goes
through Python's json module or intermediate dicts.
"""

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from schemas.deadletter import DeadLetterReason
from schemas.event import Event

#: Events larger than this are rejected before parsing (a broker default is 1 MiB;
#: a customer interaction is a few hundred bytes).
DEFAULT_MAX_EVENT_BYTES = 64 * 1024


def loop_limit(max_bytes: int) -> int:
    """How large a record of Wayfinder's own loop may be: a forward carries a whole
    event, sealed (16 bytes more) and in base64 (a third more), in a signed envelope."""
    return max_bytes * 3 // 2 + 4096


_ENCODER = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """Encode a schema Struct (or builtin) as compact JSON bytes."""
    return _ENCODER.encode(value)


class BadInput(Exception):
    """Input that cannot become an Event; carries a bounded reason and a detail."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DeadLetterReason = reason
        self.detail = detail


#: Event times accepted, in UTC: a time outside cannot have journeys' deadlines or a
#: calendar day worked out from it (Python's datetime ends in year 9999).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(9000, 1, 1, tzinfo=UTC).timestamp()


class EventDecoder:
    """Decodes wire bytes into an Event, or raises BadInput saying why not.

    Whatever the bytes are, the only exception that leaves `decode` is BadInput.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = msgspec.json.Decoder(Event)
        self.max_bytes = max_bytes
        self._loop_bytes = loop_limit(max_bytes)

    def decode(self, raw: bytes | None) -> Event:
        if not raw:
            raise BadInput("empty", "message has no value")
        size = len(raw)
        if size > self.max_bytes and size > self._loop_bytes:
            raise BadInput("too_large", f"{size} bytes, limit {self.max_bytes}")
        try:
            event = self._decoder.decode(raw)
        except Exception as exc:  # whatever msgspec raises is still this record's
            if size > self.max_bytes:  # the truer reason (only the loop's may be larger)
                raise BadInput("too_large", f"{size} bytes, limit {self.max_bytes}") from None
            raise _refusal(raw, exc) from None
        if size > self.max_bytes and event.to is None:  # only the loop's records may be larger
            raise BadInput("too_large", f"{size} bytes, limit {self.max_bytes}")
        ts = event.ts.timestamp()
        if not EARLIEST <= ts < LATEST:
            raise BadInput(
                "out_of_range", f"$.ts {event.ts.isoformat()} is outside 1970 to 9000 in UTC"
            )
        return event


def _refusal(raw: bytes, exc: Exception) -> BadInput:
    """Why the decoder refused bytes, from what it raised."""
    if isinstance(exc, msgspec.ValidationError):
        return BadInput("invalid_event", str(exc))
    if isinstance(exc, UnicodeDecodeError):  # msgspec raises it for bad bytes in strings
        return BadInput("invalid_utf8", str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return _undecodable(raw, exc)
    if isinstance(exc, RecursionError):
        return BadInput("too_deep", "nested deeper than the decoder follows")
    return BadInput("malformed_json", f"{type(exc).__name__}: {exc}")


_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _undecodable(raw: bytes, exc: msgspec.DecodeError) -> BadInput:
    """Why bytes are not JSON, classified only on the error path (good input pays nothing)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as utf_exc:
        return BadInput("invalid_utf8", str(utf_exc))
    lone = _LONE_SURROGATE.search(_SURROGATE_PAIR.sub(b"", raw))
    if lone is not None:
        # A lone "\\ud800" is JSON's syntax but no Unicode text (msgspec may call it
        # truncated input): say what it is.
        escape = lone.group().decode()
        return BadInput("invalid_utf8", f"{escape} is half of a UTF-16 surrogate pair, not text")
    return BadInput("malformed_json", str(exc))


def good_events(records: Iterable[bytes]) -> Iterator[Event]:
    """The events among wire records, skipping those that do not decode: for replays,
    evaluations and tools, which have no dead-letter topic to send them to."""
    decoder = EventDecoder()
    for raw in records:
        try:
            yield decoder.decode(raw)
        except BadInput:
            continue


def event_file(path: Path) -> Iterator[Event]:
    """The good events of a JSON-lines file, in file order."""
    with path.open("rb") as lines:
        yield from good_events(line.rstrip(b"\r\n") for line in lines)
