"""Strict, size-limited codecs: bytes in, Structs out, and back.

One msgspec pass decodes and validates an event; nothing on the hot path goes
through Python's json module or intermediate dicts.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from schemas.deadletter import DeadLetterReason
from schemas.event import Event

#: Events larger than this are rejected before parsing (a broker default is 1 MiB;
#: a customer interaction is a few hundred bytes).
DEFAULT_MAX_EVENT_BYTES = 64 * 1024

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


class EventDecoder:
    """Decodes wire bytes into an Event, or raises BadInput saying why not."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = msgspec.json.Decoder(Event)
        self.max_bytes = max_bytes

    def decode(self, raw: bytes | None) -> Event:
        if not raw:
            raise BadInput("empty", "message has no value")
        if len(raw) > self.max_bytes:
            raise BadInput("too_large", f"{len(raw)} bytes, limit {self.max_bytes}")
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise BadInput("invalid_event", str(exc)) from None
        except UnicodeDecodeError as exc:  # msgspec raises it for bad bytes inside strings
            raise BadInput("invalid_utf8", str(exc)) from None
        except msgspec.DecodeError as exc:
            # Classified only on the error path, so good input pays nothing for it.
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as utf_exc:
                raise BadInput("invalid_utf8", str(utf_exc)) from None
            raise BadInput("malformed_json", str(exc)) from None


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
