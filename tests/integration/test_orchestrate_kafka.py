"""The orchestrate flow on the real broker: mixed good and bad input in, the right outputs out.

The Kafka flow (`flows.dataflow.kafka.kafka_flow`, what `python -m bytewax.run
flows.dataflow.kafka:flow` runs) runs in this process, bounded (it stops at the end of
the events topic), on bytewax's entry points: one worker, and two worker threads.
"""

from collections import Counter

import msgspec
import pytest

from flows.dataflow.kafka import kafka_flow
from flows.runtime.settings import state_key
from operators.identity import instance_name
from schemas.action import Action
from schemas.deadletter import MAX_RAW_BYTES, DeadLetter
from schemas.decision import Decision
from schemas.journey import JourneyTransition
from tests.helpers import default_playbook, ev, hostile_records, key_of, stuck_transfer, wire
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration

BAD = {
    b'{"event_id":"x1","ts":"2026-03-02T12:00:00Z","type":': "malformed_json",
    b'{"event_id":"x2","type":"page_view","channel":"web","customer_id":"c9"}': "invalid_event",
    b'{"event_id":"x3","ts":1772452800,"type":"page_view","channel":"web",'
    b'"customer_id":"c9"}': "invalid_event",
    b'{"event_id":42,"ts":"2026-03-02T12:00:00Z","type":"page_view","channel":"web",'
    b'"customer_id":"c9"}': "invalid_event",
    b'{"event_id":"x5","ts":"2026-03-02T12:00:00Z","type":"page_view","channel":"w\xffb",'
    b'"customer_id":"c9"}': "invalid_utf8",
    b"": "empty",
}


def mixed_batch() -> list[tuple[bytes | None, bytes]]:
    good = [
        *stuck_transfer(customer="cust-A", tier="high", transfer="tx-A"),
        *stuck_transfer(customer="cust-B", tier="medium", transfer="tx-B"),
        ev("page_view", "web", customer="cust-C", touchpoint="home"),
        ev("page_view", "web", customer=None, anon="dev-7", touchpoint="offers"),
    ]
    good.sort(key=lambda e: e.ts)
    messages: list[tuple[bytes | None, bytes]] = [(key_of(e), wire(e)) for e in good]
    bad = [(None, raw) for raw in BAD]
    # Bad input scattered among the good, as it arrives in life.
    for i, item in enumerate(bad):
        messages.insert(1 + i * 3, item)
    return messages


def test_flow_routes_the_stuck_customer_and_dead_letters_every_bad_message(kafka, entry_point):
    produce(kafka, "events", mixed_batch())

    entry_point(kafka_flow(kafka))

    chat = read_all(kafka, "actions.chat")
    assert len(chat) == 1
    key, value = chat[0]
    action = msgspec.json.decode(value, type=Action)
    assert key == state_key("cust-A").encode()  # (the pseudonym: the records name nobody)
    assert (action.customer, action.action, action.channel) == (
        state_key("cust-A"),
        "priority_agent",
        "chat",
    )
    reasons = " ".join(action.reasons)
    assert "money transfer journey" in reasons and "tx-A" not in reasons  # (by token)
    assert action.content["transfer_id"] == state_key(instance_name("cust-A", "tx-A"))
    assert "web at" in reasons and "IVR at" in reasons

    # Anything else is model-driven: a proactive guide when the next-step model, having
    # learned the other customer's path first, sees this one heading for chat.
    for channel in default_playbook().channels:
        if channel != "chat":
            for _, value in read_all(kafka, f"actions.{channel}"):
                other = msgspec.json.decode(value, type=Action)
                assert other.action == "proactive_guide", (channel, other)

    decisions = [msgspec.json.decode(v, type=Decision) for _, v in read_all(kafka, "decisions")]
    decisions = [d for d in decisions if any(c.action == "priority_agent" for c in d.candidates)]
    assert sorted((d.customer, d.outcome) for d in decisions) == sorted(
        [(state_key("cust-A"), "sent"), (state_key("cust-B"), "no_action")]
    )
    assert (
        next(d for d in decisions if d.customer == state_key("cust-A")).action_id
        == action.action_id
    )

    transitions = [
        msgspec.json.decode(v, type=JourneyTransition) for _, v in read_all(kafka, "journeys")
    ]
    entered = {(t.customer, t.journey) for t in transitions if t.kind == "entered"}
    assert {(state_key(c), "money_transfer") for c in ("cust-A", "cust-B")} <= entered

    letters = [msgspec.json.decode(v, type=DeadLetter) for _, v in read_all(kafka, "dlq")]
    assert Counter(letter.raw for letter in letters) == Counter(list(BAD))
    for letter in letters:
        assert letter.reason == BAD[letter.raw]
        assert letter.detail
        assert letter.source == kafka.topic("events")
        assert letter.offset is not None and letter.received_at is not None


def test_hostile_records_on_kafka_are_dead_letters_and_the_flow_goes_on(kafka, entry_point):
    """Records that once stopped the Kafka flow (a crash loop with recovery), and more of
    their kinds: each is a bounded dead letter with its reason, the one on a channel with
    no action topic included, and the stuck customer after them is still served."""
    good = stuck_transfer(customer="cust-A", tier="high", transfer="tx-A")
    hostile = hostile_records("cust-A", "dev-A", good[0].ts)
    messages: list[tuple[bytes | None, bytes]] = [(None, raw) for raw, _reason in hostile]
    messages += [(key_of(e), wire(e)) for e in good]
    produce(kafka, "events", messages)

    entry_point(kafka_flow(kafka))

    (action,) = [msgspec.json.decode(v, type=Action) for _, v in read_all(kafka, "actions.chat")]
    assert (action.customer, action.action) == (state_key("cust-A"), "priority_agent")
    letters = [msgspec.json.decode(v, type=DeadLetter) for _, v in read_all(kafka, "dlq")]
    assert sorted(letter.reason for letter in letters) == sorted(r for _, r in hostile)
    for letter in letters:
        assert len(letter.raw) <= MAX_RAW_BYTES and letter.detail
    big = next(letter for letter in letters if letter.reason == "too_large")
    assert big.size > 900_000 and big.offset is not None
