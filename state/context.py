"""The running customer context and the pure fold of one event into it.

Everything a decision may need about a customer, across channels and devices,
kept bounded so that millions of customers fit in a worker's memory and a
snapshot stays small. The fold is pure: time comes from the event, never from
the wall clock, so a replay folds to the same context.
"""

from bisect import insort
from collections.abc import Mapping

import msgspec
from msgspec import Struct

from schemas.event import Event
from schemas.types import Properties

#: How many recent interactions a context keeps (oldest dropped first).
MAX_RECENT = 48
#: How many distinct contact points, anonymous ids and partners a context keeps.
MAX_TOUCHPOINTS = 128
MAX_ANONYMOUS_IDS = 16
MAX_PARTNERS = 16
#: Journeys: open instances, steps remembered per instance, summaries of finished ones.
MAX_OPEN_JOURNEYS = 16
MAX_JOURNEY_PATH = 32
MAX_FINISHED_JOURNEYS = 16
#: Sent actions are kept while a contact policy or the attribution window still needs
#: them (caps bound how many that is); this guards memory under a playbook without caps.
MAX_ACTIONS = 512

#: Property keys that tie interactions to one matter (a transfer, an order...).
#: The first one present on an event becomes the interaction's `ref`.
REFERENCE_KEYS = ("transfer_id", "order_id", "case_id", "bill_id", "device_id", "vehicle_id")

#: Value tiers in ascending order; unknown tiers rank below all of them.
VALUE_TIERS = ("low", "medium", "high", "vip")

#: Purposes a customer must opt in to; any other purpose (e.g. service) is allowed
#: until revoked.
OPT_IN_PURPOSES = frozenset({"marketing"})

ANY = "*"


class ChannelStats(Struct, array_like=True):
    """How often and how recently the customer used one channel."""

    count: int = 0
    last_seen: float = 0.0


class Interaction(Struct, array_like=True, frozen=True):
    """One remembered interaction; `ref` is "key=value" of its matter, if any."""

    event_id: str
    ts: float
    type: str
    channel: str
    touchpoint: str | None = None
    partner_id: str | None = None
    ref: str | None = None


class SentimentSignal(Struct, array_like=True):
    """What the customer's words and scores say, weighted towards the recent."""

    value: float = 0.0
    samples: int = 0
    last_at: float = 0.0
    lowest: float = 0.0


class Touch(Struct, array_like=True, frozen=True):
    """One step of a journey: when, where, on which channel, by which event."""

    ts: float
    channel: str
    touchpoint: str | None
    event_id: str


class JourneyInstance(Struct):
    """A journey in flight for this customer (one per journey and instance key)."""

    journey: str
    key: str
    started_at: float
    last_at: float
    entry_event_id: str
    status: str = "open"  # open | stalled
    milestones: dict[str, float] = {}
    stage: str | None = None
    path: list[Touch] = []
    loops: int = 0
    failures: int = 0
    #: The partner leading this journey (co-selling: one owner per journey).
    owner: str | None = None
    sentiment: float | None = None


class JourneySummary(Struct, array_like=True, frozen=True):
    """What remains of a finished journey: enough for history, nothing more."""

    journey: str
    key: str
    outcome: str  # completed | abandoned | merged
    started_at: float
    ended_at: float
    stage: str | None
    touches: int
    loops: int


class SentAction(Struct, array_like=True):
    """An action sent to the customer, and its outcome once one is reported."""

    action_id: str
    action: str
    channel: str
    purpose: str
    at: float
    outcome: str | None = None
    outcome_at: float | None = None
    #: The propensity model has learned from this action (a response, or none in time).
    labelled: bool = False


#: Outcomes that show the customer responded (the others: delivered, dismissed, none).
RESPONSES = frozenset({"opened", "clicked", "converted"})
_OUTCOME_RANK = {"delivered": 0, "dismissed": 1, "opened": 2, "clicked": 3, "converted": 4}


class CustomerContext(Struct):
    """Everything seen so far about one customer (or one anonymous visitor)."""

    key: str
    known: bool
    first_seen: float
    last_seen: float
    events: int = 0
    anonymous_ids: list[str] = []
    channels: dict[str, ChannelStats] = {}
    recent: list[Interaction] = []
    touchpoints: dict[str, int] = {}
    partners: list[str] = []
    consent: dict[str, bool] = {}
    value_tier: str | None = None
    lifetime_value: float | None = None
    timezone: str | None = None
    preferred_channel: str | None = None
    #: Profile properties the playbook asks to keep (`profile_properties`).
    attributes: dict[str, str | int | float | bool] = {}
    sentiment: SentimentSignal = msgspec.field(default_factory=SentimentSignal)
    journeys: list[JourneyInstance] = []
    finished: list[JourneySummary] = []
    segments: list[str] = []
    #: Actions sent to this customer (bounded) and what became of them: contact pressure
    #: (caps, cooldowns, fatigue) is read from here, exact at the next event.
    actions: list[SentAction] = []
    #: The intent model's view of what the customer is trying to do: the intent last
    #: announced (it changes only with a clear margin), and the latest probabilities.
    intent: str | None = None
    intent_scores: dict[str, float] = {}
    #: For an anonymous visitor who has identified: the customer it now belongs to.
    alias_of: str | None = None


def new_context(key: str, event: Event) -> CustomerContext:
    ts = event.ts.timestamp()
    return CustomerContext(
        key=key, known=event.customer_id is not None, first_seen=ts, last_seen=ts
    )


def is_duplicate(ctx: CustomerContext, event: Event) -> bool:
    """True if this event id is among the remembered ones (at-least-once producers).

    A redelivered event carries its original time, never later than the last one
    folded, so the common case (a new event, in order) skips the scan.
    """
    if event.ts.timestamp() > ctx.last_seen:
        return False
    event_id = event.event_id
    return any(i.event_id == event_id for i in ctx.recent)


def _reference(properties: Properties) -> str | None:
    for ref_key in REFERENCE_KEYS:
        value = properties.get(ref_key)
        if value is not None:
            return f"{ref_key}={value}"
    return None


def fold(
    ctx: CustomerContext, event: Event, profile_keys: frozenset[str] = frozenset()
) -> CustomerContext:
    """Fold one event into the context, in place, and return it.

    Out-of-order events (other devices, other partitions) land at their place
    in the recent history; last-seen times only move forward.
    """
    ts = event.ts.timestamp()
    channel = event.channel
    ctx.events += 1
    ctx.first_seen = min(ctx.first_seen, ts)
    ctx.last_seen = max(ctx.last_seen, ts)
    if event.customer_id is not None:
        ctx.known = True

    stats = ctx.channels.get(channel)
    if stats is None:
        stats = ctx.channels[channel] = ChannelStats()
    stats.count += 1
    stats.last_seen = max(stats.last_seen, ts)

    touchpoint = event.touchpoint
    if touchpoint is not None and (
        touchpoint in ctx.touchpoints or len(ctx.touchpoints) < MAX_TOUCHPOINTS
    ):
        ctx.touchpoints[touchpoint] = ctx.touchpoints.get(touchpoint, 0) + 1

    anonymous_id = event.anonymous_id
    if anonymous_id is not None and anonymous_id not in ctx.anonymous_ids:
        _append_bounded(ctx.anonymous_ids, anonymous_id, MAX_ANONYMOUS_IDS)
    partner_id = event.partner_id
    if partner_id is not None and partner_id not in ctx.partners:
        _append_bounded(ctx.partners, partner_id, MAX_PARTNERS)

    properties = event.properties
    if properties:
        _fold_profile(ctx, properties)
        if profile_keys:
            # In the event's order, not the set's: a set's order follows the hash seed,
            # and the context (snapshots, recorded decision inputs) must not.
            for name, value in properties.items():
                if name in profile_keys and value is not None:
                    ctx.attributes[name] = value
    if event.consent is not None:
        c = event.consent
        ctx.consent[f"{c.channel or ANY}/{c.purpose or ANY}"] = c.granted
    if event.outcome is not None and event.action_id is not None:
        record_outcome(ctx, event.action_id, event.outcome, ts)

    interaction = Interaction(
        event_id=event.event_id,
        ts=ts,
        type=event.type,
        channel=channel,
        touchpoint=touchpoint,
        partner_id=partner_id,
        ref=_reference(properties) if properties else None,
    )
    recent = ctx.recent
    if not recent or recent[-1].ts <= ts:
        recent.append(interaction)
    else:
        insort(recent, interaction, key=_interaction_ts)
    if len(recent) > MAX_RECENT:
        del recent[0]
    return ctx


def record_sent(ctx: CustomerContext, sent: SentAction, memory: Mapping[str, float]) -> None:
    """Log a sent action, forgetting those no policy needs any more: `memory` says, per
    action, how long after sending it still counts (caps, cooldown, fatigue, attribution).
    Forgetting by count instead would let a busy week of service messages push a
    marketing send out of its cap's window."""
    now = sent.at
    actions = [s for s in ctx.actions if now - s.at <= memory.get(s.action, 0.0)]
    actions.append(sent)
    ctx.actions = actions[-MAX_ACTIONS:]


def record_outcome(
    ctx: CustomerContext, action_id: str, outcome: str, at: float
) -> SentAction | None:
    """Credit an outcome to the action it reports on; the strongest outcome wins."""
    for sent in reversed(ctx.actions):
        if sent.action_id == action_id:
            if sent.outcome is None or _OUTCOME_RANK[outcome] > _OUTCOME_RANK[sent.outcome]:
                sent.outcome, sent.outcome_at = outcome, at
            return sent
    return None


def _interaction_ts(interaction: Interaction) -> float:
    return interaction.ts


def _append_bounded(items: list[str], item: str, limit: int) -> None:
    items.append(item)
    if len(items) > limit:
        del items[0]


def _fold_profile(ctx: CustomerContext, properties: Properties) -> None:
    tier = properties.get("value_tier")
    if isinstance(tier, str):
        ctx.value_tier = tier
    ltv = properties.get("lifetime_value")
    if isinstance(ltv, int | float) and not isinstance(ltv, bool):
        ctx.lifetime_value = float(ltv)
    tz = properties.get("timezone")
    if isinstance(tz, str):
        ctx.timezone = tz
    preferred = properties.get("preferred_channel")
    if isinstance(preferred, str):
        ctx.preferred_channel = preferred


def consent_allows(ctx: CustomerContext, channel: str, purpose: str) -> bool:
    """Whether the customer agreed to be contacted on `channel` for `purpose`.

    The most specific statement wins (channel and purpose, then channel, then
    purpose, then everything). Without any statement, opt-in purposes are denied
    and the others allowed.
    """
    consent = ctx.consent
    if consent:
        for scope in (
            f"{channel}/{purpose}",
            f"{channel}/{ANY}",
            f"{ANY}/{purpose}",
            f"{ANY}/{ANY}",
        ):
            granted = consent.get(scope)
            if granted is not None:
                return granted
    return purpose not in OPT_IN_PURPOSES


_SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(CustomerContext)


def to_snapshot(ctx: CustomerContext) -> bytes:
    """Compact immutable bytes of the context, for recovery snapshots."""
    return _SNAPSHOT_ENCODER.encode(ctx)


def from_snapshot(data: bytes) -> CustomerContext:
    return _SNAPSHOT_DECODER.decode(data)


def absorb_visitor(ctx: CustomerContext, visitor: CustomerContext) -> None:
    """Fold an identified visitor's context (their anonymous history) into the customer's.

    Journeys are combined by the journey tracker; this merges everything else.
    The customer's own statements (consent, profile) win over the visitor's.
    """
    ctx.events += visitor.events
    ctx.first_seen = min(ctx.first_seen, visitor.first_seen)
    ctx.last_seen = max(ctx.last_seen, visitor.last_seen)
    for channel, theirs in visitor.channels.items():
        ours = ctx.channels.get(channel)
        if ours is None:
            ctx.channels[channel] = ChannelStats(theirs.count, theirs.last_seen)
        else:
            ours.count += theirs.count
            ours.last_seen = max(ours.last_seen, theirs.last_seen)
    for point, visits in visitor.touchpoints.items():
        if point in ctx.touchpoints or len(ctx.touchpoints) < MAX_TOUCHPOINTS:
            ctx.touchpoints[point] = ctx.touchpoints.get(point, 0) + visits
    known = {i.event_id for i in ctx.recent}
    merged = [*ctx.recent, *(i for i in visitor.recent if i.event_id not in known)]
    merged.sort(key=_interaction_ts)
    ctx.recent = merged[-MAX_RECENT:]
    device = visitor.key.split(":", 1)[-1]
    for anonymous_id in [device, *visitor.anonymous_ids]:
        if anonymous_id not in ctx.anonymous_ids:
            _append_bounded(ctx.anonymous_ids, anonymous_id, MAX_ANONYMOUS_IDS)
    for partner in visitor.partners:
        if partner not in ctx.partners:
            _append_bounded(ctx.partners, partner, MAX_PARTNERS)
    for scope, granted in visitor.consent.items():
        ctx.consent.setdefault(scope, granted)
    for name, value in visitor.attributes.items():
        ctx.attributes.setdefault(name, value)
    ours_s, theirs_s = ctx.sentiment, visitor.sentiment
    if theirs_s.samples:
        total = ours_s.samples + theirs_s.samples
        ours_s.value = (ours_s.value * ours_s.samples + theirs_s.value * theirs_s.samples) / total
        ours_s.samples = total
        ours_s.last_at = max(ours_s.last_at, theirs_s.last_at)
        ours_s.lowest = min(ours_s.lowest, theirs_s.lowest)
