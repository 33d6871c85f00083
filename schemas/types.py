"""Constrained scalar types shared by the schemas.

The constraints are enforced while decoding (msgspec), so a value that breaks
one never reaches the fold: it is dead-lettered with the field it broke.
"""

from datetime import datetime
from typing import Annotated

from msgspec import Meta

#: An open, lower-case vocabulary word: an event type, a channel, a contact point.
Vocab = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.:-]*$",
        description="lower-case word of an open vocabulary, e.g. page_view, call_centre",
    ),
]

#: An opaque identifier chosen by a producer (event, customer, device, request).
Identifier = Annotated[str, Meta(min_length=1, max_length=128)]

#: A point in time with an explicit offset (RFC 3339); naive times are rejected.
Timestamp = Annotated[datetime, Meta(tz=True, description="RFC 3339 date-time with offset")]

PropertyKey = Annotated[str, Meta(min_length=1, max_length=64)]
PropertyValue = Annotated[str, Meta(max_length=512)] | int | float | bool | None

#: A flat map of scalars: no nesting, so folds and features stay cheap and bounded.
Properties = Annotated[dict[PropertyKey, PropertyValue], Meta(max_length=64)]

FreeText = Annotated[str, Meta(max_length=4000)]
