"""Timers in event time: the same input gives the same journey transitions embedded,
replayed from Kafka, caught up live from a backlog, and fed live in real time.

A playbook whose device activation stalls after 3 s and is abandoned 8 s later, and
eight customers who complete, stall, come back, or give up, a second or so apart. The
stalls and abandonments fall due against the watermark: on a replay, against the
events; live, once the flow has caught up, against the wall clock. A backlog caught
up after downtime does not abandon every journey at once, nor stamp them with today.
"""

import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from bytewax.testing import run_main
from kafka import KafkaProducer

from flows.dataflow.kafka import kafka_flow
from flows.dataflow.sources import EventFileSource
from flows.runtime.settings import KafkaSettings, load_compiled
from schemas.event import Event
from schemas.journey import JourneyTransition
from tests.conftest import fresh_topics, kafka_env
from tests.flow_helpers import file_lines, run_embedded
from tests.helpers import key_of, wire
from tests.integration.test_live_kafka import short_playbook, transitions_on, wait_for
from tests.kafka_io import live_flow, produce

pytestmark = pytest.mark.integration


def scenario(base: datetime) -> list[Event]:
    """Eight customers' device activations, and one last event that moves event time on."""
    events: list[Event] = []

    def at(seconds: float, type_: str, customer: str, touchpoint: str | None = None) -> None:
        events.append(
            Event(
                event_id=f"et-{len(events)}",
                ts=base + timedelta(seconds=seconds),
                type=type_,
                channel="store" if type_ == "device_purchased" else "app",
                customer_id=customer,
                touchpoint=touchpoint,
            )
        )

    for i in range(8):
        o, customer = 1.2 * i, f"cust-T{i}"
        at(o, "device_purchased", customer, "store_high_street")
        if i % 4 == 0:  # done before any stall
            at(o + 1.5, "device_activated", customer, "activation")
        elif i % 4 == 2:  # a milestone, a stall, then done
            at(o + 1.5, "page_view", customer, "activation")
            at(o + 6.0, "device_activated", customer, "activation")
        elif i % 4 == 3:  # stalls, comes back, then gives up
            at(o + 4.5, "page_view", customer, "help_network")
        # i % 4 == 1: stalls, then is abandoned
    last = max(e.ts for e in events)
    at((last - base).total_seconds() + 14.0, "page_view", "cust-T-end", "home")
    events.sort(key=lambda e: e.ts)
    return events


def comparable(transitions: list[JourneyTransition], until: datetime) -> list[bytes]:
    return sorted(msgspec.json.encode(t) for t in transitions if t.at <= until)


def test_embedded_replayed_backlog_and_live_give_the_same_transitions(bootstrap_servers, tmp_path):
    playbook_file = short_playbook(tmp_path)
    playbook = load_compiled(playbook_file)
    events = scenario(datetime.now(UTC) + timedelta(seconds=3))
    end = events[-1].ts

    def topics(name: str, *, tail: bool) -> KafkaSettings:
        return fresh_topics(
            bootstrap_servers, f"test-et-{name}", tail=tail, channels=playbook.channels
        )

    def live_env(settings: KafkaSettings) -> dict[str, str]:
        return {
            **kafka_env(settings),
            "WAYFINDER_KAFKA_TAIL": "true",
            "WAYFINDER_PLAYBOOK": str(playbook_file),
            "WAYFINDER_LATENESS": "0s",  # the stalls are seconds long: none to spare
        }

    def settled(settings: KafkaSettings) -> list[JourneyTransition]:
        # Everyone's journey has ended: completed or abandoned.
        def ended() -> list[JourneyTransition] | None:
            seen = transitions_on(settings)
            done = {t.customer for t in seen if t.kind in ("completed", "abandoned")}
            return seen if len(done) == 8 else None

        wait_for(ended, timeout=90, what="every journey to end")
        time.sleep(1.0)  # anything else the flow had in hand
        return transitions_on(settings)

    # Fed live, in real time: each event produced at its own time.
    fed = topics("fed", tail=True)
    stderr = tmp_path / "fed.stderr"
    with live_flow(live_env(fed), stderr=stderr) as (flow,):
        producer = KafkaProducer(acks="all", **fed.kafka_python_config())
        for event in events:
            time.sleep(max(0.0, (event.ts - datetime.now(UTC)).total_seconds()))
            producer.send(fed.topic("events"), key=key_of(event), value=wire(event))
            producer.flush()
        producer.close()
        fed_live = settled(fed)
    # SIGTERM is a clean stop: exit 0, and the summary said what the run did.
    said = stderr.read_text()
    assert flow.returncode == 0, said[-3000:]
    assert '"events":17' in said, said[-3000:]

    # Caught up live from a backlog: all of it is history by now.
    assert datetime.now(UTC) > end
    backlog = topics("backlog", tail=True)
    produce(backlog, "events", [(key_of(e), wire(e)) for e in events])
    with live_flow(live_env(backlog)):
        caught_up = settled(backlog)

    # Replayed from Kafka, bounded, in this process.
    replay = topics("replay", tail=False)
    produce(replay, "events", [(key_of(e), wire(e)) for e in events])
    run_main(kafka_flow(replay, playbook=playbook))
    replayed = transitions_on(replay)

    # Embedded, from a file.
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(wire(e) + b"\n" for e in events))
    out = tmp_path / "embedded"
    run_embedded(run_main, EventFileSource(events_file), out, playbook=playbook)
    embedded = [
        msgspec.json.decode(line, type=JourneyTransition)
        for line in file_lines(out / "journeys.jsonl")
        if b'"intent_changed"' not in line
    ]

    expected = comparable(embedded, end)
    kinds = sorted(t.kind for t in embedded if t.at <= end)
    assert kinds.count("completed") == kinds.count("abandoned") == 4, kinds
    assert kinds.count("stalled") >= 6, kinds
    assert comparable(replayed, end) == expected
    assert comparable(caught_up, end) == expected
    assert comparable(fed_live, end) == expected
    # Nothing stamped with the wall clock: every transition is at its event time.
    assert all(t.at <= end for t in caught_up + fed_live)
