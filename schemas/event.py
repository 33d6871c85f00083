"""The inbound Event: what every channel sends to the events topic."""

from typing import Annotated, Literal

from msgspec import Meta, Struct

from schemas.types import FreeText, Identifier, Properties, Timestamp, Vocab

SurveyScore = Annotated[float, Meta(ge=0, le=100, description="survey score: NPS 0-10, CSAT")]
Outcome = Literal["delivered", "opened", "clicked", "converted", "dismissed"]


class Consent(Struct, kw_only=True, forbid_unknown_fields=True):
    """A grant or revocation; a missing channel or purpose means "all of them"."""

    granted: bool
    channel: Vocab | None = None
    purpose: Vocab | None = None


class ProfileMerge(Struct, kw_only=True, forbid_unknown_fields=True):
    """An anonymous visitor's context, handed to the customer it turned out to be, in
    answer to the customer's `HandoverRequest`.

    Wayfinder writes these itself (on the events topic, so the dataflow has no
    cycle); `context` is the visitor's state, msgpack-encoded (empty: the device had
    nothing to hand over), sealed to the requesting customer's handover key
    (`operators.sealing.seal_to`; base64 in JSON). `signature` is Wayfinder's
    (`operators.identity.MergeSeal`): a merge without a valid one is dead-lettered,
    whoever sent it.
    """

    source_key: Annotated[str, Meta(min_length=1, max_length=160)]
    login_id: Identifier
    sealed_to: Annotated[bytes, Meta(min_length=32, max_length=32)]
    context: Annotated[bytes, Meta(max_length=32 * 1024 + 64)]
    signature: Annotated[str, Meta(min_length=64, max_length=64)]


class HandoverRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """A customer's request, after a login, for the device's context: sent to the
    device's key (a `handover_request` event names the device alone), answered with a
    `profile_merge` sealed to `public_key`, which only the customer's state can open.

    Wayfinder writes these itself, signed like merges; `login_id` is the identify
    event's id.
    """

    customer_id: Identifier
    login_id: Identifier
    public_key: Annotated[bytes, Meta(min_length=32, max_length=32)]
    signature: Annotated[str, Meta(min_length=64, max_length=64)]


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
    }
)


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

    def __post_init__(self) -> None:
        # Raising ValueError here makes msgspec report a ValidationError, so the
        # special-type rules are enforced in the same single decode pass.
        if self.customer_id is None and self.anonymous_id is None:
            raise ValueError("event needs `customer_id` or `anonymous_id`")
        if self.customer_id is not None and self.customer_id.startswith(ANONYMOUS_PREFIX):
            raise ValueError(f"`customer_id` may not start with {ANONYMOUS_PREFIX!r} (visitors')")
        kind = self.type
        if kind not in SPECIAL_TYPES:
            return
        if kind == "identify" and (self.customer_id is None or self.anonymous_id is None):
            raise ValueError("`identify` needs both `customer_id` and `anonymous_id`")
        if kind == "consent" and self.consent is None:
            raise ValueError("`consent` needs the `consent` object")
        if kind == "profile_merge" and (self.merge is None or self.customer_id is None):
            raise ValueError("`profile_merge` needs `customer_id` and `merge`")
        if kind == "handover_request" and (
            self.handover is None or self.anonymous_id is None or self.customer_id is not None
        ):
            raise ValueError("`handover_request` needs `handover` and `anonymous_id` alone")
        if kind == "decision_request" and self.request_id is None:
            raise ValueError("`decision_request` needs `request_id`")
        if kind == "action_outcome" and (self.action_id is None or self.outcome is None):
            raise ValueError("`action_outcome` needs `action_id` and `outcome`")
