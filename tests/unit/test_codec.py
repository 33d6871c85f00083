"""Decoding is strict and size-limited, and says why bad input is bad."""

import contextlib
import pickle
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from flows.lab.simulator import SimulationConfig, simulate
from schemas.codec import BadInput, EventDecoder, encode
from schemas.topics import TOPIC_SCHEMAS, json_schema
from tests.helpers import ev, hostile_records

GOOD = (
    b'{"event_id":"e1","ts":"2026-03-02T12:00:00+01:00","type":"page_view",'
    b'"channel":"web","customer_id":"c1","touchpoint":"home","properties":{"x":1}}'
)


def reason_of(raw: bytes | None, decoder: EventDecoder | None = None) -> str:
    with pytest.raises(BadInput) as info:
        (decoder or EventDecoder()).decode(raw)
    return info.value.reason


def test_good_event_decodes_with_offset_kept_as_instant():
    event = EventDecoder().decode(GOOD)
    assert event.customer_id == "c1"
    assert event.ts.timestamp() == 1772449200.0  # 11:00 UTC
    assert event.properties == {"x": 1}


def test_encode_then_decode_round_trips():
    event = ev("transfer_failed", "app", touchpoint="transfers", transfer_id="tx1", amount=12.5)
    assert EventDecoder().decode(encode(event)) == event


def test_unknown_vocabulary_is_kept_not_rejected():
    raw = GOOD.replace(b'"page_view"', b'"hologram_ping"').replace(b'"web"', b'"metaverse"')
    event = EventDecoder().decode(raw)
    assert (event.type, event.channel) == ("hologram_ping", "metaverse")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b'{"event_id":"e1","ts":', "malformed_json"),
        (b"not json at all", "malformed_json"),
        (GOOD.replace(b'"c1"', b'"c\xff1"'), "invalid_utf8"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (GOOD.replace(b'"event_id":"e1",', b""), "invalid_event"),
        (GOOD.replace(b'"2026-03-02T12:00:00+01:00"', b"1772449200"), "invalid_event"),
        (GOOD.replace(b"+01:00", b""), "invalid_event"),
        (GOOD.replace(b'"page_view"', b'"Page View"'), "invalid_event"),
        (GOOD.replace(b'"customer_id":"c1",', b""), "invalid_event"),
        (GOOD.replace(b'{"x":1}', b'{"x":{"nested":1}}'), "invalid_event"),
    ],
)
def test_bad_input_is_classified(raw, reason):
    assert reason_of(raw) == reason


def test_oversized_input_is_rejected_before_parsing():
    decoder = EventDecoder(max_bytes=100)
    assert reason_of(GOOD, decoder) == "too_large"


def test_validation_detail_names_the_field():
    bad = GOOD.replace(b'"2026-03-02T12:00:00+01:00"', b"17")
    with pytest.raises(BadInput) as info:
        EventDecoder().decode(bad)
    assert "$.ts" in info.value.detail


@pytest.mark.parametrize(
    ("type_", "missing"),
    [
        ("identify", "anonymous_id"),
        ("consent", "consent"),
        ("decision_request", "request_id"),
        ("action_outcome", "action_id"),
    ],
)
def test_special_types_require_their_fields(type_, missing):
    raw = GOOD.replace(b'"page_view"', f'"{type_}"'.encode())
    with pytest.raises(BadInput) as info:
        EventDecoder().decode(raw)
    assert info.value.reason == "invalid_event"
    assert missing in info.value.detail


def test_erase_of_an_anonymous_visitor_is_accepted():
    raw = GOOD.replace(b'"page_view"', b'"erase"').replace(
        b'"customer_id":"c1"', b'"anonymous_id":"a1"'
    )
    assert EventDecoder().decode(raw).anonymous_id == "a1"


def test_every_topic_exports_a_json_schema():
    for topic in TOPIC_SCHEMAS:
        schema = json_schema(topic)
        assert schema["$schema"].endswith("2020-12/schema")
        name = schema["$ref"].rsplit("/", 1)[1]
        assert name in schema["$defs"]
    events = json_schema("events")["$defs"]["Event"]
    assert set(events["required"]) == {"event_id", "ts", "type", "channel"}
    msgspec.json.encode(json_schema("dlq"))  # serialisable as is


def test_the_events_schema_does_not_offer_the_loops_records_to_outside_producers():
    events = json_schema("events")
    offered = events["$defs"]["Event"]["properties"]
    assert not {"merge", "handover", "forward", "to", "signature"} & offered.keys()
    assert not {"ProfileMerge", "HandoverRequest", "Forward"} & events["$defs"].keys()
    assert "dead-lettered" in events["$defs"]["Event"]["description"]


def test_a_loop_record_names_no_id_and_only_the_loops_records_may_be_larger():
    to = "0" * 32
    loop = b'{"event_id":"l1","ts":"2026-03-02T12:00:00Z","type":"erase","channel":"web",'
    assert EventDecoder().decode(loop + b'"to":"' + to.encode() + b'"}').to == to
    for bad in (
        loop + b'"to":"' + to.encode() + b'","customer_id":"c1"}',  # names someone
        GOOD[:-1] + b',"to":"' + to.encode() + b'"}',  # not one of the loop's types
        GOOD.replace(b'"page_view"', b'"forward"'),  # a loop type with no address
    ):
        with pytest.raises(BadInput) as info:
            EventDecoder().decode(bad)
        assert info.value.reason == "invalid_event", bad
    decoder = EventDecoder(max_bytes=200)
    padded = loop + b'"to":"' + to.encode() + b'","text":"' + b"x" * 150 + b'"}'
    assert decoder.decode(padded).to == to  # the loop's own may be larger
    with pytest.raises(BadInput) as info:
        decoder.decode(GOOD[:-1] + b',"text":"' + b"x" * 150 + b'"}')
    assert info.value.reason == "too_large"


def test_a_customer_id_in_the_visitors_namespace_is_refused():
    raw = GOOD.replace(b'"c1"', b'"anon:laptop-1"')
    with pytest.raises(BadInput) as info:
        EventDecoder().decode(raw)
    assert info.value.reason == "invalid_event" and "anon:" in info.value.detail


def test_an_event_crosses_between_processes_as_its_json_and_comes_back_the_same():
    """bytewax pickles what a cluster's processes hand each other: an event goes as its
    JSON (cheaper than field by field), and comes back equal, its time's offset kept,
    loop records' bytes and all."""
    decoder = EventDecoder()
    hostile = hostile_records("cust-1", "dev-1", datetime(2026, 3, 2, 12, tzinfo=UTC))
    events = []
    for raw, _reason in hostile:
        with contextlib.suppress(BadInput):
            events.append(decoder.decode(raw))
    simulated = SimulationConfig(customers=40, hours=12.0, bad_input_share=0.0)
    events += [decoder.decode(raw) for _t, raw in simulate(simulated)]
    events.append(decoder.decode(GOOD))
    assert any(e.merge is not None for e in events)
    assert any(e.forward is not None for e in events)
    for event in events:
        pickled = pickle.dumps(event)
        assert encode(event) in pickled
        back = pickle.loads(pickled)
        assert back == event
        assert back.ts.utcoffset() == event.ts.utcoffset()
    assert pickle.loads(pickle.dumps(events[-1])).ts.utcoffset() == timedelta(hours=1)
