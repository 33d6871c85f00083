"""The dead-letter record: bad input, kept with its raw bytes and the reason."""

from datetime import datetime
from typing import Literal

from msgspec import Struct

#: Coarse, bounded classes of bad input (safe as a metric label).
DeadLetterReason = Literal["too_large", "invalid_utf8", "malformed_json", "invalid_event", "empty"]


class DeadLetter(Struct, kw_only=True, omit_defaults=True):
    """Input that could not become an Event.

    `raw` is the exact bytes received (base64 in JSON), so nothing vanishes and a
    fixed producer's data can be re-driven. `detail` names the field that failed;
    `received_at` is the broker's timestamp when the input was a Kafka message.
    """

    reason: DeadLetterReason
    detail: str
    raw: bytes
    source: str
    partition: int | None = None
    offset: int | None = None
    received_at: datetime | None = None
