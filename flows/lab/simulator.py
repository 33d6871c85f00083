"""Seeded traffic simulator: believable cross-channel customer traffic for demos and tests.

Pure Python (no bytewax import): `flows.lab.traffic` hands its partitions to an embedded run.

Each customer is simulated on its own from `random.Random(f"{seed}:{index}")`, so a
partition's output never depends on another partition and the same config always gives
byte-identical records. Generation is lazy: a partition keeps one heap holding, per
customer, the marker of its next session and the events of sessions already started,
so memory grows with the number of customers, never with the number of events.

This module is the orchestration: which sessions customers have and how often (the
session mix), and running them in event-time order. Who the customers are lives in
`population`, what they do in `channels` and the verticals (`telco`, `banking`,
`auto`), broken producers in `bad_input`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter

from flows.lab import auto, banking, channels, telco
from flows.lab.bad_input import BAD_INPUT_KINDS, bad_record
from flows.lab.banking import TRANSFER_VARIANTS
from flows.lab.population import (
    VERTICALS,
    Customer,
    Entry,
    Journeys,
    Session,
    SessionMix,
    customer_profile,
    true_intent,
)
from schemas.codec import encode
from schemas.event import Event

__all__ = [
    "BAD_INPUT_KINDS",
    "CHANNELS",
    "TRANSFER_VARIANTS",
    "SimulatedRecord",
    "SimulationConfig",
    "customer_profile",
    "simulate",
    "simulate_partition",
    "true_intent",
]

#: Every channel the simulator produces (all of them appear in a default run).
CHANNELS = ("web", "app", "email", "sms", "push", "ivr", "call_centre", "chat", "store", "partner")

#: (event time as epoch seconds, raw wire bytes)
SimulatedRecord = tuple[float, bytes]

_DEFAULT_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; `partitions` is fixed so the output never depends on workers."""

    customers: int = 3000
    seed: int = 7
    hours: float = 72.0  # simulated span of event time
    start: datetime = _DEFAULT_START
    bad_input_share: float = 0.003  # share of records that are bad input
    partitions: int = 4

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError("customers must be >= 0")
        if self.hours <= 0:
            raise ValueError("hours must be > 0")
        if self.start.tzinfo is None:
            raise ValueError("start needs a time zone (a naive datetime is ambiguous)")
        if not 0.0 <= self.bad_input_share < 1.0:
            raise ValueError("bad_input_share must be in [0, 1)")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")

    def partition_of(self, index: int) -> int:
        """The partition that simulates the customer with this index."""
        return index % self.partitions


# --------------------------------------------------------------------------- session mix

_COMMON: dict[Session, float] = {
    channels.email: 14.0,
    channels.sms: 6.0,
    channels.push: 6.0,
    channels.digital: 8.0,
}
_BY_VERTICAL: dict[str, dict[Session, float]] = {
    "telco": {
        telco.view_bill: 10.0,
        telco.view_usage: 14.0,
        telco.network_support: 4.0,
        telco.store_visit: 1.5,
    },
    "banking": {
        banking.app_banking: 30.0,
        banking.web_banking: 8.0,
        banking.branch_visit: 1.0,
        banking.balance_ivr: 1.5,
    },
    "auto": {auto.research: 24.0, auto.contact: 2.0, auto.service_booking: 1.0},
}
_PREFERENCE_BOOST: dict[str, Session] = {
    "email": channels.email,
    "sms": channels.sms,
    "push": channels.push,
}


def _session_mix(vertical: str, preferred: str, has_app: bool) -> SessionMix:
    """The customer's session kinds with cumulative weights, nudged to the preferred channel."""
    kinds: list[Session] = []
    cumulative: list[float] = []
    total = 0.0
    for session, weight in (_COMMON | _BY_VERTICAL[vertical]).items():
        if session is channels.push and not has_app:
            continue
        total += weight * (2.0 if _PREFERENCE_BOOST.get(preferred) is session else 1.0)
        kinds.append(session)
        cumulative.append(total)
    return kinds, cumulative


def _journeys(vertical: str) -> Journeys:
    """Once-in-a-while journeys and their chance, for a customer of `vertical`.

    Another vertical's journey keeps its place with chance 0: the place numbers its
    heap marker, which orders journeys planned for the same instant.
    """
    return (
        (banking.transfer_trouble, 0.32 if vertical == "banking" else 0.0),
        (banking.transfer_trouble, 0.04 if vertical == "banking" else 0.0),
        (banking.card_problem, 0.06 if vertical == "banking" else 0.0),
        (telco.phone_upgrade, 0.14 if vertical == "telco" else 0.0),
        (telco.bill_shock, 0.10 if vertical == "telco" else 0.0),
        (auto.test_drive, 0.30 if vertical == "auto" else 0.0),
        (channels.consent_change, 0.05),
        (channels.visitor, 0.08),  # someone browsing anonymously who never logs in
        (channels.visitor, 0.08),
    )


_JOURNEYS = {vertical: _journeys(vertical) for vertical in VERTICALS}
#: Extra journeys a customer's true intent leads to: (session, chance), per vertical and intent.
_INTENT_JOURNEYS: dict[tuple[str, str], Journeys] = {
    ("telco", "upgrade"): ((telco.phone_upgrade, 0.6), (telco.store_visit, 0.3)),
    ("telco", "get_support"): ((telco.network_support, 0.6), (telco.network_support, 0.3)),
    ("telco", "billing"): ((telco.bill_shock, 0.6), (telco.view_bill, 0.5)),
    ("telco", "activate"): ((telco.phone_upgrade, 0.4),),
    ("banking", "pay"): ((banking.transfer_trouble, 0.2), (banking.web_banking, 0.5)),
    ("banking", "get_support"): ((banking.card_problem, 0.5), (banking.transfer_trouble, 0.3)),
    ("auto", "buy"): ((auto.test_drive, 0.5), (auto.research, 0.6)),
    ("auto", "get_support"): ((auto.service_booking, 0.6),),
}


# --------------------------------------------------------------------------- generation


def _partition_events(config: SimulationConfig, partition: int) -> Iterator[tuple[float, Event]]:
    """A partition's good events in (time, customer, sequence) order.

    One heap holds, per customer, the marker of its next session plus the events of the
    sessions already started. A session runs when its marker comes up and queues only
    events at or after that time, so popping the heap stays in event-time order.
    """
    start = config.start.timestamp()
    end = (config.start + timedelta(hours=config.hours)).timestamp()
    heap: list[Entry] = []
    # The customers whose partition_of(index) is this partition.
    for index in range(partition, config.customers, config.partitions):
        c = Customer(config.seed, index, end, heap)
        mix = _session_mix(c.vertical, c.preferred, c.app is not None)
        wanted = _INTENT_JOURNEYS.get((c.vertical, c.true_intent), ())
        c.plan(start, mix, _JOURNEYS[c.vertical], wanted)
    heappop, heappush = heapq.heappop, heapq.heappush
    while heap:
        t, index, n, payload = heappop(heap)
        if n >= 0:
            yield t, payload
            continue
        c, journey = payload
        if journey is not None:
            journey(c, t)
            continue
        c.draw_session()(c, t)
        following = c.next_session(t)
        if following < end:
            heappush(heap, (following, index, -1, payload))


def simulate_partition(config: SimulationConfig, partition: int) -> Iterator[SimulatedRecord]:
    """Records of the customers with index % partitions == partition, in event-time order.

    Lazy: memory grows with the partition's customers, not with its events.
    """
    if not 0 <= partition < config.partitions:
        raise ValueError(f"partition {partition} is outside 0..{config.partitions - 1}")
    return _records(config, partition)


def _records(config: SimulationConfig, partition: int) -> Iterator[SimulatedRecord]:
    """Encoded good records, with bad input after some of them (at the same event time).

    Bad input comes from a per-partition RNG separate from the customers' ones, so the
    good records never change with `bad_input_share`.
    """
    share = config.bad_input_share
    bad_rng = random.Random(f"{config.seed}:bad:{partition}")
    bad_prefix = f"sim-{config.seed}-bad-{partition}-"
    bad = 0
    for t, event in _partition_events(config, partition):
        yield t, encode(event)
        # A geometric number of bad records per good one makes `share` their overall share.
        while share and bad_rng.random() < share:
            yield t, bad_record(bad_rng, event, f"{bad_prefix}{bad}", t)
            bad += 1


def simulate(config: SimulationConfig) -> Iterator[SimulatedRecord]:
    """All partitions merged in event-time order (ties keep partition order)."""
    parts = [simulate_partition(config, p) for p in range(config.partitions)]
    return heapq.merge(*parts, key=itemgetter(0))
