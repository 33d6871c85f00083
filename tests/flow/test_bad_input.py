"""No record stops the flow, and none vanishes: whatever it holds, it is folded or it is
a dead letter with its reason, and the customers' state is as if it had never come.

The property tests (marked `fuzz`) generate records, valid and invalid, and drive them
through the flow's own steps (decode, the customer step, routing, encoding) without
bytewax, so hypothesis can try thousands; the flow tests run the embedded flow on 1 and
2 workers over a simulated day with hostile records spread through it.
"""

import base64
import hashlib
import json
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from io import BytesIO
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.dataflow.clock import EventClock, EventTime
from flows.dataflow.customer import CustomerLogic, StepOutput
from flows.dataflow.decode import AheadLimit, make_decoder, unpack_kafka, unpack_raw
from flows.dataflow.routing import route_batch
from flows.dataflow.sources import EventFileSource, RawRecord, read_line
from flows.lab.simulator import SimulationConfig, simulate
from flows.runtime.settings import deployment_secret, state_key
from operators.customer_step import CustomerStep
from operators.identity import LoopSeal
from operators.models import ModelSet
from schemas.codec import DEFAULT_MAX_EVENT_BYTES, encode
from schemas.deadletter import MAX_RAW_BYTES, DeadLetter
from schemas.event import SPECIAL_TYPES, Consent, Event
from state.context import from_snapshot, new_context, to_snapshot
from tests.flow_helpers import comparable_outputs, run_embedded
from tests.helpers import default_playbook, ev, hostile_records

PLAYBOOK = default_playbook()
CHANNELS = [*PLAYBOOK.channels, "fax", "Web", ""]
TYPES = [*sorted(SPECIAL_TYPES), "page_view", "transfer_failed", "call", "x" * 65]
IDS = ["c1", "c2", "anon:c1", "a1", "a2", "\x00", "x" * 129, "é"]


# ---------------------------------------------------------------- generated records


def _timestamps() -> st.SearchStrategy[Any]:
    zones: list[tzinfo | None] = [
        UTC,
        timezone(timedelta(hours=-5)),
        timezone(timedelta(hours=14)),
        None,  # naive: refused
    ]
    moments = st.tuples(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.sampled_from(zones),
    ).map(lambda moment: moment[0].replace(tzinfo=moment[1]).isoformat())
    near = st.integers(-3 * 86400, 3 * 86400).map(
        lambda s: (datetime(2026, 3, 2, 12, tzinfo=UTC) + timedelta(seconds=s)).isoformat()
    )
    edges = st.sampled_from(
        ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00", "2090-01-01T00:00:00Z"]
    )
    return st.one_of(near, near, moments, edges, st.integers(), st.text(max_size=30))


_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
    max_leaves=8,
)


VISIT = ev("page_view", "web", customer=None, anon="a1")


def _blob(max_size: int = 64) -> st.SearchStrategy[str]:
    return st.binary(max_size=max_size).map(lambda b: base64.b64encode(b).decode())


#: States the loop's records may name: real pseudonyms, and not quite ones.
_STATES = st.sampled_from([state_key("c1"), state_key("anon:a1"), "0" * 32, "A" * 32, "x"])


def _merge() -> st.SearchStrategy[dict[str, Any]]:
    """A merge's payload: random bytes, or a real context (under a forged signature)."""
    context = st.one_of(
        st.binary(max_size=64),
        st.just(
            to_snapshot(
                new_context("anon:a1", ev("page_view", "web", customer=None, anon="a1"), "p-a1")
            )
        ),
    ).map(lambda b: base64.b64encode(b).decode())
    return st.fixed_dictionaries(
        {"source": _STATES, "login_id": st.just("l1"), "context": context},
        optional={"sealed_to": _blob(40)},
    )


_fields: dict[str, st.SearchStrategy[Any]] = {
    "customer_id": st.sampled_from(IDS),
    "anonymous_id": st.sampled_from(IDS),
    "touchpoint": st.sampled_from(["home", "transfers", "bill_app", "Home", "checkout"]),
    "properties": st.dictionaries(
        st.sampled_from(["timezone", "value_tier", "lifetime_value", "transfer_id", "x"]),
        st.one_of(_scalars, st.sampled_from(["Europe", "Europe/Paris", "../etc", "vip"])),
        max_size=4,
    ),
    "text": st.text(max_size=50),
    "score": st.one_of(st.floats(allow_nan=True), st.integers()),
    "request_id": st.sampled_from(["r1", "r2"]),
    "action_id": st.sampled_from(["act-1", "x"]),
    "outcome": st.sampled_from(["converted", "dismissed", "opened", "won"]),
    "consent": st.fixed_dictionaries(
        {"granted": st.booleans()},
        optional={"channel": st.sampled_from(CHANNELS), "purpose": st.text(max_size=9)},
    ),
    "merge": _merge(),
    "handover": st.fixed_dictionaries(
        {"customer": _STATES, "login_id": st.just("l1"), "public_key": _blob(40)}
    ),
    "forward": st.fixed_dictionaries(
        {"source": _STATES, "event": _blob(200)}, optional={"sealed": st.booleans()}
    ),
    "to": _STATES,
    "signature": st.text(alphabet="0123456789abcdef", min_size=63, max_size=64),
    "deep": st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    "unknown": _values,
}


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """One record's bytes: an event-like object, sometimes broken on the way out."""
    body: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1", "e2", "e3", "\ud800", ""])),
        "ts": draw(_timestamps()),
        "type": draw(st.sampled_from(TYPES)),
        "channel": draw(st.sampled_from(CHANNELS)),
    }
    if draw(st.integers(0, 3)) == 0:  # shaped like one of the loop's own records
        kind = draw(st.sampled_from(["profile_merge", "handover_request", "forward", "erase"]))
        body["type"], body["to"] = kind, draw(_STATES)
        field = {"profile_merge": "merge", "handover_request": "handover"}.get(kind, kind)
        if field in _fields:
            body[field] = draw(_fields[field])
        if kind == "forward" and draw(st.booleans()):  # an event that is one, unsealed
            inner = encode(
                ev("page_view", "web", customer=None, anon=draw(st.sampled_from(IDS[3:])))
            )
            body["forward"] = {
                "source": draw(_STATES),
                "event": base64.b64encode(inner).decode(),
                "sealed": False,
            }
    for name in draw(st.sets(st.sampled_from(sorted(_fields)), max_size=5)):
        body[name] = draw(_fields[name])
    deep = body.pop("deep", None)
    raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    if deep is not None:
        raw = raw[:-1] + b', "nested": ' + deep.encode() + b"}"
    if "to" in body and draw(st.booleans()):
        raw = _signed(raw)  # as Wayfinder would have written it, whatever it says
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "bytes", "not_object"]))
    if damage == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    elif damage == "not_object":
        raw = draw(st.sampled_from([b"[]", b"null", b"1e999", b'"text"', b"{}"]))
    return raw


def _signed(raw: bytes) -> bytes:
    """A loop record signed under the deployment's secret (unchanged if it is no event)."""
    try:
        event = msgspec.json.decode(raw, type=Event)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return raw
    return encode(LoopSeal(deployment_secret()).signed(event))


class _Flow:
    """The flow's own steps, driven by hand: decode, one CustomerLogic per key, routing."""

    def __init__(self) -> None:
        step = CustomerStep(
            PLAYBOOK,
            ModelSet(PLAYBOOK),
            record_inputs=True,
            seal=LoopSeal(deployment_secret()),
        )
        self.step = step
        self.clock = EventClock()
        self.decode = make_decoder(
            DEFAULT_MAX_EVENT_BYTES, unpack_raw, self.clock, None, AheadLimit(86400.0)
        )
        self.logics: dict[str, CustomerLogic] = {}

    def feed(self, raw: bytes) -> list[StepOutput]:
        """One record through the flow; returns what the customer steps emitted."""
        decoded = self.decode([RawRecord(raw, "test", 0)])
        keyed = [d for d in decoded if type(d) is tuple]
        dead = [d for d in decoded if type(d) is DeadLetter]
        assert keyed or dead, f"record vanished: {raw[:200]!r}"
        assert all(type(d) in (tuple, DeadLetter, EventTime) for d in decoded)
        emitted: list[StepOutput] = list(dead)
        for held_as, value in keyed:
            logic = self.logics.get(held_as)
            if logic is None:
                logic = CustomerLogic(self.step, None, timers=False, clock=self.clock, ledger=None)
            outputs, discard = logic.on_batch([value])
            emitted += outputs
            if discard:
                self.logics.pop(held_as, None)
            else:
                self.logics[held_as] = logic
                logic.snapshot()  # as bytewax does at the end of an epoch
        for routed in route_batch([("key", output) for output in emitted]):
            assert routed[2] is None or isinstance(routed[2], bytes)
        return emitted

    def end(self) -> None:
        for logic in self.logics.values():
            outputs, _discard = logic.on_eof()
            route_batch([("key", output) for output in outputs])


@pytest.mark.fuzz
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=12))
def test_generated_records_never_stop_the_flow_and_each_is_folded_or_dead_lettered(batch):
    flow = _Flow()
    for raw in batch:
        flow.feed(raw)
    flow.end()


@st.composite
def valid_events(draw: st.DrawFn) -> bytes:
    """Events the schema takes: every one is folded, decided on, never refused."""
    kind = draw(st.sampled_from(["page_view", "transfer_failed", "call", "app_open", "consent"]))
    event = ev(
        kind,
        draw(st.sampled_from(PLAYBOOK.channels)),
        minutes=draw(st.floats(-3000, 3000)),
        customer=draw(st.sampled_from(["c1", "c2"])),
        touchpoint=draw(st.sampled_from(["home", "transfers", "bill_app", None])),
        consent=Consent(granted=draw(st.booleans())) if kind == "consent" else None,
        timezone=draw(st.sampled_from(["Europe", "Europe/Paris", "Mars/Base", None])),
    )
    return encode(event)


@pytest.mark.fuzz
@settings(max_examples=150, deadline=None)
@given(st.lists(valid_events(), min_size=1, max_size=20))
def test_generated_valid_events_are_all_folded_and_none_is_a_dead_letter(batch):
    flow = _Flow()
    for raw in batch:
        letters = [o for o in flow.feed(raw) if type(o) is DeadLetter]
        assert letters == [], letters[0].detail
    flow.end()


# ---------------------------------------------------------------- the embedded flow


def _with_hostile_records(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A simulated day as an events file, and the same with hostile records spread
    through it (each aimed at a customer and a device of the day)."""
    config = SimulationConfig(customers=120, hours=24, seed=5)
    lines = [raw for _ts, raw in simulate(config)]
    known = [json.loads(line) for line in lines[: len(lines) // 2] if line.startswith(b"{")]
    identified = next(e for e in known if e.get("type") == "identify")
    customer, device = identified["customer_id"], identified["anonymous_id"]
    at = datetime.fromisoformat(identified["ts"])
    hostile = hostile_records(customer, device, at + timedelta(minutes=1))
    mixed, blanks = list(lines), list(lines)
    step = len(lines) // (len(hostile) + 1)
    for i, (raw, _reason) in enumerate(reversed(hostile)):
        line = len(lines) - (i + 1) * step
        mixed.insert(line, raw)
        blanks.insert(line, b"")  # the same batches of lines: learning waits on the same rounds
    clean, dirty = tmp_path / "clean.jsonl", tmp_path / "dirty.jsonl"
    clean.write_bytes(b"\n".join(blanks) + b"\n")
    dirty.write_bytes(b"\n".join(mixed) + b"\n")
    return clean, dirty, [reason for _raw, reason in hostile]


def test_hostile_records_are_dead_letters_and_change_nothing_else(entry_point, tmp_path):
    """The same day with and without the hostile records gives the same decisions,
    journeys, audiences, actions, loop events, models and map: each hostile record is
    a dead letter with its reason, bounded, and no customer's state moved for it."""
    clean, dirty, reasons = _with_hostile_records(tmp_path)
    run_embedded(entry_point, EventFileSource(clean), tmp_path / "clean")
    run = run_embedded(entry_point, EventFileSource(dirty), tmp_path / "dirty")

    expected, got = comparable_outputs(tmp_path / "clean"), comparable_outputs(run.out)
    clean_letters = [
        msgspec.json.decode(line, type=DeadLetter) for line in expected.pop("dlq.jsonl")
    ]
    all_letters = [msgspec.json.decode(line, type=DeadLetter) for line in got.pop("dlq.jsonl")]
    assert got == expected
    # The day's own bad lines (the simulator sends some) are dead letters in both runs
    # (at other line numbers); the rest are the hostile records, each for its reason.
    seen = Counter((d.reason, d.detail) for d in clean_letters)
    letters = []
    for letter in all_letters:
        if seen[letter.reason, letter.detail]:
            seen[letter.reason, letter.detail] -= 1
        else:
            letters.append(letter)
    assert sorted(d.reason for d in letters) == sorted(reasons)
    assert not +seen
    for letter in all_letters:
        assert len(letter.raw) <= MAX_RAW_BYTES
        assert len(encode(letter)) < 128 * 1024  # fits any broker's message limit
    big = next(d for d in letters if d.reason == "too_large")
    assert big.size > 900_000 and len(big.raw) <= MAX_RAW_BYTES


def test_a_200_mb_line_is_rejected_holding_only_its_first_bytes_in_memory():
    """A line far longer than an event can be is read in bounded chunks: its size and
    digest are kept, its bytes are not (the file stands in for 200 MB: 40 MB)."""
    size = 40 * 1024 * 1024
    line = b"x" * size
    data = BytesIO(b'{"a":1}\n' + line + b"\n" + b'{"b":2}\n')
    tracemalloc.start()
    try:
        first = read_line(data, DEFAULT_MAX_EVENT_BYTES)
        tracemalloc.reset_peak()
        value, consumed, cut = read_line(data, DEFAULT_MAX_EVENT_BYTES)
        assert value == b""
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == (b'{"a":1}', 8, None)
    assert cut == (size, hashlib.sha256(line).hexdigest())
    assert consumed == size + 1
    assert peak < 4 * 1024 * 1024, f"peak {peak:,} bytes while skipping a {size:,}-byte line"
    assert read_line(data, DEFAULT_MAX_EVENT_BYTES) == (b'{"b":2}', 8, None)


@pytest.mark.parametrize("ts_ms", [2**63 - 1, -5, 0, 253402300800000, 1_765_000_000_123])
def test_a_kafka_timestamp_no_calendar_holds_is_no_reason_to_stop(ts_ms):
    """A producer sets a message's CreateTime to any 64-bit value: the record is still
    decoded (or dead-lettered) without a broker time, never a crash. The time is made a
    date only for a dead letter (a good record never needs it)."""
    decode = make_decoder(
        DEFAULT_MAX_EVENT_BYTES, unpack_kafka, EventClock(), None, AheadLimit(86400.0)
    )
    messages = [
        Message(topic="events", partition=1, offset=7, value=value, timestamp=(1, ts_ms))
        for value in (b"{}", encode(ev("page_view", "web")))
    ]
    bad, good = ([d for d in decode([m]) if type(d) is not EventTime] for m in messages)
    assert [type(d) for d in good] == [tuple]
    assert len(bad) == 1 and isinstance(bad[0], DeadLetter)
    assert (bad[0].source, bad[0].partition, bad[0].offset) == ("events", 1, 7)
    sensible = ts_ms == 1_765_000_000_123  # (the others: before 1970, or after 9999)
    assert bad[0].received_at == (datetime.fromtimestamp(ts_ms / 1000, UTC) if sensible else None)


def test_a_record_that_fails_to_fold_leaves_the_keys_made_before_it_as_they_were():
    """Keys are random: a rollback that folded a state's events anew would make new
    ones, which the vault and the records already sealed under the old ones (a merge to
    the customer, the device's key for its forwards) do not know."""
    seal = LoopSeal(deployment_secret())
    step = CustomerStep(PLAYBOOK, seal=seal)
    clock = EventClock()
    stamp = (float("-inf"), float("-inf"), 0.0, 1)
    customer = CustomerLogic(step, None, timers=False, clock=clock, ledger=None)
    device = CustomerLogic(step, None, timers=False, clock=clock, ledger=None)

    def sent(outputs: Any, kind: str) -> Event:
        return next(o for o in outputs if isinstance(o, Event) and o.type == kind)

    browse = ev("page_view", "web", customer=None, anon="a1", touchpoint="phones")
    login = ev("identify", "web", minutes=1, customer="c1", anon="a1")
    device.on_batch([("anon:a1", browse, stamp), ("anon:a1", login, stamp)])
    asked, _ = customer.on_batch([("c1", login, stamp)])
    answered, _ = device.on_batch([("", sent(asked, "handover_request"), stamp)])
    merge = sent(answered, "profile_merge")
    assert merge.merge is not None
    # A request signed but unusable fails at the device; a merge altered (and signed
    # again) fails at the customer: each state is rolled back to before it.
    unusable = msgspec.structs.replace(sent(asked, "handover_request"), event_id="x-ask")
    assert unusable.handover is not None
    unusable = seal.signed(
        msgspec.structs.replace(
            unusable, handover=msgspec.structs.replace(unusable.handover, public_key=bytes(32))
        )
    )
    altered = seal.signed(
        msgspec.structs.replace(
            merge, merge=msgspec.structs.replace(merge.merge, context=merge.merge.context[:-1])
        )
    )
    for logic, record in ((device, unusable), (customer, altered)):
        failed, _ = logic.on_batch([("", record, stamp)])
        assert [d.reason for d in failed if isinstance(d, DeadLetter)] == ["fold_failed"]
    # The customer's key still opens the merge; the device's forwards still open.
    merged, _ = customer.on_batch([("", merge, stamp)])
    assert any(getattr(o, "kind", None) == "merged" for o in merged)
    later = ev("page_view", "web", minutes=2, customer=None, anon="a1", touchpoint="plans")
    forwarded, _ = device.on_batch([("anon:a1", later, stamp)])
    customer.on_batch([("", sent(forwarded, "forward"), stamp)])
    context = from_snapshot(customer.snapshot())
    assert context.touchpoints.get("phones") == 1 and context.touchpoints.get("plans") == 1
