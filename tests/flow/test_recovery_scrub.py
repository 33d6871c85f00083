"""Erasure reaches the recovery store: after a scrub, no byte of an erased customer is
left in its files (rows, freed pages, write-ahead log), and the run still resumes."""

import pytest

from flows.dataflow.sources import EventFileSource
from flows.runtime.recovery_store import scrub
from tests.flow.test_erasure import erasure_file
from tests.flow_helpers import comparable_outputs, run_embedded

pytestmark = pytest.mark.recovery


def _store(recovery) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(recovery.iterdir()))


def test_a_scrub_leaves_no_byte_of_an_erased_customer_in_the_recovery_store(entry_point, tmp_path):
    """With a backup interval, bytewax keeps the erased customer's older snapshots as
    live rows: the search finds them. The scrub drops them and rewrites the files; the
    customers who remain are still there, and a resume from the scrubbed store ends
    with the same outputs."""
    events, recovery, out = tmp_path / "events.jsonl", tmp_path / "recovery", tmp_path / "out"
    erasure_file(events)
    run_embedded(
        entry_point,
        EventFileSource(events),
        out,
        recovery=recovery,
        snapshot_interval=0.05,
        backup_interval=3600.0,
    )
    before = _store(recovery)
    assert b"cust-Q7" in before or b"laptop-Q7" in before  # kept by the backup interval
    outputs = comparable_outputs(out)

    assert scrub(recovery) > 0

    after = _store(recovery)
    for erased in (b"cust-Q7", b"laptop-Q7"):
        assert erased not in after
    assert b"cust-other-1" in after
    run_embedded(entry_point, EventFileSource(events), out, recovery=recovery)
    assert comparable_outputs(out) == outputs
