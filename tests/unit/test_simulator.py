"""The simulator is deterministic, partitioned, ordered, realistic and mixes in bad input."""

import argparse
import time
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from flows.cli.options import start_time
from flows.lab.simulator import (
    CHANNELS,
    SimulatedRecord,
    SimulationConfig,
    customer_profile,
    simulate,
    simulate_partition,
    true_intent,
)
from schemas.codec import BadInput, EventDecoder
from schemas.event import Event

SMALL = SimulationConfig(customers=300, seed=11, bad_input_share=0.0)
DECODER = EventDecoder()


@cache
def records(config: SimulationConfig) -> tuple[SimulatedRecord, ...]:
    return tuple(simulate(config))


@cache
def events(config: SimulationConfig) -> tuple[Event, ...]:
    """The decoded events of a run without bad input (decoding must not fail)."""
    assert config.bad_input_share == 0.0
    return tuple(DECODER.decode(raw) for _, raw in records(config))


def customer_index(event: Event) -> int:
    """The simulated customer behind an event (event ids are sim-{seed}-{customer}-{n})."""
    return int(event.event_id.split("-")[2])


def test_same_seed_gives_identical_bytes():
    config = SimulationConfig(customers=200, seed=5)
    assert list(simulate(config)) == list(simulate(config))


def test_different_seed_gives_different_traffic():
    first = list(simulate(SimulationConfig(customers=50, seed=1)))
    second = list(simulate(SimulationConfig(customers=50, seed=2)))
    assert first != second


def test_partitions_union_equals_simulate_and_partitions_are_disjoint_by_customer():
    config = SimulationConfig(customers=200, seed=3, bad_input_share=0.01)
    merged = list(simulate(config))
    union: list[SimulatedRecord] = []
    for partition in range(config.partitions):
        part = list(simulate_partition(config, partition))
        assert part, "every partition has customers"
        for _, raw in part:
            try:
                event = DECODER.decode(raw)
            except BadInput:
                continue
            assert customer_index(event) % config.partitions == partition
            if event.customer_id is not None:
                assert event.customer_id == f"cust-{customer_index(event):06d}"
        union += part
    assert sorted(union) == sorted(merged)


def test_a_partition_does_not_depend_on_the_other_partitions_customers():
    # Customer 200 lands in partition 0; partitions 1-3 must not notice it.
    base = SimulationConfig(customers=200, seed=9)
    more = SimulationConfig(customers=201, seed=9)
    for partition in (1, 2, 3):
        assert list(simulate_partition(base, partition)) == list(
            simulate_partition(more, partition)
        )
    assert list(simulate_partition(base, 0)) != list(simulate_partition(more, 0))


def test_event_time_is_non_decreasing_and_matches_the_event_ts():
    config = SimulationConfig(customers=300, seed=4, bad_input_share=0.01)
    streams = [list(simulate_partition(config, p)) for p in range(config.partitions)]
    for stream in [*streams, list(simulate(config))]:
        times = [t for t, _ in stream]
        assert times == sorted(times)
    start = config.start.timestamp()
    for t, raw in records(SMALL):
        assert DECODER.decode(raw).ts.timestamp() == pytest.approx(t, abs=1e-6)
        assert start <= t < start + SMALL.hours * 3600


def test_event_ids_are_unique_and_deterministic():
    ids = [event.event_id for event in events(SMALL)]
    assert len(ids) == len(set(ids))
    assert all(i.startswith(f"sim-{SMALL.seed}-") for i in ids)


def test_every_good_record_decodes_and_every_bad_one_is_rejected():
    clean = SimulationConfig(customers=300, seed=6, bad_input_share=0.0)
    dirty = SimulationConfig(customers=300, seed=6, bad_input_share=0.05)
    good = list(simulate(clean))
    for _, raw in good:
        DECODER.decode(raw)  # raises if a good record is bad
    # The good records are the same with bad input mixed in; the rest is the bad input.
    mixed = list(simulate(dirty))
    bad: list[SimulatedRecord] = []
    expected = iter(good)
    want: SimulatedRecord | None = next(expected)
    for record in mixed:
        if record == want:
            want = next(expected, None)
        else:
            bad.append(record)
    assert want is None, "all good records are kept, in order"
    reasons: Counter[str] = Counter()
    for _, raw in bad:
        with pytest.raises(BadInput) as info:
            DECODER.decode(raw)
        reasons[info.value.reason] += 1
    assert set(reasons) == {"empty", "too_large", "malformed_json", "invalid_event", "invalid_utf8"}
    assert reasons["too_large"] < reasons["invalid_event"]  # an oversized record is rare
    assert len(bad) / len(mixed) == pytest.approx(0.05, abs=0.012)


def test_bad_input_has_the_event_time_of_its_neighbours():
    config = SimulationConfig(customers=200, seed=6, bad_input_share=0.05)
    stream = list(simulate_partition(config, 0))
    for previous, (t, raw) in pairwise(stream):
        try:
            DECODER.decode(raw)
        except BadInput:
            assert t == previous[0]


def test_default_bad_share_is_close_to_the_setting():
    config = SimulationConfig(customers=1000, seed=2)
    bad = total = 0
    for _, raw in simulate(config):
        total += 1
        try:
            DECODER.decode(raw)
        except BadInput:
            bad += 1
    assert bad / total == pytest.approx(config.bad_input_share, rel=0.35)


def test_all_ten_channels_appear():
    seen = Counter(event.channel for event in events(SMALL))
    assert set(seen) == set(CHANNELS)
    assert len(CHANNELS) == 10


def test_identify_carries_the_profile():
    profiles = {e.customer_id: e.properties for e in events(SMALL) if e.type == "identify"}
    assert len(profiles) > 0.8 * SMALL.customers
    tiers = Counter(p["value_tier"] for p in profiles.values())
    assert tiers["low"] > tiers["medium"] > tiers["high"] > 0
    for props in profiles.values():
        zone, value = props["timezone"], props["lifetime_value"]
        assert isinstance(zone, str) and isinstance(value, float)
        ZoneInfo(zone)  # a real IANA time zone
        assert value > 0
        assert props["preferred_channel"] in CHANNELS
    dealers = {e.partner_id for e in events(SMALL) if e.type == "test_drive_booked"}
    assert dealers and all(d is not None and d.startswith("dealer-") for d in dealers)


def test_customer_profile_and_true_intent_tell_who_a_simulated_customer_is():
    # The closed-loop world reads them without simulating: they must match the traffic.
    intents = {
        "telco": {"upgrade", "get_support", "billing", "activate"},
        "banking": {"pay", "get_support"},
        "auto": {"buy", "get_support"},
    }
    profiles = {e.customer_id: e.properties for e in events(SMALL) if e.type == "identify"}
    assert len(profiles) > 0.8 * SMALL.customers
    for customer_id, props in profiles.items():
        assert customer_id is not None
        index = int(customer_id.removeprefix("cust-"))
        assert customer_profile(SMALL.seed, index) == {
            "vertical": props["vertical"],
            "value_tier": props["value_tier"],
            "timezone": props["timezone"],
            "preferred": props["preferred_channel"],
        }
        assert true_intent(SMALL.seed, index) in intents[str(props["vertical"])]


def test_anonymous_events_precede_identify_for_a_customer():
    first_seen: dict[str, Event] = {}
    first_known: dict[str, Event] = {}
    for event in events(SMALL):
        anon = event.anonymous_id
        if anon is None:
            continue
        first_seen.setdefault(anon, event)
        if event.customer_id is not None:
            first_known.setdefault(anon, event)
    assert len(first_known) > SMALL.customers  # most customers use several devices
    for anon, known in first_known.items():
        # The device is anonymous first; the first event naming the customer is identify.
        assert first_seen[anon].customer_id is None
        assert first_seen[anon].ts <= known.ts
        assert known.type == "identify"
        assert known.properties["value_tier"] in ("low", "medium", "high")
    never_logged_in = set(first_seen) - set(first_known)
    assert len(never_logged_in) > 0.05 * len(first_seen)


def test_sessions_follow_a_daily_rhythm():
    by_hour = Counter(event.ts.hour for event in events(SMALL))
    # UTC mid-morning to evening covers Europe's day; early UTC morning is its night.
    assert sum(by_hour[h] for h in range(9, 19)) > 2.5 * sum(by_hour[h] for h in range(0, 6))


def transfer_cases(config: SimulationConfig) -> dict[str, Counter[str]]:
    """Failed transfers by how the customer escalated, judged from the events alone."""
    tiers = {
        e.customer_id: e.properties["value_tier"] for e in events(config) if e.type == "identify"
    }
    by_transfer: dict[str, list[Event]] = defaultdict(list)
    for event in events(config):
        if "transfer_id" in event.properties:
            by_transfer[str(event.properties["transfer_id"])].append(event)
    cases: dict[str, Counter[str]] = defaultdict(Counter)
    for path in by_transfer.values():
        failed = [e for e in path if e.type == "transfer_failed"]
        if not failed:
            continue
        amount = failed[0].properties["amount"]
        assert failed[0].channel == "app" and isinstance(amount, int | float) and amount > 0
        at = {
            kind: [e.ts.timestamp() for e in path if match(e)]
            for kind, match in {
                "web": lambda e: e.channel == "web" and e.touchpoint == "help_transfers",
                "ivr": lambda e: e.type == "ivr_call" and e.touchpoint == "ivr_payments",
                "chat": lambda e: e.type == "chat_started" and e.touchpoint == "chat_support",
            }.items()
        }
        tier = str(tiers[path[0].customer_id])
        if not at["chat"]:
            if any(e.type == "transfer_completed" for e in path):
                cases["retry_ok"][tier] += 1
            continue
        chat = at["chat"][0]
        recent = {k: any(chat - 3600 <= x <= chat for x in at[k]) for k in ("web", "ivr")}
        if at["web"] and at["ivr"]:
            within = recent["web"] and recent["ivr"]
            cases["within_hour" if within else "beyond_hour"][tier] += 1
        else:
            cases["skip_web" if at["ivr"] else "skip_ivr"][tier] += 1
    return cases


def test_money_transfer_scenario_occurs_within_and_beyond_the_hour():
    cases = transfer_cases(SMALL)
    assert set(cases) == {"within_hour", "beyond_hour", "skip_web", "skip_ivr", "retry_ok"}
    within, beyond = cases["within_hour"].total(), cases["beyond_hour"].total()
    assert within > beyond > 0
    assert within > 0.4 * sum(c.total() for c in cases.values())  # most escalate fast
    assert cases["within_hour"]["high"] > 0  # the priority-agent rule has work to do
    assert set(cases["within_hour"]) == {"low", "medium", "high"}


def test_money_transfer_events_share_the_transfer_id_across_channels():
    paths: dict[str, set[str]] = defaultdict(set)
    for event in events(SMALL):
        if "transfer_id" in event.properties:
            paths[str(event.properties["transfer_id"])].add(event.channel)
    assert any({"app", "web", "ivr", "chat"} <= channels for channels in paths.values())


def test_chat_messages_and_surveys_carry_what_the_models_read():
    evs = events(SMALL)
    assert any(e.type == "chat_message" and e.text for e in evs)
    scores = [e.score for e in evs if e.type == "survey_response"]
    assert scores and all(s is not None and 0 <= s <= 10 for s in scores)
    consents = [e.consent for e in evs if e.type == "consent"]
    assert consents and all(c is not None and c.purpose == "marketing" for c in consents)


def test_default_config_size_is_demo_sized_and_generation_is_lazy():
    config = SimulationConfig()
    first = list(islice(simulate(config), 1000))
    assert len(first) == 1000
    stream = simulate_partition(SimulationConfig(customers=40, hours=24 * 14), 0)
    assert next(iter(stream))  # a generator: nothing is built before it is asked for


def test_memory_does_not_grow_with_the_number_of_events():
    def peak(hours: float) -> tuple[int, int]:
        config = SimulationConfig(customers=100, seed=1, hours=hours, bad_input_share=0.0)
        tracemalloc.start()
        count = sum(1 for _ in simulate_partition(config, 0))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return count, top

    short_count, short_peak = peak(24)
    long_count, long_peak = peak(24 * 6)
    assert long_count > 3 * short_count  # one-off journeys make the short span denser
    assert long_peak < 2 * short_peak


def test_invalid_configs_and_partitions_are_refused():
    with pytest.raises(ValueError):
        SimulationConfig(bad_input_share=1.0)
    with pytest.raises(ValueError):
        SimulationConfig(partitions=0)
    with pytest.raises(ValueError):
        simulate_partition(SimulationConfig(), 4)


def test_the_start_of_the_span_is_given_as_a_time_now_or_a_duration_before_now():
    assert start_time("2026-01-01T00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    ago = time.time() - start_time("now-24h").timestamp()
    assert 86400 - 1 < ago < 86400 + 60
    assert abs(start_time("now").timestamp() - time.time()) < 60
    for wrong in ("2026-01-01", "yesterday", "now-soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            start_time(wrong)


def test_the_events_fall_in_the_span_from_the_start_given():
    start = datetime(2026, 11, 30, 12, tzinfo=UTC)
    config = SimulationConfig(customers=50, seed=3, hours=24, start=start, bad_input_share=0.0)
    times = [e.ts for e in events(config)]
    assert times and start <= min(times) and max(times) <= start + timedelta(hours=24)
