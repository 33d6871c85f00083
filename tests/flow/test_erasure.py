"""Right to be forgotten: after an erase event, no state and no snapshot holds the customer."""

import base64
import json
import pickle
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import init_db_dir

from flows.dataflow.clock import EventClock
from flows.dataflow.cold_tier import ColdTier
from flows.dataflow.customer import CustomerLogic
from flows.dataflow.sources import EventFileSource
from flows.runtime.run_files import KEY_VAULT
from flows.runtime.settings import ColdSettings, SettingsError, state_key
from operators.customer_step import CustomerStep
from operators.identity import instance_name
from schemas.audience import Tombstone
from schemas.codec import BadInput
from schemas.event import Event
from state.context import (
    DEFAULT_REDELIVERY_HORIZON,
    CustomerContext,
    from_snapshot,
    is_tombstone,
    to_snapshot,
)
from state.key_vault import VaultReader
from state.rocks_customer_store import RocksCustomerStore
from tests.flow_helpers import ENTRY_POINTS, file_lines, run_embedded
from tests.helpers import Harness, default_playbook, ev, profile, stuck_transfer


def _event(i: int, ts: str, type_: str, **fields) -> str:
    return json.dumps({"event_id": f"er-{i}", "ts": ts, "type": type_, "channel": "web", **fields})


def _others(
    first_id: int, count: int, customers: int, touchpoint: str, ts: Callable[[int], str]
) -> list[str]:
    """Page views of other customers (`cust-other-N`), the i-th at `ts(i)`: traffic
    enough for several snapshots around an erasure."""
    return [
        _event(
            first_id + i,
            ts(i),
            "page_view",
            customer_id=f"cust-other-{i % customers}",
            touchpoint=touchpoint,
        )
        for i in range(count)
    ]


def erasure_file(path: Path) -> None:
    """A customer with a laptop history, a journey and a segment; then erased; others go on."""
    rows = [
        _event(
            1, "2026-03-02T10:00:00Z", "page_view", anonymous_id="laptop-Q7", touchpoint="phones"
        ),
        _event(
            2,
            "2026-03-02T10:05:00Z",
            "identify",
            customer_id="cust-Q7",
            anonymous_id="laptop-Q7",
            touchpoint="login",
            properties={"value_tier": "high", "paper_bill": True},
        ),
        _event(
            3, "2026-03-02T10:06:00Z", "page_view", customer_id="cust-Q7", touchpoint="phone_detail"
        ),
    ]
    # Enough traffic from others for several snapshots before and after the erasure.
    rows += _others(100, 8000, 50, "home", lambda i: f"2026-03-02T10:{10 + i // 400:02d}:00Z")
    # Twelve batches more before the erasure, for the customer to have left memory by then
    # on two workers as on one: the tier's wakes are handed over by the loopback's reader,
    # there perhaps on the other worker, which an embedded run's rounds do not wait for,
    # so they may come a few batches after the watermark passed the idle time.
    rows += _others(40000, 6000, 50, "home", lambda i: f"2026-03-02T10:{40 + i // 400:02d}:00Z")
    rows.append(_event(4, "2026-03-02T11:00:00Z", "erase", customer_id="cust-Q7"))
    rows += _others(20000, 8000, 50, "phones", lambda i: "2026-03-02T11:30:00Z")
    path.write_text("\n".join(rows) + "\n")


def test_erased_customer_is_in_no_state_and_no_snapshot(entry_point, tmp_path):
    events, recovery = tmp_path / "events.jsonl", tmp_path / "recovery"
    erasure_file(events)
    run = run_embedded(
        entry_point,
        EventFileSource(events),
        tmp_path / "out",
        recovery=recovery,
        snapshot_interval=0.05,
    )
    snapshots = b"".join(p.read_bytes() for p in recovery.iterdir())
    assert b"cust-other-1" in snapshots  # the search does find customers who remain
    assert b"cust-Q7" not in snapshots
    assert b"laptop-Q7" not in snapshots
    views = b"".join(p.read_bytes() for p in (run.out / "context_view").iterdir())
    assert b"cust-other-1" in views  # (the context view, which other processes read)
    assert b"cust-Q7" not in views
    assert b"laptop-Q7" not in views

    tombstones = [json.loads(r) for r in run.lines("audiences.jsonl") if b"tombstone" in r]
    assert {"tombstone": state_key("cust-Q7")} in tombstones
    assert {"tombstone": state_key("anon:laptop-Q7")} in tombstones


def test_an_erased_customer_who_was_cold_leaves_no_byte_in_the_cold_tier(
    entry_point, tmp_path, monkeypatch
):
    """The customer and their laptop leave memory (idle 20 minutes of event time) before
    the erasure: it brings them back, erases them, and once that is in the snapshots
    nothing of them is left in the tier's files (its compression off: a search is exact).
    When they left, the search found them there."""
    events, tier = tmp_path / "events.jsonl", tmp_path / "tier"
    erasure_file(events)
    found_when_left: list[bool] = []
    put = RocksCustomerStore.put

    def put_and_search(store: RocksCustomerStore, key: str, state: bytes, **kw: Any) -> None:
        put(store, key, state, **kw)
        if b"cust-Q7" in state:
            files = (p for p in store.path.iterdir() if p.is_file())
            found_when_left.append(any(b"cust-Q7" in p.read_bytes() for p in files))

    monkeypatch.setattr(RocksCustomerStore, "put", put_and_search)
    run_embedded(
        entry_point,
        EventFileSource(events),
        tmp_path / "out",
        recovery=tmp_path / "recovery",
        snapshot_interval=0.05,
        cold=ColdSettings(after=1200.0, directory=tier, compression=False),
    )
    assert found_when_left and all(found_when_left)
    files = b"".join(p.read_bytes() for p in tier.iterdir() if p.is_file())
    assert b"cust-Q7" not in files
    assert b"laptop-Q7" not in files


def test_erase_removes_the_customer_and_their_devices_from_flow_state():
    events = [
        ev("page_view", "web", minutes=-30, customer=None, anon="laptop-Q8", touchpoint="phones"),
        ev("identify", "web", minutes=-20, customer="cust-Q8", anon="laptop-Q8"),
        profile("high", minutes=-10, customer="cust-Q8"),
        ev("erase", "web", minutes=0, customer="cust-Q8"),
        ev("page_view", "web", minutes=5, customer="cust-other", touchpoint="home"),
    ]
    run = Harness().run(events)
    assert set(run.replay.contexts) == {"cust-other"}
    erased = sorted(t.customer for t in run.of(Tombstone))
    assert erased == sorted(state_key(k) for k in ("anon:laptop-Q8", "cust-Q8"))


# ---------------------------------------------------------------- every device, nothing back
ERASED_AT = "2026-03-02T11:00:00Z"
DEVICES = [f"dev-M{i:02d}" for i in range(20)]


def many_devices_file(path: Path) -> None:
    """cust-M linked to 20 devices (DEVICES), erased at ERASED_AT; then device events in
    flight (forwarded by the aliases before their own erasures come back round), a
    redelivery of an event from before the erasure and a late one, while others go on."""
    rows = []
    for i, device in enumerate(DEVICES):
        at = f"2026-03-02T10:{i:02d}:00Z"
        rows.append(_event(300 + i, at, "page_view", anonymous_id=device, touchpoint="phones"))
        rows.append(_event(400 + i, at, "identify", customer_id="cust-M", anonymous_id=device))
    rows.append(
        _event(500, "2026-03-02T10:30:00Z", "page_view", customer_id="cust-M", touchpoint="plans")
    )
    rows.append(
        _event(
            501, "2026-03-02T10:40:00Z", "decision_request", customer_id="cust-M", request_id="q1"
        )
    )
    # A transfer of theirs in trouble: a journey (and an id) of its own.
    rows.append(
        _event(
            502,
            "2026-03-02T10:41:00Z",
            "transfer_failed",
            customer_id="cust-M",
            touchpoint="transfers",
            properties={"transfer_id": "trf-cust-M-1"},
        )
    )
    rows += _others(1000, 2000, 40, "home", lambda i: f"2026-03-02T10:{20 + i // 100:02d}:00Z")
    rows.append(_event(600, ERASED_AT, "erase", customer_id="cust-M"))
    # In flight: each device again, just after the erasure (read before the erasures of
    # the devices come back round the loop); a redelivery; an event late from before.
    rows += [
        _event(700 + i, "2026-03-02T11:00:30Z", "page_view", anonymous_id=device, touchpoint="tv")
        for i, device in enumerate(DEVICES)
    ]
    rows.append(
        _event(
            720, "2026-03-02T11:00:40Z", "decision_request", anonymous_id="dev-M05", request_id="q2"
        )
    )
    rows.append(
        _event(500, "2026-03-02T10:30:00Z", "page_view", customer_id="cust-M", touchpoint="plans")
    )
    rows.append(
        _event(800, "2026-03-02T10:59:00Z", "page_view", customer_id="cust-M", touchpoint="plans")
    )
    rows += _others(3000, 2000, 40, "phones", lambda i: "2026-03-02T11:30:00Z")
    # Another customer asks for a decision: their input is sealed under a key that stays.
    rows.append(
        _event(850, "2026-03-02T11:40:00Z", "decision_request", customer_id="cust-other-1").replace(
            '"channel": "web"', '"channel": "app", "request_id": "req-other-1"'
        )
    )
    # Later, within the horizon: every device once more.
    rows += [
        _event(900 + i, "2026-03-02T12:00:00Z", "page_view", anonymous_id=device, touchpoint="tv")
        for i, device in enumerate(DEVICES)
    ]
    path.write_text("\n".join(rows) + "\n")


def _mentions(line: bytes) -> bool:
    return b"cust-M" in line or b"dev-M" in line  # (their transfer too: trf-cust-M-1)


def test_every_device_is_erased_and_nothing_in_flight_brings_the_customer_back(
    entry_point, tmp_path
):
    """However many devices: each one's state goes; device events forwarded after the
    erasure, a redelivery and a late event from before it re-create nobody. Searching
    every output file and the recovery store's bytes: after the erasure, nothing was
    written that names the customer or a device but the erasure's own records
    (tombstones, the devices' erasures) and the forwards of the events already in
    flight, which the erased customer dropped; the state holds none of them."""
    events, recovery = tmp_path / "events.jsonl", tmp_path / "recovery"
    many_devices_file(events)
    _log_every_snapshot(recovery)
    run = run_embedded(
        entry_point,
        EventFileSource(events),
        tmp_path / "out",
        recovery=recovery,
        snapshot_interval=0.05,
    )
    erase_ts = datetime.fromisoformat(ERASED_AT)
    in_flight = {f"er-{700 + i}" for i in range(len(DEVICES) + 1)}
    late = {"er-800", *in_flight, *(f"er-{900 + i}" for i in range(len(DEVICES)))}
    assert [row for row in _live_rows(recovery) if b"cust-other-1" in row]
    assert [row for row in _live_rows(recovery) if _mentions(row)] == []
    # Every snapshot the run ever wrote (superseded ones too, whose bytes SQLite keeps in
    # freed pages) that names them is from before the erasure, and the store's bytes
    # hold nothing of theirs that is not in one of those snapshots.
    snapshots = _every_snapshot_written(recovery)
    assert [row for row in snapshots if b"cust-other-1" in row]
    assert [
        row[:200]
        for row in snapshots
        if _mentions(row) and not _from_before_erasure(row, erase_ts, in_flight)
    ] == []
    assert _not_written(recovery, snapshots) == []

    # Their decisions' inputs, sealed under keys the erasure destroyed, open no more;
    # the key vault still opens everyone else's.
    vault = VaultReader(tmp_path / "out" / "keys")
    try:
        assert vault.secret(state_key("cust-M")) is None
        sealed = [json.loads(r) for r in run.lines("decisions.inputs.jsonl.gz")]
        assert any(r["customer"] == state_key("cust-M") for r in sealed)
        others = [r for r in sealed if r["customer"] == state_key("cust-other-1")]
        assert others and vault.secret(state_key("cust-other-1"))
        # The vault resolves the pseudonyms of those who remain, and no longer theirs.
        assert vault.customer(state_key("cust-other-1")) == "cust-other-1"
        assert vault.customer(state_key("cust-M")) is None
        assert all(vault.customer(state_key(f"anon:{d}")) is None for d in DEVICES)
        transfer = state_key(instance_name("cust-M", "trf-cust-M-1"))
        assert vault.instance(state_key("cust-M"), transfer) is None
    finally:
        vault.close()

    # The outputs name customers by pseudonym, and the vault that resolved theirs has
    # forgotten it; the loop's own records (`events.jsonl`: logins' requests, merges,
    # forwards, erasures of devices) name a state by pseudonym too, and seal what they
    # carry: no output file names the customer or a device, whenever it was written.
    named = [
        (path.name, line[:200])
        for path in sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
        for line in file_lines(path)
        if _mentions(line)
    ]
    assert named == []

    tombstones = {json.loads(r)["tombstone"] for r in run.lines("audiences.jsonl") if b"tomb" in r}
    devices = {state_key(f"anon:{d}") for d in DEVICES}
    assert tombstones >= {state_key("cust-M"), *devices}
    written = [json.loads(r) for r in run.lines("events.jsonl")]
    assert all(e.get("to") and "customer_id" not in e and "anonymous_id" not in e for e in written)
    assert {e["to"] for e in written if e["type"] == "erase"} == devices
    # What the devices handed over crossed the topic sealed to the customer's handover
    # key, derived from the key the erasure destroyed: nothing of theirs is readable.
    merges = [e for e in written if e["type"] == "profile_merge" and e["to"] == state_key("cust-M")]
    assert len(merges) == len(DEVICES)
    for merge in merges:
        handed = base64.b64decode(merge["merge"]["context"])
        assert not re.search(rb"dev-M|er-3\d\d|phones", handed)
    forwards = {e["event_id"] for e in written if e["type"] == "forward"}
    assert forwards and forwards <= in_flight  # the race happened, for in-flight events only
    decisions = [json.loads(r) for r in run.lines("decisions.jsonl")]
    assert [d["trigger_id"] for d in decisions if d["customer"] == state_key("cust-M")] == [
        "er-501",
        "er-502",
    ]
    # Their transfer's journey was written before the erasure, by a token that no longer
    # resolves (the vault, above): the search above finds no trace of its id.
    journeys = [json.loads(r) for r in run.lines("journeys.jsonl")]
    transfer = state_key(instance_name("cust-M", "trf-cust-M-1"))
    assert any(t.get("instance") == transfer for t in journeys)
    # The late requests are answered all the same: with nothing, naming nobody.
    answers = [d for d in decisions if d["trigger_id"] in late]
    assert answers and all(d["customer"] == "" and not d["candidates"] for d in answers)


def _live_rows(recovery: Path) -> list[bytes]:
    """Every snapshot the recovery store holds (all steps, all epochs it keeps)."""
    rows: list[bytes] = []
    for path in recovery.glob("*.sqlite3"):
        with closing(sqlite3.connect(path)) as db:
            rows += [row for (row,) in db.execute("SELECT ser_change FROM snaps") if row]
    return rows


#: Records every snapshot bytewax writes, in a table of the store's own file: what the
#: raw bytes of the file (freed pages included) can hold is what was written there.
_SNAPSHOT_LOG = """
CREATE TABLE written (ser_change BLOB);
CREATE TRIGGER written_on_insert AFTER INSERT ON snaps BEGIN
  INSERT INTO written VALUES (NEW.ser_change);
END;
CREATE TRIGGER written_on_update AFTER UPDATE ON snaps BEGIN
  INSERT INTO written VALUES (NEW.ser_change);
END;
"""


def _log_every_snapshot(recovery: Path) -> None:
    recovery.mkdir(parents=True)
    init_db_dir(recovery, 1)
    for path in recovery.glob("*.sqlite3"):
        with closing(sqlite3.connect(path)) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'snaps'").fetchone():
                db.executescript(_SNAPSHOT_LOG)


def _every_snapshot_written(recovery: Path) -> list[bytes]:
    rows: list[bytes] = []
    for path in recovery.glob("*.sqlite3"):
        with closing(sqlite3.connect(path)) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'written'").fetchone():
                rows += [row for (row,) in db.execute("SELECT ser_change FROM written") if row]
    return rows


def _from_before_erasure(row: bytes, erase_ts: datetime, allowed: set[str]) -> bool:
    """Whether every piece of a snapshot that names them is from before the erasure: a
    context last changed before it (after it, the erased keys hold tombstones), a record
    read before it, an erasure, or a forward `allowed`."""
    for piece in _bytes_in(pickle.loads(row)):  # the store that bytewax and this flow wrote
        if not _mentions(piece):
            continue
        if piece.startswith(b"{"):
            if not _from_before(json.loads(piece), erase_ts, allowed):
                return False
        else:
            ctx = from_snapshot(piece)
            if ctx.last_seen > erase_ts.timestamp() or ctx.erased_at:
                return False
    return True


def _bytes_in(state: object) -> Iterator[bytes]:
    """The bytes a step's snapshot holds: a customer's context, the records an input
    holds (in named tuples, tuples and lists)."""
    if isinstance(state, bytes):
        yield state
    elif isinstance(state, tuple | list):
        for item in state:
            yield from _bytes_in(item)
    elif isinstance(state, dict):
        for item in state.values():
            yield from _bytes_in(item)


def _not_written(recovery: Path, written: list[bytes]) -> list[bytes]:
    """What the store's files hold of the erased ids (freed pages and the write-ahead
    log included) that is in no snapshot written: an id with the bytes on one side of it
    as some snapshot has them (SQLite cuts a long row at a page's end, so one side may
    be a page's header or the pointer to the next page)."""
    sides: set[bytes] = set()
    for row in written:
        for found in _IDS.finditer(row):
            sides.add(row[max(0, found.start() - _SIDE) : found.end()])
            sides.add(row[found.start() : found.end() + _SIDE])
    unexplained = []
    for path in sorted(recovery.iterdir()):
        data = path.read_bytes()
        for found in _IDS.finditer(data):
            left = data[max(0, found.start() - _SIDE) : found.end()]
            right = data[found.start() : found.end() + _SIDE]
            if left not in sides and right not in sides:
                unexplained.append(data[max(0, found.start() - 80) : found.end() + 40])
    return unexplained


_IDS = re.compile(rb"cust-M|dev-M")
_SIDE = 12


def _from_before(record: dict[str, Any], erase_ts: datetime, allowed: set[str]) -> bool:
    return bool(
        datetime.fromisoformat(record["ts"]) <= erase_ts
        or record["type"] == "erase"
        or record["event_id"] in allowed
    )


# ---------------------------------------------------------------- the step and its state
HORIZON = DEFAULT_REDELIVERY_HORIZON / 60  # minutes


def test_a_customer_with_20_devices_has_every_one_erased():
    """A context once kept 16 device ids and the erasure reached those only: 4 aliases
    survived, and a later event from one of them re-created the customer."""
    devices = [f"dev-Q9-{i:02d}" for i in range(20)]
    events = [profile("high", customer="cust-Q9")]
    for i, device in enumerate(devices):
        events.append(ev("page_view", "web", minutes=i, customer=None, anon=device))
        events.append(ev("identify", "web", minutes=i + 0.5, customer="cust-Q9", anon=device))
    events.append(ev("erase", "web", minutes=30, customer="cust-Q9"))
    run = Harness().run(events)
    assert set(run.replay.contexts) == set()
    assert set(run.replay.erased) == {"cust-Q9", *(f"anon:{d}" for d in devices)}
    for erased in run.replay.erased.values():
        assert is_tombstone(erased)
        held = to_snapshot(erased)
        assert b"Q9" not in held and b"dev-" not in held
    erasures = [e for e in run.of(Event) if e.type == "erase"]
    assert sorted(e.to or "" for e in erasures) == sorted(state_key(f"anon:{d}") for d in devices)

    # Later, within the horizon: each device again; nothing comes back.
    run.run([ev("page_view", "web", minutes=40, customer=None, anon=d) for d in devices])
    assert set(run.replay.contexts) == set()
    # Past the horizon: a device is a new visitor, linked to nobody.
    past = HORIZON + 31
    run.run([ev("page_view", "web", minutes=past, customer=None, anon=devices[3])])
    visitor = run.context(f"anon:{devices[3]}")
    assert (visitor.alias_to, visitor.events, visitor.anonymous_ids) == (None, 1, (devices[3],))
    assert "cust-Q9" not in run.replay.contexts


def test_events_in_flight_after_an_erasure_do_not_bring_the_customer_back():
    """The aliases forward device events to the erased customer before their own
    erasures come back round the loop; redeliveries and late events from before the
    erasure come too. The tombstone takes none of them: it keeps nothing but the time."""
    step = CustomerStep(default_playbook())
    ctx: CustomerContext | None = None
    for event in stuck_transfer(customer="cust-Q5"):
        ctx, _ = step.on_event("cust-Q5", ctx, event)
    old_event = ev("page_view", "web", minutes=55, customer="cust-Q5", touchpoint="help")
    ctx, _ = step.on_event("cust-Q5", ctx, old_event)
    visitor, _ = step.on_event(
        "anon:tablet-Q5", None, ev("page_view", "web", minutes=50, customer=None, anon="tablet-Q5")
    )
    login = ev("identify", "web", minutes=56, customer="cust-Q5", anon="tablet-Q5")
    alias, _ = step.on_event("anon:tablet-Q5", visitor, login)
    ctx, outputs = step.on_event("cust-Q5", ctx, login)
    (request,) = [o for o in outputs if isinstance(o, Event) and o.type == "handover_request"]
    alias, (merge,) = step.on_event("anon:tablet-Q5", alias, request)
    # In flight: the device's answer reaches the customer after the erasure.
    assert isinstance(merge, Event) and merge.type == "profile_merge"
    assert alias is not None and ctx is not None and "tablet-Q5" in ctx.anonymous_ids

    tomb, outputs = step.on_event(
        "cust-Q5", ctx, ev("erase", "web", minutes=60, customer="cust-Q5")
    )
    assert tomb is not None and is_tombstone(tomb)
    assert [o.to for o in outputs if isinstance(o, Event)] == [step.pseudonym_of("anon:tablet-Q5")]
    assert b"Q5" not in to_snapshot(tomb)
    held = to_snapshot(tomb)

    _alias, (forward,) = step.on_event(
        "anon:tablet-Q5", alias, ev("page_view", "web", minutes=61, customer=None, anon="tablet-Q5")
    )
    assert isinstance(forward, Event) and forward.to == step.pseudonym_of("cust-Q5")
    late = ev("page_view", "web", minutes=59, customer="cust-Q5", touchpoint="plans")
    for in_flight in (forward, old_event, late, merge):
        assert step.on_event("cust-Q5", tomb, in_flight) == (tomb, [])
    assert to_snapshot(tomb) == held

    # A device identifying as the erased customer is erased in turn (no alias outlives it).
    phone = ev("identify", "web", minutes=62, customer="cust-Q5", anon="phone-Q5")
    same, (erase,) = step.on_event("cust-Q5", tomb, phone)
    assert same is tomb and isinstance(erase, Event)
    assert (erase.type, erase.to) == ("erase", step.pseudonym_of("anon:phone-Q5"))

    # The customer's own channel, after the erasure: a fresh profile, nothing from before.
    fresh, _ = step.on_event("cust-Q5", tomb, ev("login", "app", minutes=70, customer="cust-Q5"))
    assert fresh is not None and not is_tombstone(fresh)
    assert (fresh.key, fresh.events, fresh.anonymous_ids, fresh.journeys) == ("cust-Q5", 1, (), [])
    assert fresh.erased_at == tomb.erased_at
    assert step.on_event("cust-Q5", fresh, forward) == (fresh, [])  # still in the horizon
    assert step.on_event("cust-Q5", fresh, late) == (fresh, [])
    past = ev("page_view", "web", minutes=60 + HORIZON, customer="cust-Q5", anon="tablet-Q5")
    fresh, _ = step.on_event("cust-Q5", fresh, past)
    assert fresh is not None and fresh.erased_at is None and fresh.events == 2
    # Before the erasure is older than the horizon now: refused, never folded.
    with pytest.raises(BadInput):
        step.on_event("cust-Q5", fresh, late)


def test_a_tombstone_is_dropped_once_the_horizon_has_passed():
    """A service: a timer when the watermark passes the end of the horizon drops it; an
    embedded run, at its end if the watermark is past it; in between it is state, and
    names nobody."""
    step = CustomerStep(default_playbook(), redelivery_horizon=3600.0)
    erase = ev("erase", "web", minutes=0, customer="cust-Q6")
    service_clock = EventClock()
    service = CustomerLogic(step, None, timers=True, clock=service_clock, ledger=None)
    unstamped = (float("-inf"), float("-inf"), 0.0, 1)
    _outputs, discard = service.on_batch([("cust-Q6", erase, unstamped)])
    assert not discard and b"Q6" not in service.snapshot()
    assert service.notify_at() is not None
    service_clock.advance(erase.ts.timestamp() + 1800)
    assert service.on_notify() == ([], False)  # the watermark is not there yet
    service_clock.advance(erase.ts.timestamp() + 3600)
    assert service.on_notify() == ([], True)

    clock = EventClock()
    embedded = CustomerLogic(step, None, timers=False, clock=clock, ledger=None)
    embedded.on_batch([("cust-Q6", erase, unstamped)])
    clock.advance(erase.ts.timestamp() + 1800)
    assert embedded.on_eof() == ([], False)
    held = from_snapshot(embedded.snapshot())
    assert is_tombstone(held) and not step.expired(held, erase.ts.timestamp() + 1800)
    clock.advance(erase.ts.timestamp() + 3600)
    assert embedded.on_eof() == ([], True)


def test_an_erasure_of_a_cold_customer_purges_their_bytes_from_the_tier_files(tmp_path):
    """A customer idle past the tier's time leaves memory (their context on disk); their
    erasure brings them back and tells the tier, which, once that is durable, leaves no
    file holding them. (In a small run a compaction for anyone purges everyone's old
    bytes with it; here nothing else happens, so only the erasure can.)"""
    step = CustomerStep(default_playbook(), redelivery_horizon=3600.0)
    clock = EventClock()
    store = RocksCustomerStore(tmp_path / "tier", compression=False)
    tier = ColdTier(store, 600.0, clock=clock, first_epoch=1)
    visit = ev("page_view", "web", minutes=0, customer="cust-Z9", touchpoint="phones")
    at = visit.ts.timestamp()
    logic = CustomerLogic(step, None, timers=False, clock=clock, ledger=None, cold=tier)
    key = step.pseudonym_of("cust-Z9")
    assert not logic.on_batch([("cust-Z9", visit, (at, at, 0.0, 1))])[1]
    logic.notify_at()  # (bytewax asks after every batch: the tier watches from then)
    clock.advance(at + 700)
    (idle,) = tier.wakes()
    assert idle.key == key and idle.kind == "idle"
    assert logic.on_batch([("", idle, (at + 700, at + 700, 0.0, 1))])[1]  # left memory
    store._db.flush()  # (a long run's memtables reach the files)
    assert any(b"cust-Z9" in p.read_bytes() for p in store.path.iterdir() if p.is_file())

    erase = ev("erase", "web", minutes=20, customer="cust-Z9")
    back = CustomerLogic(step, None, timers=False, clock=clock, ledger=None, cold=tier)
    stamp = (at + 1200, at + 1200, 0.0, 2)
    _outputs, discard = back.on_batch([("cust-Z9", erase, stamp)])
    assert not discard and is_tombstone(from_snapshot(back.snapshot()))
    store.durable(3)
    assert not any(b"cust-Z9" in p.read_bytes() for p in store.path.iterdir() if p.is_file())
    store.close()


def test_a_resume_that_keeps_its_key_vault_elsewhere_is_refused(tmp_path):
    """The vault holds customers' keys and ids outside the flow's state: a resume that
    keeps it elsewhere (another --out folder, WAYFINDER_KEY_VAULT changed) would erase
    nobody there. Where it is is said beside the recovery folder, and such a resume is
    refused in one sentence while that vault is still there; the vault moved whole is
    found."""
    events, recovery = tmp_path / "events.jsonl", tmp_path / "recovery"
    erasure_file(events)
    first = tmp_path / "first"
    run_embedded(ENTRY_POINTS["run_main"], EventFileSource(events), first, recovery=recovery)
    vault = first / KEY_VAULT
    assert VaultReader(vault).exists()
    with pytest.raises(
        SettingsError, match=rf"the key vault .* is at {vault}, and this run's is at"
    ):
        run_embedded(
            ENTRY_POINTS["run_main"],
            EventFileSource(events),
            tmp_path / "second",
            recovery=recovery,
        )
    moved = tmp_path / "moved"
    moved.mkdir()
    vault.rename(moved / KEY_VAULT)  # moved whole, with the run's files
    run_embedded(ENTRY_POINTS["run_main"], EventFileSource(events), moved, recovery=recovery)
    assert (tmp_path / "recovery.key-vault").read_text() == str((moved / KEY_VAULT).resolve())
