"""The running customer context and the pure fold of one event into it.

Everything a decision may need about a customer, across channels and devices,
kept bounded so that millions of customers fit in a worker's memory and a
snapshot stays small. The fold is pure: time comes from the event, never from
the wall clock, so a replay folds to the same context.
"""

import math
import struct
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from hashlib import blake2b
from sys import intern
from types import GenericAlias
from typing import Any, Literal, NoReturn, TypeVar, cast

import msgspec
from msgspec import Struct

from schemas.event import Event, Outcome
from schemas.types import Properties

#: How many recent interactions a context keeps (oldest dropped first).
MAX_RECENT = 48
#: How many distinct contact points and partners a context keeps. Anonymous ids (the
#: customer's devices and cookies) are all kept, however many: an erasure must reach
#: every one of them, and each linked device holds state of its own anyway.
MAX_TOUCHPOINTS = 128
MAX_PARTNERS = 16
#: Redeliveries (at-least-once producers, a resumed flow) are recognised for this long
#: by default (WAYFINDER_REDELIVERY_HORIZON): a customer remembers the ids of the events
#: folded within it of their latest event time, and refuses an event older than that.
DEFAULT_REDELIVERY_HORIZON = 7 * 86400.0
#: The most event ids a customer remembers for that (8 bytes each in a snapshot): past
#: it the oldest are forgotten, and events as old as them are refused as well.
MAX_SEEN = 4096
#: Ids are remembered in generations (an eighth of the horizon, or of MAX_SEEN, each):
#: forgetting is dropping the oldest generation, never a pass over the ids.
_SEEN_GENERATIONS = 8
_SEEN_GENERATION_SIZE = MAX_SEEN // _SEEN_GENERATIONS
#: A generation of ids (`Seen.marks`): opened, until, how many ids.
_MARK = struct.Struct("<ddI")
_DIGEST = 8  # (bytes of an id remembered, `event_digest`)
#: Bytes of ids `Seen` looks for an id in by a scan (more: in a set of them).
_SCANNED = 32 * _DIGEST
#: Journeys: open instances, steps remembered per instance, summaries of finished ones.
MAX_OPEN_JOURNEYS = 16
MAX_JOURNEY_PATH = 32
MAX_FINISHED_JOURNEYS = 16
#: Sent actions are kept while a contact policy or the attribution window still needs
#: them (caps bound how many that is); this guards memory under a playbook without caps.
MAX_ACTIONS = 512
#: Keys kept for each device of a customer (its last logins', and those a device made
#: anew after crashes): a forward sealed under an earlier one may still be on its way.
MAX_DEVICE_KEYS = 4
#: Forwards kept waiting for their device's key, at most (one more is a dead letter).
MAX_UNOPENED = 256

#: Property keys that tie interactions to one matter (a transfer, an order...).
#: The first one present on an event becomes the interaction's `ref`.
REFERENCE_KEYS = ("transfer_id", "order_id", "case_id", "bill_id", "device_id", "vehicle_id")

#: Value tiers in ascending order; unknown tiers rank below all of them.
VALUE_TIERS = ("low", "medium", "high", "vip")

#: Purposes a customer must opt in to; any other purpose (e.g. service) is allowed
#: until revoked.
OPT_IN_PURPOSES = frozenset({"marketing"})

ANY = "*"


class _SharedEmpty(dict[Any, Any]):
    """The one empty mapping that every context without channels, contact points,
    consent, attributes, intent scores or device keys holds: most customers lack some
    of them, and an empty dict of their own costs 64 bytes each. It refuses every write;
    the fields are typed `Mapping`, and a writer takes a dict of the context's own
    first (`owned`)."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("the contexts' shared empty mapping is never written (see `owned`)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    setdefault = update = pop = popitem = clear = _refuse


_NOTHING: Mapping[Any, Any] = _SharedEmpty()
_K = TypeVar("_K")
_V = TypeVar("_V")


def _nothing() -> Mapping[Any, Any]:
    return _NOTHING


def owned(mapping: Mapping[_K, _V]) -> dict[_K, _V]:
    """A context's mapping to write to: itself, or a new dict for the shared empty one
    (the caller puts it back in the context)."""
    return {} if isinstance(mapping, _SharedEmpty) else cast(dict[_K, _V], mapping)


# The structs that hold only strings, numbers and bytes are not tracked by the garbage
# collector (`gc=False`): no cycle can pass through them, and a context taken back from
# the cold tier makes hundreds of them.


class ChannelStats(Struct, array_like=True, gc=False):
    """How often and how recently the customer used one channel."""

    count: int = 0
    last_seen: float = 0.0


class Interaction(Struct, array_like=True, frozen=True, gc=False):
    """One remembered interaction, as snapshots before `RecentInteractions` held them
    (`CustomerContext.recent`); `ref` is "key=value" of its matter, if any."""

    event_id: str
    ts: float
    type: str
    channel: str
    touchpoint: str | None = None
    partner_id: str | None = None
    ref: str | None = None


#: An interaction in `RecentInteractions.records`: its time, its event id's digest, and
#: its type, channel, contact point, partner and reference as indices into the words.
_RECORD = struct.Struct("<d8s5B")
_SIZE = _RECORD.size
_TIME = struct.Struct("<d")  # (a record's first field)
_TYPE, _TOUCHPOINT = 16, 18  # (where a record's type and contact point are)
_CODED = 5  # (words a record names)
#: The most words a log lists (an index is a byte); the first is None, "no word".
_MOST_WORDS = 256
assert MAX_RECENT * _CODED + _CODED < _MOST_WORDS  # (room for a new interaction's words)

#: An interaction as `RecentInteractions.entries` gives it: time, id's digest, type,
#: channel, contact point, partner, reference.
Entry = tuple[float, bytes, str, str, str | None, str | None, str | None]


def _no_words() -> list[str | None]:
    return [None]


class RecentInteractions(Struct, array_like=True, gc=False):
    """The customer's latest interactions (at most MAX_RECENT), oldest first, as records
    of bytes: a context taken back from the cold tier decodes them as a few objects, not
    six an interaction (a decode's cost is the objects it makes, each into memory no
    cache holds), and a customer in memory keeps as few.

    A record (`_RECORD`, 21 bytes): the interaction's time, its event id's
    `event_digest` (what merges tell interactions apart by), then its type, channel,
    contact point, partner and reference (`ref`: "key=value" of the matter it concerns)
    as indices into `words`, which lists each word once, after None (no contact point,
    partner or reference).
    """

    words: list[str | None] = msgspec.field(default_factory=_no_words)
    records: bytearray = msgspec.field(default_factory=bytearray)

    def __len__(self) -> int:
        return len(self.records) // _SIZE

    def add(
        self,
        ts: float,
        digest: bytes,
        type: str,
        channel: str,
        touchpoint: str | None = None,
        partner_id: str | None = None,
        ref: str | None = None,
    ) -> None:
        """Remember an interaction at its place in time (after those of the same time),
        the oldest forgotten beyond MAX_RECENT."""
        if self is _NO_INTERACTIONS:
            raise TypeError("the contexts' shared empty log is never written (see `fold`)")
        words = self.words
        if len(words) > _MOST_WORDS - _CODED:
            self._forget_words()
            words = self.words
        record = _RECORD.pack(
            ts,
            digest,
            words.index(type) if type in words else _new_word(words, type),
            words.index(channel) if channel in words else _new_word(words, channel),
            0 if touchpoint is None else self._word(touchpoint),
            0 if partner_id is None else self._word(partner_id),
            0 if ref is None else self._word(ref),
        )
        records = self.records
        if not records or _TIME.unpack_from(records, len(records) - _SIZE)[0] <= ts:
            records += record
        else:  # (out of order: another device's, another partition's)
            at = bisect_right([r[0] for r in _RECORD.iter_unpack(records)], ts) * _SIZE
            records[at:at] = record
        if len(records) > MAX_RECENT * _SIZE:
            del records[:_SIZE]

    def digests(self) -> list[bytes]:
        return [r[1] for r in _RECORD.iter_unpack(self.records)]

    def entries(self) -> list[Entry]:
        """Each interaction: time, id's digest, type, channel, contact point, partner and
        reference; oldest first."""
        words = self.words
        return [
            (ts, digest, words[t] or "", words[c] or "", words[p], words[o], words[r])
            for ts, digest, t, c, p, o, r in _RECORD.iter_unpack(self.records)
        ]

    def last_of(self, count: int) -> tuple[bytearray, bytearray]:
        """The contact points and the types of the latest `count` interactions, oldest
        first, as indices into `words` (0: none): for a loop over them all (the intent
        model's features), which reads no record whole."""
        records = self.records
        start = max(len(records) - count * _SIZE, 0)
        return records[start + _TOUCHPOINT :: _SIZE], records[start + _TYPE :: _SIZE]

    def latest_touchpoints(self, limit: int) -> list[str]:
        """The contact points of the latest interactions that have one, latest first, at
        most `limit`."""
        words = self.words
        found: list[str] = []
        for code in reversed(self.records[_TOUCHPOINT::_SIZE]):
            touchpoint = words[code]
            if touchpoint is not None:
                found.append(touchpoint)
                if len(found) == limit:
                    break
        return found

    def _word(self, word: str) -> int:
        words = self.words
        return words.index(word) if word in words else _new_word(words, word)

    def _forget_words(self) -> None:
        """Keep only the words the interactions still name."""
        kept = interactions_of(self.entries())
        self.words, self.records = kept.words, kept.records


def _new_word(words: list[str | None], word: str | None) -> int:
    words.append(word)
    return len(words) - 1


#: The log of every context with no interaction (a device's state once it has handed
#: its history over, a tombstone): one for all of them, as with `_NOTHING`.
_NO_INTERACTIONS = RecentInteractions()


def _no_interactions() -> RecentInteractions:
    return _NO_INTERACTIONS


def interactions_of(entries: Iterable[Entry]) -> RecentInteractions:
    """A log of these interactions (`RecentInteractions.entries`), in their order."""
    log = RecentInteractions()
    for entry in entries:
        log.add(*entry)
    return log


class SentimentSignal(Struct, array_like=True, gc=False):
    """What the customer's words and scores say, weighted towards the recent."""

    value: float = 0.0
    samples: int = 0
    last_at: float = 0.0
    lowest: float = 0.0


#: Words of a few values: a context decodes them as the one string each (a `Literal`'s),
#: not a string each time.
JourneyStatus = Literal["open", "stalled"]
JourneyOutcome = Literal["completed", "abandoned", "merged"]


class Touch(Struct, array_like=True, frozen=True, gc=False, omit_defaults=True):
    """One step of a journey: when, where, on which channel. A merge tells two steps
    apart by these; the event's id is not kept (one object more a step for a context
    taken back from the cold tier to make), but a snapshot of a release before may
    still hold it (`event_id`)."""

    ts: float
    channel: str
    touchpoint: str | None
    event_id: str = ""


class JourneyInstance(Struct, array_like=True):
    """A journey in flight for this customer (one per journey and instance key)."""

    journey: str
    key: str
    started_at: float
    last_at: float
    entry_event_id: str
    status: JourneyStatus = "open"
    milestones: dict[str, float] = {}
    stage: str | None = None
    path: list[Touch] = []
    loops: int = 0
    failures: int = 0
    #: The partner leading this journey (co-selling: one owner per journey).
    owner: str | None = None
    sentiment: float | None = None


class JourneySummary(Struct, array_like=True, frozen=True, gc=False):
    """What remains of a finished journey: enough for history, nothing more."""

    journey: str
    key: str
    outcome: JourneyOutcome
    started_at: float
    ended_at: float
    stage: str | None
    touches: int
    loops: int


class SentAction(Struct, array_like=True, gc=False):
    """An action sent to the customer, and its outcome once one is reported."""

    action_id: str
    action: str
    channel: str
    purpose: str
    at: float
    outcome: Outcome | None = None
    outcome_at: float | None = None
    #: The propensity model has learned from this action (a response, or none in time).
    labelled: bool = False


#: Outcomes that show the customer responded (the others: delivered, dismissed, none).
RESPONSES = frozenset({"opened", "clicked", "converted"})
_OUTCOME_RANK = {"delivered": 0, "dismissed": 1, "opened": 2, "clicked": 3, "converted": 4}


class SeenGeneration(Struct, array_like=True, gc=False):
    """Event ids remembered together, as releases before `Seen.digests` kept them (a
    snapshot of theirs is moved there when decoded, `from_snapshot`)."""

    opened: float
    until: float
    ids: dict[bytes, None] = {}


class Seen(Struct, array_like=True, dict=True):
    """The events a customer folded, for recognising their redeliveries. An event as old
    as `floor` or older may have been forgotten to keep within MAX_SEEN, so it can no
    longer be checked.

    The ids (`event_digest`, 8 bytes each) are `digests`, oldest first, in generations:
    `marks` holds one `_MARK` each, oldest first (the customer's latest event time when
    its first and its last id was folded, and how many ids it holds). So a context
    taken back from the cold tier decodes them as two objects, not one an id and four a
    generation (a decode's cost is the objects it makes). A few ids are looked for in
    their bytes; more, in a set made at the first look and kept while the context is in
    memory (an attribute, never in its bytes). `generations`: the form of releases
    before, always empty once decoded.
    """

    generations: tuple[SeenGeneration, ...] = ()
    floor: float = float("-inf")
    digests: bytearray = msgspec.field(default_factory=bytearray)
    marks: bytearray = msgspec.field(default_factory=bytearray)

    def __contains__(self, digest: bytes) -> bool:
        digests = self.digests
        if len(digests) > _SCANNED:
            index: set[bytes] | None = self.__dict__.get("index")
            if index is None:
                index = self.__dict__["index"] = set(_each_id(digests))
            return digest in index
        at = digests.find(digest)
        while at > 0 and at & 7:  # (bytes across two ids: neither of them)
            at = digests.find(digest, at + 1)
        return at >= 0

    def count(self) -> int:
        """How many ids are remembered."""
        return len(self.digests) >> 3

    def oldest(self) -> float:
        """The latest event time of the oldest generation's last id (inf: none)."""
        return _MARK.unpack_from(self.marks)[1] if self.marks else math.inf

    def add(self, digest: bytes) -> None:
        self.digests += digest
        index: set[bytes] | None = self.__dict__.get("index")
        if index is not None:
            index.add(digest)

    def drop(self, ids: int) -> None:
        """Forget the oldest `ids` ids."""
        dropped = self.digests[: ids * _DIGEST]
        del self.digests[: ids * _DIGEST]
        index: set[bytes] | None = self.__dict__.get("index")
        if index is not None:
            index.difference_update(_each_id(dropped))


def _each_id(digests: bytearray) -> Iterator[bytes]:
    return (bytes(digests[at : at + _DIGEST]) for at in range(0, len(digests), _DIGEST))


class Handed(Struct, array_like=True, gc=False):
    """What a device handed over at a login (`login_id`, at event time `at`): a copy of
    its context, or nothing (empty)."""

    login_id: str
    at: float
    context: bytes


class CustomerContext(Struct, array_like=True):
    """Everything seen so far about one customer (or one anonymous visitor).

    Its snapshot is an array of its fields in order, as are those of the structs it
    holds: half the bytes of a map of their names, for the recovery snapshots, the cold
    tier and recorded decision inputs alike. So a field is only ever added, last and with
    a default (a snapshot made before it has none), never removed or moved.
    """

    key: str
    known: bool
    first_seen: float
    last_seen: float
    events: int = 0
    anonymous_ids: tuple[str, ...] = ()
    channels: Mapping[str, ChannelStats] = msgspec.field(default_factory=_nothing)
    #: The interactions of a snapshot before `interactions` (moved there when it is
    #: decoded): empty otherwise.
    recent: tuple[Interaction, ...] = ()
    touchpoints: Mapping[str, int] = msgspec.field(default_factory=_nothing)
    partners: tuple[str, ...] = ()
    consent: Mapping[str, bool] = msgspec.field(default_factory=_nothing)
    value_tier: str | None = None
    lifetime_value: float | None = None
    timezone: str | None = None
    preferred_channel: str | None = None
    #: Profile properties the playbook asks to keep (`profile_properties`).
    attributes: Mapping[str, str | int | float | bool] = msgspec.field(default_factory=_nothing)
    sentiment: SentimentSignal = msgspec.field(default_factory=SentimentSignal)
    journeys: list[JourneyInstance] = []
    finished: tuple[JourneySummary, ...] = ()
    segments: tuple[str, ...] = ()
    #: Actions sent to this customer (bounded) and what became of them: contact pressure
    #: (caps, cooldowns, fatigue) is read from here, exact at the next event.
    actions: tuple[SentAction, ...] = ()
    #: The intent model's view of what the customer is trying to do: the intent last
    #: announced (it changes only with a clear margin), and the latest probabilities.
    intent: str | None = None
    intent_scores: Mapping[str, float] = msgspec.field(default_factory=_nothing)
    #: For an anonymous visitor who has identified: the customer it now belongs to, by
    #: pseudonym (its events are forwarded there), and the key it seals them under (made
    #: at each login, handed to that customer with the device's merge).
    alias_to: str | None = None
    forward_key: bytes = b""
    #: An alias of a release before forwards were sealed: the customer's id (made
    #: `alias_to` when it is next woken).
    alias_of: str | None = None
    #: For an alias, for the redelivery horizon after its login: what it handed over,
    #: kept to answer the customer's handover request, and to answer it again should the
    #: customer, resumed after a crash, ask under a handover key made anew.
    handed: Handed | None = None
    #: The events folded within the redelivery horizon (for an alias: the ones folded
    #: before it identified), so that a redelivery is never folded twice.
    seen: Seen = msgspec.field(default_factory=Seen)
    #: Set when this customer (or device) was erased, in event time: on a tombstone (no
    #: key, nothing else) or on a fresh profile started after it. For the redelivery
    #: horizon after it, nothing as old as the erasure and nothing from a device is
    #: folded (see `CustomerStep`), so no event in flight brings the customer back.
    erased_at: float | None = None
    #: A customer who has just identified a device waits for the device's answer (its
    #: profile merge, or that it has nothing to hand over) before folding anything else,
    #: so the merge lands at the same point of their stream however long it took to come
    #: round the events topic: the answer's id, since when (event time), and the events
    #: that arrived meanwhile, in order.
    awaiting: str | None = None
    awaiting_since: float = 0.0
    held: tuple[Event, ...] = ()
    #: The customer's own key (`operators.sealing`): what is written about them on logs
    #: that outlive the state (their decisions' inputs) is sealed under it, and erasing
    #: them destroys it. Made when first needed; never in a copy of the context.
    secret: bytes = b""
    #: What the records written about this customer name them by (`customer`): their
    #: pseudonym (`operators.identity.pseudonym`), never their id.
    pseudonym: str = ""
    #: The keys this customer's devices seal their forwarded events under, by device
    #: pseudonym, latest last (`MAX_DEVICE_KEYS`): never in a copy of the context.
    device_keys: Mapping[str, list[bytes]] = msgspec.field(default_factory=_nothing)
    #: Forwarded events that no key here opens yet, in arrival order: a device forwards
    #: as soon as it has identified, and when the loop lags behind the input (a cluster
    #: reading a backlog) its events can come round before the merge that hands over its
    #: key (`MAX_UNOPENED`): never in a copy of the context.
    unopened: tuple[Event, ...] = ()
    #: The latest interactions, oldest first (MAX_RECENT).
    interactions: RecentInteractions = msgspec.field(default_factory=_no_interactions)


def new_context(key: str, event: Event, pseudonym: str) -> CustomerContext:
    ts = event.ts.timestamp()
    return CustomerContext(
        key=key,
        known=event.customer_id is not None,
        first_seen=ts,
        last_seen=ts,
        pseudonym=pseudonym,
    )


def tombstone(erased_at: float) -> CustomerContext:
    """What remains of an erased customer or device for the redelivery horizon: that it
    was erased, and when; nothing that names or describes anyone."""
    return CustomerContext(
        key="", known=False, first_seen=erased_at, last_seen=erased_at, erased_at=erased_at
    )


def is_tombstone(ctx: CustomerContext) -> bool:
    return ctx.erased_at is not None and not ctx.key


def event_digest(event_id: str) -> bytes:
    """64 bits of an event id: what a context remembers of it (a collision between two
    of one customer's ids within the horizon is a chance of about 2**-52)."""
    return blake2b(event_id.encode(), digest_size=_DIGEST).digest()


#: `recall`'s answer for an event too old to be checked.
TOO_OLD = b""


def recall(ctx: CustomerContext, event_id: str, ts: float, horizon: float) -> bytes | None:
    """What the context knows of an event (id, time): the digest of its id if it is new
    (to fold, and remember with it); None if it was folded already (a redelivery);
    TOO_OLD (empty) if it may have been folded and forgotten since: older than the
    horizon before the customer's latest event, or than what MAX_SEEN kept.

    One call on the hot path, every event. A redelivery is known by its id alone,
    whatever time it carries, so one id never triggers two decisions.
    """
    digest = blake2b(event_id.encode(), digest_size=_DIGEST).digest()
    seen = ctx.seen
    if digest in seen:
        return None
    if ts < ctx.last_seen - horizon or ts <= seen.floor:
        return TOO_OLD
    return digest


def remember(seen: Seen, digest: bytes, latest: float, horizon: float) -> None:
    """Remember a folded event (`latest`: the customer's latest event time, with it).

    A new generation opens every eighth of the horizon or of MAX_SEEN; the generations
    the horizon has passed, and the oldest beyond MAX_SEEN, are forgotten then.
    """
    marks = seen.marks
    opened, count = latest, 0
    if marks:
        opened, _until, count = _MARK.unpack_from(marks, len(marks) - _MARK.size)
        if count >= _SEEN_GENERATION_SIZE or latest - opened >= horizon / _SEEN_GENERATIONS:
            forget(seen, latest - horizon, room=_SEEN_GENERATION_SIZE)
            opened, count = latest, 0
            marks += _MARK.pack(latest, latest, 0)
    else:
        marks += _MARK.pack(latest, latest, 0)
    seen.add(digest)
    _MARK.pack_into(marks, len(marks) - _MARK.size, opened, latest, count + 1)


def forget(seen: Seen, before: float, room: int = 0) -> None:
    """Forget the generations all older than `before`, then the oldest until `room` more
    ids fit within MAX_SEEN (raising `floor`: as old as them is no longer checked)."""
    marks = seen.marks
    generations = len(marks) // _MARK.size
    dropped = ids = 0
    while dropped < generations:
        _opened, until, count = _MARK.unpack_from(marks, dropped * _MARK.size)
        if until >= before:
            break
        dropped += 1
        ids += count
    if room + (generations - dropped) * _SEEN_GENERATION_SIZE > MAX_SEEN:
        excess = seen.count() - ids + room - MAX_SEEN
        while dropped < generations and excess > 0:
            _opened, until, count = _MARK.unpack_from(marks, dropped * _MARK.size)
            seen.floor = max(seen.floor, until)
            excess -= count
            dropped += 1
            ids += count
    if dropped:
        del marks[: dropped * _MARK.size]
        seen.drop(ids)


def _reference(properties: Properties) -> str | None:
    for ref_key in REFERENCE_KEYS:
        value = properties.get(ref_key)
        if value is not None:
            return f"{ref_key}={value}"
    return None


def fold(
    ctx: CustomerContext,
    event: Event,
    profile_keys: frozenset[str] = frozenset(),
    *,
    digest: bytes | None = None,
    horizon: float = DEFAULT_REDELIVERY_HORIZON,
) -> CustomerContext:
    """Fold one event into the context, in place, and return it; its id is remembered
    (`digest`, when the caller has it already) for the redelivery `horizon`.

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
        channels = ctx.channels = owned(ctx.channels)
        stats = channels[channel] = ChannelStats()
    stats.count += 1
    stats.last_seen = max(stats.last_seen, ts)

    touchpoint = event.touchpoint
    if touchpoint is not None:
        points = ctx.touchpoints
        if touchpoint in points or len(points) < MAX_TOUCHPOINTS:
            points = ctx.touchpoints = owned(points)
            points[touchpoint] = points.get(touchpoint, 0) + 1

    anonymous_id = event.anonymous_id
    if anonymous_id is not None and anonymous_id not in ctx.anonymous_ids:
        ctx.anonymous_ids = (*ctx.anonymous_ids, anonymous_id)
    partner_id = event.partner_id
    if partner_id is not None and partner_id not in ctx.partners:
        ctx.partners = (*ctx.partners, partner_id)[-MAX_PARTNERS:]

    properties = event.properties
    if properties:
        _fold_profile(ctx, properties)
        if profile_keys:
            # In the event's order, not the set's: a set's order follows the hash seed,
            # and the context (snapshots, recorded decision inputs) must not.
            for name, value in properties.items():
                if name in profile_keys and value is not None:
                    attributes = ctx.attributes = owned(ctx.attributes)
                    attributes[intern(name)] = _shared(value)
    if event.consent is not None:
        c = event.consent
        consent = ctx.consent = owned(ctx.consent)
        consent[intern(f"{c.channel or ANY}/{c.purpose or ANY}")] = c.granted
    if event.outcome is not None and event.action_id is not None:
        record_outcome(ctx, event.action_id, event.outcome, ts)

    if digest is None:
        digest = event_digest(event.event_id)
    interactions = ctx.interactions
    if interactions is _NO_INTERACTIONS:
        interactions = ctx.interactions = RecentInteractions()
    interactions.add(
        ts,
        digest,
        event.type,
        channel,
        touchpoint,
        partner_id,
        _reference(properties) if properties else None,
    )
    remember(ctx.seen, digest, ctx.last_seen, horizon)
    return ctx


def record_sent(ctx: CustomerContext, sent: SentAction, memory: Mapping[str, float]) -> None:
    """Log a sent action, forgetting those no policy needs any more: `memory` says, per
    action, how long after sending it still counts (caps, cooldown, fatigue, attribution).
    Forgetting by count instead would let a busy week of service messages push a
    marketing send out of its cap's window."""
    now = sent.at
    kept = [s for s in ctx.actions if now - s.at <= memory.get(s.action, 0.0)]
    ctx.actions = (*kept, sent)[-MAX_ACTIONS:]


def record_outcome(
    ctx: CustomerContext, action_id: str, outcome: Outcome, at: float
) -> SentAction | None:
    """Credit an outcome to the action it reports on; the strongest outcome wins."""
    for sent in reversed(ctx.actions):
        if sent.action_id == action_id:
            if sent.outcome is None or _OUTCOME_RANK[outcome] > _OUTCOME_RANK[sent.outcome]:
                sent.outcome, sent.outcome_at = outcome, at
            return sent
    return None


def _entry_time(entry: Entry) -> float:
    return entry[0]


def _fold_profile(ctx: CustomerContext, properties: Properties) -> None:
    tier = properties.get("value_tier")
    if isinstance(tier, str):
        ctx.value_tier = intern(tier)
    ltv = properties.get("lifetime_value")
    if isinstance(ltv, int | float) and not isinstance(ltv, bool):
        ctx.lifetime_value = float(ltv)
    tz = properties.get("timezone")
    if isinstance(tz, str):
        ctx.timezone = intern(tz)
    preferred = properties.get("preferred_channel")
    if isinstance(preferred, str):
        ctx.preferred_channel = intern(preferred)


def _shared(value: str | int | float | bool) -> str | int | float | bool:
    """A string as the one object of its value (`sys.intern`), anything else as it is."""
    return intern(value) if isinstance(value, str) else value


def _share_repeated(ctx: CustomerContext) -> None:
    """What repeats from customer to customer held once in a decoded context, as in a
    folded one: its words interned (a decode makes a new string for every word of every
    customer, which a million customers in memory would each keep), its empty log and
    mappings the shared ones. Interned strings go when nothing holds them, so an erased
    customer's stay no longer than the customer does."""
    if not ctx.interactions.records:
        ctx.interactions = _NO_INTERACTIONS
    words = ctx.interactions.words
    for i in range(1, len(words)):
        word = words[i]
        if word is not None:
            words[i] = intern(word)
    if ctx.value_tier is not None:
        ctx.value_tier = intern(ctx.value_tier)
    if ctx.timezone is not None:
        ctx.timezone = intern(ctx.timezone)
    if ctx.preferred_channel is not None:
        ctx.preferred_channel = intern(ctx.preferred_channel)
    # (an empty mapping decodes as a dict of its own: the shared one instead)
    ctx.channels = {intern(k): v for k, v in ctx.channels.items()} or _NOTHING
    ctx.touchpoints = {intern(k): v for k, v in ctx.touchpoints.items()} or _NOTHING
    ctx.consent = {intern(k): v for k, v in ctx.consent.items()} or _NOTHING
    ctx.attributes = {intern(k): _shared(v) for k, v in ctx.attributes.items()} or _NOTHING
    ctx.intent_scores = ctx.intent_scores or _NOTHING
    ctx.device_keys = ctx.device_keys or _NOTHING


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


def is_tombstone_snapshot(data: bytes) -> bool:
    """Whether snapshot bytes are a tombstone's (no context but a tombstone has an empty
    key, the first field): for a recovery store to treat it as its key's erasure. Read
    from the bytes' shape, not from a tombstone's bytes: a release that adds a field
    still knows the tombstones of the one before."""
    if data[:1] == b"\xdc":  # an array (of at most 65,535 fields), first of them ""
        return data[3:4] == b"\xa0"
    return data[:1] == b"\xde" and data[3:8] == b"\xa3key\xa0"  # (a map, of releases before)


def to_snapshot(ctx: CustomerContext, *, copy: bool = False) -> bytes:
    """Compact immutable bytes of the context, for recovery snapshots. `copy`: for
    another purpose (a merge, a decision's input), without what only the state needs:
    the ids remembered for recognising redeliveries, the customer's and devices' keys,
    and what an alias keeps of its handover."""
    if copy and (
        ctx.seen.marks
        or ctx.secret
        or ctx.handed is not None
        or ctx.forward_key
        or ctx.device_keys
        or ctx.unopened
    ):
        ctx = msgspec.structs.replace(
            ctx,
            seen=Seen(),
            secret=b"",
            handed=None,
            forward_key=b"",
            device_keys=_NOTHING,
            unopened=(),
        )
    return _SNAPSHOT_ENCODER.encode(ctx)


def from_snapshot(data: bytes) -> CustomerContext:
    """The context of snapshot bytes, of this release or of one before (a map, or
    interactions as a list)."""
    if data[:1] in _MAP_HEADERS:  # (a snapshot of a release before the array form)
        ctx = _from_map_form(_MAP_FORM_DECODER.decode(data))
    else:
        ctx = _SNAPSHOT_DECODER.decode(data)
    if ctx.recent:  # (a snapshot before `interactions`)
        ctx.interactions = interactions_of(
            (i.ts, event_digest(i.event_id), i.type, i.channel, i.touchpoint, i.partner_id, i.ref)
            for i in ctx.recent
        )
        ctx.recent = ()
    seen = ctx.seen
    if seen.generations:  # (a snapshot before `Seen.digests`)
        for generation in seen.generations:
            seen.marks += _MARK.pack(generation.opened, generation.until, len(generation.ids))
            seen.digests += b"".join(generation.ids)
        seen.generations = ()
    _share_repeated(ctx)
    return ctx


def _map_form(cls: type[Struct], name: str, **types: object) -> type[Struct]:
    """`cls` as releases before the array form wrote it: a map of its fields' names."""
    fields: list[tuple[str, object, object]] = []
    for field in msgspec.structs.fields(cls):
        default: object = field.default
        if field.default_factory is not msgspec.NODEFAULT:
            default = msgspec.field(default_factory=field.default_factory)
        fields.append((field.name, types.get(field.name, field.type), default))
    return msgspec.defstruct(name, fields)


_MapJourneyInstance = _map_form(JourneyInstance, "_MapJourneyInstance")
_MapCustomerContext = _map_form(
    CustomerContext, "_MapCustomerContext", journeys=GenericAlias(list, (_MapJourneyInstance,))
)
_MAP_FORM_DECODER = msgspec.msgpack.Decoder(_MapCustomerContext)
#: The first byte of a msgpack map (fixmap, map 16, map 32): no array starts so.
_MAP_HEADERS = frozenset({bytes([b]) for b in range(0x80, 0x90)} | {b"\xde", b"\xdf"})


def _from_map_form(old: Struct) -> CustomerContext:
    values = msgspec.structs.asdict(old)
    values["journeys"] = [JourneyInstance(**msgspec.structs.asdict(j)) for j in values["journeys"]]
    return CustomerContext(**values)


def absorb_visitor(ctx: CustomerContext, visitor: CustomerContext) -> None:
    """Fold an identified visitor's context (their anonymous history) into the customer's.

    Journeys are combined by the journey tracker; this merges everything else.
    The customer's own statements (consent, profile) win over the visitor's.
    """
    ctx.events += visitor.events
    ctx.first_seen = min(ctx.first_seen, visitor.first_seen)
    ctx.last_seen = max(ctx.last_seen, visitor.last_seen)
    channels, points = owned(ctx.channels), owned(ctx.touchpoints)
    for channel, theirs in visitor.channels.items():
        ours = channels.get(channel)
        if ours is None:
            channels[channel] = ChannelStats(theirs.count, theirs.last_seen)
        else:
            ours.count += theirs.count
            ours.last_seen = max(ours.last_seen, theirs.last_seen)
    for point, visits in visitor.touchpoints.items():
        if point in points or len(points) < MAX_TOUCHPOINTS:
            points[point] = points.get(point, 0) + visits
    ctx.channels, ctx.touchpoints = channels or _NOTHING, points or _NOTHING
    mine = ctx.interactions.entries()
    known = {entry[1] for entry in mine}
    merged = [*mine, *(e for e in visitor.interactions.entries() if e[1] not in known)]
    merged.sort(key=_entry_time)  # (stable: of one time, the customer's first)
    ctx.interactions = interactions_of(merged[-MAX_RECENT:])
    device = visitor.key.split(":", 1)[-1]
    for anonymous_id in [device, *visitor.anonymous_ids]:
        if anonymous_id not in ctx.anonymous_ids:
            ctx.anonymous_ids = (*ctx.anonymous_ids, anonymous_id)
    for partner in visitor.partners:
        if partner not in ctx.partners:
            ctx.partners = (*ctx.partners, partner)[-MAX_PARTNERS:]
    if visitor.consent:
        consent = ctx.consent = owned(ctx.consent)
        for scope, granted in visitor.consent.items():
            consent.setdefault(scope, granted)
    if visitor.attributes:
        attributes = ctx.attributes = owned(ctx.attributes)
        for name, value in visitor.attributes.items():
            attributes.setdefault(name, value)
    ours_s, theirs_s = ctx.sentiment, visitor.sentiment
    if theirs_s.samples:
        total = ours_s.samples + theirs_s.samples
        ours_s.value = (ours_s.value * ours_s.samples + theirs_s.value * theirs_s.samples) / total
        ours_s.samples = total
        ours_s.last_at = max(ours_s.last_at, theirs_s.last_at)
        ours_s.lowest = min(ours_s.lowest, theirs_s.lowest)
