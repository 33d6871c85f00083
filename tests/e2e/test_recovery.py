"""A crash mid-stream loses nothing: the resumed run ends where an uninterrupted one does,
even when it resumes on a different number of workers than it crashed with.

The run is crashed on purpose (WAYFINDER_FAULT_AFTER_EVENTS: the process exits on the
spot, no clean-up), so these runs are processes of their own: `wayfinder run` as a
user runs it, then again from its bytewax snapshots. Every model has then learned
exactly the same examples as in an uninterrupted run (same count, same digest of
example ids: none twice, none lost), and every output is the same, byte for byte
(sorted: the order of lines may differ with workers).
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flows.runtime.recovery_store import hold, release
from flows.runtime.settings import FAULT_EXIT_CODE
from tests.e2e.cli import REPO, WAYFINDER, lines, wayfinder, wayfinder_fails
from tests.flow_helpers import comparable_outputs

pytestmark = [pytest.mark.e2e, pytest.mark.recovery]


def models_of(out: Path) -> dict[str, Any]:
    records: dict[str, Any] = json.loads((out / "models.json").read_text())
    return records


def crash_and_resume(
    source: list[str], tmp_path: Path, after_events: int, *, crash_workers: int, resume_workers: int
) -> tuple[Path, Path]:
    """Run `wayfinder run SOURCE` uninterrupted, and again crashed after `after_events`
    input records on `crash_workers` workers, then resumed from its snapshots on
    `resume_workers`; check that the two runs wrote the same outputs, and that every
    model learned the same examples. Returns both output folders."""
    straight = tmp_path / "straight"
    wayfinder("run", *source, "--out", str(straight), "--no-progress")
    crashed, recovery = tmp_path / "crashed", tmp_path / "recovery"
    args = ["run", *source, "--out", str(crashed), "--no-progress"]
    args += ["--recovery-dir", str(recovery), "--snapshot-interval", "0.05"]
    done = subprocess.run(
        [WAYFINDER, *args, "--workers", str(crash_workers)],
        env={**os.environ, "WAYFINDER_FAULT_AFTER_EVENTS": str(after_events)},
        cwd=REPO,
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == FAULT_EXIT_CODE, done.stderr[-2000:]
    assert not (crashed / "models.json").exists()  # it really died mid-stream
    assert lines(crashed / "decisions.jsonl")  # after it had decided something
    wayfinder(*args, "--workers", str(resume_workers))

    expected, resumed = models_of(straight), models_of(crashed)
    assert sorted(resumed) == sorted(expected)
    for model, record in expected.items():
        assert resumed[model]["examples"] == record["examples"], model
        assert resumed[model]["example_digest"] == record["example_digest"], model
    want, got = comparable_outputs(straight), comparable_outputs(crashed)
    assert sorted(got) == sorted(want)
    for name, expected_lines in want.items():
        assert got[name] == expected_lines, f"{name} differs after the crash and the resume"
    return straight, crashed


def test_crash_on_one_worker_and_resume_on_two_learns_every_example_exactly_once(tmp_path):
    events = tmp_path / "events.jsonl"
    wayfinder(
        "simulate", "--customers", "300", "--hours", "72", "--seed", "4", "--out", str(events)
    )
    total = sum(1 for line in events.open("rb") if line.strip())
    straight, _crashed = crash_and_resume(
        ["--events", str(events)], tmp_path, total // 2, crash_workers=1, resume_workers=2
    )
    expected = models_of(straight)
    assert expected["next_step"]["examples"] > 1000 and expected["intent"]["examples"] > 10


def test_crash_in_the_closed_loop_on_two_workers_and_resume_on_one_learns_every_outcome_once(
    tmp_path,
):
    """The simulator's customers react to actions; their outcomes teach the response
    model. A crash mid-run and a resume on another number of workers still teach it
    every outcome once, and the customers react to the same actions."""
    sim = ["--customers", "300", "--hours", "72", "--seed", "4"]
    straight, crashed = crash_and_resume(sim, tmp_path, 15000, crash_workers=2, resume_workers=1)
    assert models_of(straight)["propensity"]["examples"] > 50
    # The example log and the decisions' inputs resumed with the rest: every decision
    # of the resumed run re-runs the same with the model versions it names.
    report = tmp_path / "rerun.json"
    wayfinder("rerun", "--all", "--out", str(crashed), "--json", str(report))
    rerun = json.loads(report.read_text())
    assert rerun["identical"] == rerun["decisions"] == len(lines(crashed / "decisions.jsonl"))


def test_a_damaged_recovery_folder_is_refused_in_one_sentence_before_anything_runs(tmp_path):
    """A partition that is not an SQLite file (truncated, overwritten), or a folder with
    files but no partition: one line naming it, exit status 2, no bytewax panic."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "part-0.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\x00" * 40)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a recovery store")
    out = ["--out", str(tmp_path / "out"), "--customers", "10", "--hours", "1", "--no-progress"]
    refusals = [(damaged, "is not a bytewax recovery partition"), (other, "no recovery partition")]
    for folder, reason in refusals:
        for args in (["run", *out, "--recovery-dir", str(folder)], ["scrub-recovery", str(folder)]):
            status, said = wayfinder_fails(*args)
            assert status == 2 and reason in said and "Traceback" not in said, said[-2000:]
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_damaged_key_vault_is_refused_in_one_sentence_on_resume(tmp_path):
    """The vault holds the only copy of the keys outside the flow: a part that does not
    open stops the start in one line, exit status 2, before the flow runs over it."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    args = ["run", "--out", str(out), "--customers", "10", "--hours", "2", "--no-progress"]
    wayfinder(*args, "--recovery-dir", str(recovery))
    damaged = next(p for p in sorted((out / "keys").iterdir()) if (p / "CURRENT").exists())
    (damaged / "CURRENT").write_text("junk\n")
    status, said = wayfinder_fails(*args, "--recovery-dir", str(recovery))
    assert status == 2 and f"{damaged.name} does not open" in said, said[-2000:]
    assert "Traceback" not in said


def test_a_recovery_folder_in_use_by_another_run_is_refused_before_anything_is_touched(
    tmp_path,
):
    """Two runs snapshotting into one folder would resume from each other's snapshots:
    while one holds it (here this test, as another process would), a run on it, with
    --overwrite too, and a scrub are refused in one line, and nothing is written."""
    recovery, out = tmp_path / "recovery", tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # an earlier run's files, which stay
    hold(recovery)
    try:
        args = ["run", "--out", str(out), "--overwrite", "--customers", "10", "--hours", "1"]
        for command in (
            [*args, "--recovery-dir", str(recovery)],
            ["scrub-recovery", str(recovery)],
        ):
            status, said = wayfinder_fails(*command)
            assert status == 2 and f"is in use by another run (process {os.getpid()})" in said, said
        assert [p.name for p in out.iterdir()] == ["summary.json"]
    finally:
        release(recovery)
    wayfinder(*args, "--no-progress", "--recovery-dir", str(recovery))  # free again
