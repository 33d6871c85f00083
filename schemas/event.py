"""The inbound Event: what every channel sends to the events topic."""

from collections.abc import Callable
from sys import intern
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from schemas.types import FreeText, Identifier, Properties, Timestamp, Vocab

SurveyScore = Annotated[float, Meta(ge=0, le=100, description="survey score: NPS 0-10, CSAT")]
Outcome = Literal["delivered", "opened", "clicked", "converted", "dismissed"]


class Consent(Struct, kw_only=True, forbid_unknown_fields=True):
    """A grant or revocation; a missing channel or purpose means "all of them"."""

    granted: bool
    channel: Vocab | None = None
    purpose: Vocab | None = None


#: What Wayfinder's own records name a customer's (or device's) state by: its
#: pseudonym (`operators.identity.pseudonym`), never an id.
Pseudonym = Annotated[str, Meta(pattern="^[0-9a-f]{32}$")]


class ProfileMerge(Struct, kw_only=True, forbid_unknown_fields=True):
    """A device's answer to a customer's `HandoverRequest`: the key the device seals
    its forwarded events under (`Forward`), and its anonymous visitor's context, if it
    had one to hand over.

    Wayfinder writes these itself (on the events topic, so the dataflow has no cycle);
    `context` is the device's key then the visitor's state, msgpack-encoded (no state:
    the device had nothing to hand over, or the request was not its current
    customer's), sealed to the requesting customer's handover key
    (`operators.sealing.seal_to`; base64 in JSON). `source` is the device's pseudonym.
    """

    source: Pseudonym
    login_id: Identifier
    sealed_to: Annotated[bytes, Meta(min_length=32, max_length=32)]
    context: Annotated[bytes, Meta(max_length=32 * 1024 + 128)]


class HandoverRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """A customer's request, after a login, for the device's context: sent to the
    device's state (the event's `to`), answered with a `profile_merge` sealed to
    `public_key`, which only the customer's state can open.

    Wayfinder writes these itself; `customer` is the customer's pseudonym (where the
    answer goes), `login_id` the identify event's id.
    """

    customer: Pseudonym
    login_id: Identifier
    public_key: Annotated[bytes, Meta(min_length=32, max_length=32)]


class Forward(Struct, kw_only=True, forbid_unknown_fields=True):
    """An event of a device that logged in, on its way to the customer it belongs to:
    the event as its channel sent it (JSON), sealed under the key the device handed the
    customer with its merge (`operators.sealing.seal`, bound to the record's id), so
    that erasing the customer (and with them the device) leaves no readable copy.

    `source` is the device's pseudonym. `sealed` is false only for a device linked by
    a release before the forwards were sealed (it had handed over no key).
    """

    source: Pseudonym
    event: Annotated[bytes, Meta(max_length=1024 * 1024)]
    sealed: bool = True


#: What an anonymous visitor's state key starts with; no customer id may, so the two
#: id spaces can never meet (an input naming a customer "anon:x" is not visitor x).
ANONYMOUS_PREFIX = "anon:"

#: Event types that need fields beyond the common ones.
SPECIAL_TYPES = frozenset(
    {
        "identify",
        "consent",
        "erase",
        "decision_request",
        "action_outcome",
        "profile_merge",
        "handover_request",
        "forward",
    }
)

#: The family of each special event type, as the metrics count events (any other type
#: is an interaction: a customer doing something on a channel).
TYPE_FAMILIES = {
    "identify": "identity",
    "consent": "consent",
    "erase": "erasure",
    "decision_request": "decision_request",
    "action_outcome": "outcome",
    "profile_merge": "loop",
    "handover_request": "loop",
    "forward": "loop",
}
FAMILIES = ("interaction", *sorted(set(TYPE_FAMILIES.values())))

#: The records of Wayfinder's own loop through the events topic: addressed to a state
#: by pseudonym (`to`), signed, naming nobody by id. An `erase` addressed so (a device
#: of an erased customer) is one too.
LOOP_TYPES = frozenset({"profile_merge", "handover_request", "forward"})


class Event(Struct, kw_only=True, omit_defaults=True):
    """One interaction of one customer (or anonymous visitor) on one channel.

    `type`, `channel` and `touchpoint` are open vocabularies: a value the playbook
    does not know is folded like any other. Well-known `properties` keys the fold
    reads: `value_tier`, `lifetime_value`, `timezone`, `preferred_channel`, and
    references that tie interactions to one matter, such as `transfer_id`.
    """

    event_id: Identifier
    ts: Timestamp
    type: Vocab
    channel: Vocab
    customer_id: Identifier | None = None
    anonymous_id: Identifier | None = None
    touchpoint: Vocab | None = None
    partner_id: Identifier | None = None
    properties: Properties = {}
    text: FreeText | None = None
    score: SurveyScore | None = None
    request_id: Identifier | None = None
    action_id: Identifier | None = None
    outcome: Outcome | None = None
    consent: Consent | None = None
    merge: ProfileMerge | None = None
    handover: HandoverRequest | None = None
    forward: Forward | None = None
    #: For a record of Wayfinder's own loop (`LOOP_TYPES`, or an erase of a device):
    #: the pseudonym of the state it is for, and Wayfinder's signature over what it
    #: says (`operators.identity.LoopSeal`).
    to: Pseudonym | None = None
    signature: Annotated[str, Meta(min_length=64, max_length=64)] | None = None

    def __post_init__(self) -> None:
        # Raising ValueError here makes msgspec report a ValidationError, so the
        # special-type rules are enforced in the same single decode pass.
        # The vocabularies, one object per word: a context keeps them in many places
        # (its channels, contact points, interactions, journeys' steps), and a decode
        # makes a new string each time, which millions of customers would each hold.
        kind = self.type = intern(self.type)
        self.channel = intern(self.channel)
        if self.touchpoint is not None:
            self.touchpoint = intern(self.touchpoint)
        if self.to is not None:
            self._check_loop(kind)
            return
        if self.customer_id is None and self.anonymous_id is None:
            raise ValueError("event needs `customer_id` or `anonymous_id`")
        if self.customer_id is not None and self.customer_id.startswith(ANONYMOUS_PREFIX):
            raise ValueError(f"`customer_id` may not start with {ANONYMOUS_PREFIX!r} (visitors')")
        if kind not in SPECIAL_TYPES:
            return
        if kind in LOOP_TYPES:
            raise ValueError(f"`{kind}` is written by Wayfinder alone, addressed `to` a state")
        if kind == "identify" and (self.customer_id is None or self.anonymous_id is None):
            raise ValueError("`identify` needs both `customer_id` and `anonymous_id`")
        if kind == "consent" and self.consent is None:
            raise ValueError("`consent` needs the `consent` object")
        if kind == "decision_request" and self.request_id is None:
            raise ValueError("`decision_request` needs `request_id`")
        if kind == "action_outcome" and (self.action_id is None or self.outcome is None):
            raise ValueError("`action_outcome` needs `action_id` and `outcome`")

    def __reduce__(self) -> tuple[Callable[[bytes], "Event"], tuple[bytes]]:
        """An event as a cluster's processes hand it to each other (bytewax pickles what
        crosses): its JSON, which keeps the offset of its time. Pickled field by field
        (the datetime and its zone, the properties) it cost four times as much, on the
        process that reads the topic for the whole cluster."""
        return _from_json, (_TO_JSON.encode(self),)

    def _check_loop(self, kind: str) -> None:
        """A record addressed `to` a state: one of the loop's, naming no id (its
        signature is checked where it is folded: `CustomerStep`)."""
        if kind not in LOOP_TYPES and kind != "erase":
            raise ValueError(f"a `{kind}` event is not addressed `to` a state")
        if self.customer_id is not None or self.anonymous_id is not None:
            raise ValueError("a record addressed `to` a state names no id")
        field, body = {
            "profile_merge": ("merge", self.merge),
            "handover_request": ("handover", self.handover),
            "forward": ("forward", self.forward),
        }.get(kind, ("", True))
        if body is None:
            raise ValueError(f"`{kind}` needs `{field}`")


_TO_JSON = msgspec.json.Encoder()
_FROM_JSON = msgspec.json.Decoder(Event)


def _from_json(data: bytes) -> Event:
    """An event handed over by another process (`Event.__reduce__`)."""
    return _FROM_JSON.decode(data)
