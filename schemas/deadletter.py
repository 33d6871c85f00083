"""The dead-letter record: input that could not be used, with the real reason and its bytes."""

import hashlib
from datetime import datetime
from typing import Literal

from msgspec import Struct

#: Coarse, bounded classes of input that cannot be used (safe as a metric label).
#: Decoding: too_large, empty, invalid_utf8, malformed_json, too_deep, invalid_event.
#: Admission: out_of_range (a time no calendar arithmetic survives), too_far_ahead (a
#: clock gone wrong), unknown_channel (a request no action topic can answer),
#: forged (a record only Wayfinder may write, without its signature).
#: Folding: stale (older than the redelivery horizon before the customer's latest event,
#: WAYFINDER_REDELIVERY_HORIZON: were it a redelivery, that could no longer be told, so
#: it is not folded), fold_failed (the customer's state is left as it was).
#: Output: undeliverable.
DeadLetterReason = Literal[
    "too_large",
    "empty",
    "invalid_utf8",
    "malformed_json",
    "too_deep",
    "invalid_event",
    "out_of_range",
    "too_far_ahead",
    "unknown_channel",
    "forged",
    "stale",
    "no_key",
    "fold_failed",
    "undeliverable",
]

#: Raw bytes kept in a dead letter: every record small enough to be an event is kept
#: whole (so a fixed producer's data can be re-driven); a larger one is cut, and its
#: size and digest say what it was. Base64 of this fits any broker's message limit.
MAX_RAW_BYTES = 64 * 1024
#: Longest `detail`: an exception's text can quote the input at length.
MAX_DETAIL_CHARS = 1000


class DeadLetter(Struct, kw_only=True, omit_defaults=True):
    """Input that could not be used, bounded whatever it was.

    `raw` is the bytes received (base64 in JSON), cut to `MAX_RAW_BYTES`; `size` is
    the original length and `sha256` its digest, so a cut record is still known.
    `detail` names the field or the check that failed; `received_at` is the broker's
    timestamp when the input was a Kafka message.
    """

    reason: DeadLetterReason
    detail: str
    raw: bytes
    size: int
    sha256: str
    source: str
    partition: int | None = None
    offset: int | None = None
    received_at: datetime | None = None


def dead_letter(
    reason: DeadLetterReason,
    detail: str,
    raw: bytes | None,
    source: str,
    *,
    size: int | None = None,
    sha256: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    received_at: datetime | None = None,
) -> DeadLetter:
    """A bounded dead letter. `size`/`sha256`: of the original record when `raw` is
    already a cut prefix (a reader that never held the whole record)."""
    raw = raw or b""
    if sha256 is None:
        sha256 = hashlib.sha256(raw).hexdigest()
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    return DeadLetter(
        reason=reason,
        detail=detail,
        raw=raw[:MAX_RAW_BYTES],
        size=len(raw) if size is None else size,
        sha256=sha256,
        source=source,
        partition=partition,
        offset=offset,
        received_at=received_at,
    )
