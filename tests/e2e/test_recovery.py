"""A crash mid-stream loses nothing: the resumed run ends where an uninterrupted one does.

The run is crashed on purpose (WAYFINDER_FAULT_AFTER_EVENTS: the process exits on the
spot, no clean-up) and restarted from its bytewax snapshots. Every model has then
learned exactly the same examples as in an uninterrupted run (same count, same digest
of example ids: none twice, none lost), and the rule-driven outputs are the same.
"""

import json
import os
import subprocess

import pytest

from flows.runtime.settings import FAULT_EXIT_CODE
from tests.e2e.cli import REPO, WAYFINDER, lines, wayfinder

pytestmark = pytest.mark.e2e


def rule_driven(out) -> dict[str, list[bytes]]:
    journeys = [line for line in lines(out / "journeys.jsonl") if b'"journey"' in line]
    return {
        "journeys": sorted(journeys),
        "audiences": sorted(lines(out / "audiences.jsonl")),
        "dlq": sorted(lines(out / "dlq.jsonl")),
    }


def crash_and_resume(source: list[str], tmp_path, after_events: int):
    """Run `wayfinder run SOURCE` uninterrupted, and again crashed after `after_events`
    events then resumed from its snapshots; check that every model learned the same
    examples (count and digest) and return both output folders and the model records."""
    straight = tmp_path / "straight"
    wayfinder("run", *source, "--out", str(straight), "--no-progress")
    crashed, recovery = tmp_path / "crashed", tmp_path / "recovery"
    args = ["run", *source, "--out", str(crashed), "--no-progress"]
    args += ["--recovery-dir", str(recovery), "--snapshot-interval", "0.05"]
    done = subprocess.run(
        [WAYFINDER, *args],
        env={**os.environ, "WAYFINDER_FAULT_AFTER_EVENTS": str(after_events)},
        cwd=REPO,
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == FAULT_EXIT_CODE, done.stderr[-2000:]
    assert not (crashed / "models.json").exists()  # it really died mid-stream
    wayfinder(*args)
    expected = json.loads((straight / "models.json").read_text())
    resumed = json.loads((crashed / "models.json").read_text())
    for model, record in expected.items():
        assert resumed[model]["examples"] == record["examples"], model
        assert resumed[model]["example_digest"] == record["example_digest"], model
    return straight, crashed, expected


def test_crash_and_resume_learns_every_example_exactly_once(tmp_path):
    events = tmp_path / "events.jsonl"
    wayfinder(
        "simulate", "--customers", "300", "--hours", "72", "--seed", "4", "--out", str(events)
    )
    total = sum(1 for line in events.open("rb") if line.strip())
    straight, crashed, expected = crash_and_resume(["--events", str(events)], tmp_path, total // 2)
    assert expected["next_step"]["examples"] > 1000 and expected["intent"]["examples"] > 10
    assert rule_driven(crashed) == rule_driven(straight)


def test_crash_in_the_closed_loop_learns_every_outcome_exactly_once(tmp_path):
    """The simulator's customers react to actions; their outcomes teach the response
    model. A crash mid-run and a resume still teach it every outcome once."""
    sim = ["--customers", "300", "--hours", "72", "--seed", "4"]
    _straight, crashed, expected = crash_and_resume(sim, tmp_path, 15000)
    assert expected["propensity"]["examples"] > 50
    # The example log and the decisions' inputs resumed with the rest: every decision
    # of the resumed run re-runs the same with the model versions it names.
    report = tmp_path / "rerun.json"
    wayfinder("rerun", "--all", "--out", str(crashed), "--json", str(report))
    rerun = json.loads(report.read_text())
    assert rerun["identical"] == rerun["decisions"] == len(lines(crashed / "decisions.jsonl"))
