"""The flow's own events on Kafka: a login's handover (the customer's request, the
device's sealed answer), forwards and device erasures go round the events topic and
are folded as in the embedded run.

A bounded replay does not stop at the topic's end while its own events are on their
way back, and a customer who logged in waits for the device's answer before folding
anything else, so each merge lands where it does embedded, however long the round trip
(on a replay of a full topic: until the whole backlog has been read). The summary counts
the same merges and forwards in both.
"""

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from flows.dataflow.kafka import kafka_flow
from flows.dataflow.sources import EventFileSource
from flows.runtime import metrics
from schemas.event import Event
from tests.conftest import fresh_topics
from tests.flow_helpers import comparable_loop, run_embedded
from tests.helpers import default_playbook
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration

WAYFINDER = str(Path(sys.executable).parent / "wayfinder")


def keyed(line: bytes) -> tuple[bytes | None, bytes]:
    """A line as a producer sends it: keyed by customer, else device (bad input: none)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None, line
    key = None
    if isinstance(event, dict):
        key = event.get("customer_id") or event.get("anonymous_id")
    return (key.encode() if isinstance(key, str) else None), line


def merged(lines: list[bytes]) -> list[bytes]:
    return sorted(line for line in lines if b'"kind":"merged"' in line)


def logins(lines: list[bytes]) -> list[bytes]:
    """The loop's handover requests and merges, as two runs can compare them."""
    return comparable_loop(
        [line for line in lines if b'"handover_request"' in line or b'"profile_merge"' in line]
    )


def test_merges_come_back_and_land_where_they_do_embedded(bootstrap_servers, entry_point, tmp_path):
    events = tmp_path / "events.jsonl"
    subprocess.run(
        [WAYFINDER, "simulate", "--out", str(events), "--customers", "200", "--hours", "24"],
        check=True,
        capture_output=True,
    )
    playbook = default_playbook()

    loop_before = metrics.sample("wayfinder_loop_events")
    embedded = run_embedded(
        entry_point, EventFileSource(events), tmp_path / "out", playbook=playbook
    )
    embedded_loop = metrics.sample("wayfinder_loop_events") - loop_before
    embedded_merged = merged(embedded.lines("journeys.jsonl"))

    # One partition: the file's order is the topic's (a producer keys one person's
    # devices and logins differently, and partitions are read in no common order).
    kafka = fresh_topics(bootstrap_servers, "test-loop", 1, channels=playbook.channels)
    produce(kafka, "events", [keyed(line) for line in events.read_bytes().splitlines()])
    loop_before = metrics.sample("wayfinder_loop_events")
    entry_point(kafka_flow(kafka, playbook=playbook))
    kafka_loop = metrics.sample("wayfinder_loop_events") - loop_before
    kafka_merged = merged([v for _, v in read_all(kafka, "journeys") if v is not None])

    assert len(embedded_merged) >= 20  # the simulated day has logins with journeys to merge
    assert kafka_merged == embedded_merged
    assert kafka_loop == embedded_loop > 0

    # The same logins asked and answered in both; what each device handed over crossed
    # the topic sealed to its customer: nothing of the visitor is readable on it.
    on_topic = [v for _, v in read_all(kafka, "events") if v is not None]
    assert logins(on_topic) == logins(embedded.lines("events.jsonl"))
    merges = [msgspec.json.decode(v, type=Event) for v in on_topic if b'"profile_merge"' in v]
    assert len(merges) >= len(embedded_merged)
    for merge in merges:
        assert merge.merge is not None and len(merge.merge.context) >= 48
        assert b"anon" not in merge.merge.context  # a visitor's context names its key
    # The loop's records name a state by pseudonym alone, as their key and in what they
    # say: no customer's or device's id (a forward's event is sealed).
    own = [(k, v) for k, v in read_all(kafka, "events") if v is not None and b'"to":' in v]
    assert {msgspec.json.decode(v, type=Event).type for _, v in own} >= {"forward", "profile_merge"}
    for key, value in own:
        event = msgspec.json.decode(value, type=Event)
        assert key is not None and key.decode() == event.to
        assert event.customer_id is None and event.anonymous_id is None
        assert b"cust-" not in value and b"anon-" not in value
