"""Resuming from snapshots, in this process: a finished run resumed does nothing again."""

import pytest

from tests.flow_helpers import comparable_outputs, file_lines, run_embedded, simulated

pytestmark = pytest.mark.recovery


def test_a_finished_run_resumed_from_its_snapshots_emits_nothing_again(entry_point, tmp_path):
    """Running a finished run again with the same recovery folder re-emits no end-of-input
    output: the contact map's counts, the analytics and every topic stay as they were."""
    recovery, out = tmp_path / "recovery", tmp_path / "out"
    run_embedded(entry_point, simulated(80, 12.0, 3), out, recovery=recovery)
    before = comparable_outputs(out)
    analytics = file_lines(out / "analytics.jsonl")

    again = run_embedded(entry_point, simulated(80, 12.0, 3), out, recovery=recovery)

    assert comparable_outputs(out) == before
    assert file_lines(out / "analytics.jsonl") == analytics
    assert again.summary.events == 0
