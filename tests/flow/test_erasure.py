"""Right to be forgotten: after an erase event, no state and no snapshot holds the customer."""

import json
from pathlib import Path

from flows.dataflow.sources import EventFileSource
from schemas.audience import Tombstone
from tests.flow_helpers import run_embedded
from tests.helpers import Harness, ev, profile


def _event(i: int, ts: str, type_: str, **fields) -> str:
    return json.dumps({"event_id": f"er-{i}", "ts": ts, "type": type_, "channel": "web", **fields})


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
    rows += [
        _event(
            100 + i,
            f"2026-03-02T10:{10 + i // 400:02d}:00Z",
            "page_view",
            customer_id=f"cust-other-{i % 50}",
            touchpoint="home",
        )
        for i in range(8000)
    ]
    rows.append(_event(4, "2026-03-02T11:00:00Z", "erase", customer_id="cust-Q7"))
    rows += [
        _event(
            20000 + i,
            "2026-03-02T11:30:00Z",
            "page_view",
            customer_id=f"cust-other-{i % 50}",
            touchpoint="phones",
        )
        for i in range(8000)
    ]
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

    tombstones = [json.loads(r) for r in run.lines("audiences.jsonl") if b"tombstone" in r]
    assert {"tombstone": "cust-Q7"} in tombstones
    assert {"tombstone": "anon:laptop-Q7"} in tombstones


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
    erased = sorted(t.customer_id for t in run.of(Tombstone))
    assert erased == ["anon:laptop-Q8", "cust-Q8"]
