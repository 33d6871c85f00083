"""`kill -9` at random moments loses nothing: seeded trials of the embedded run.

Each trial runs `wayfinder run` on the simulator's closed loop as a user does, with a
recovery folder, and kills the whole process group with SIGKILL at a random moment of
its processing (once its decisions file holds a share, drawn from a seeded generator,
of the uninterrupted run's: a moment that does not depend on this machine's speed or
load); then it resumes from the snapshots, on one worker or two, until the run ends. The resumed run
must end where the uninterrupted one does: every output byte-identical (sorted), every
model having learned the same examples exactly once, and every customer's final
context in the recovery store the same bytes.

The cold tier is on, for customers idle an hour of event time: in a simulated day most
leave memory and come back, some many times, so kills fall between their moves too.
"""

import os
import pickle
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from operators.sealing import SECRET_BYTES
from state.context import from_snapshot, to_snapshot
from tests.e2e.cli import REPO, WAYFINDER, wayfinder
from tests.e2e.test_recovery import models_of
from tests.flow_helpers import comparable_outputs

pytestmark = [pytest.mark.e2e, pytest.mark.recovery]

#: The trials' seed (a failure names its trial; rerun with the same seed to see it again).
SEED = 20261201
# Six kills prove the point in the suite; `make soak` repeats them.
TRIALS = 6
SIMULATION = ["--customers", "150", "--hours", "24", "--seed", "8"]
#: The cold tier on, with a small hot set: an hour idle, or 40 others in memory seen more
#: recently, and a customer leaves memory.
COLD = {**os.environ, "WAYFINDER_COLD_AFTER": "1h", "WAYFINDER_HOT_MAX": "40"}


def final_contexts(recovery: Path) -> dict[str, bytes]:
    """Each customer's last snapshot in a bytewax recovery folder (erased: none), with
    the customer's key left out (every run makes its customers' keys anew; a resumed run
    keeps those of its snapshots)."""
    return {key: _keyless(change) for key, change in _latest(recovery).items()}


def final_keys(recovery: Path) -> dict[str, bytes]:
    """Each customer's key in their last snapshot, by state key (none made: left out)."""
    contexts = (
        (key, from_snapshot(pickle.loads(change))) for key, change in _latest(recovery).items()
    )
    return {key: ctx.secret for key, ctx in contexts if ctx.secret}


def _latest(recovery: Path) -> dict[str, bytes]:
    """Each customer's last snapshot row (erased: none), as bytewax pickled it."""
    latest: dict[str, tuple[int, bytes | None]] = {}
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows = db.execute(
                "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id LIKE ?",
                ("%.customer",),
            ).fetchall()
        for key, epoch, change in rows:
            if key not in latest or epoch > latest[key][0]:
                latest[key] = (epoch, change)
    return {key: change for key, (_epoch, change) in latest.items() if change is not None}


def _keyless(change: bytes) -> bytes:
    """A context without the keys each run makes anew (the customer's, the device's for
    its forwards, and those its devices handed over): how many there are stays."""
    context = from_snapshot(pickle.loads(change))
    handed = [key for held in context.device_keys.values() for key in held]
    keys = [context.secret, context.forward_key, *handed]
    assert all(len(key) in (0, SECRET_BYTES) for key in keys)
    devices = {device: [b""] * len(held) for device, held in context.device_keys.items()}
    return to_snapshot(
        msgspec.structs.replace(
            context,
            secret=b"",
            forward_key=b"x" if context.forward_key else b"",
            device_keys=devices,
        )
    )


def _run(out: Path, recovery: Path, workers: int) -> subprocess.Popen[bytes]:
    args = ["run", *SIMULATION, "--out", str(out), "--no-progress", "--workers", str(workers)]
    args += ["--recovery-dir", str(recovery), "--snapshot-interval", "0.05"]
    return subprocess.Popen(
        [WAYFINDER, *args],
        cwd=REPO,
        env=COLD,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _decided(flow: subprocess.Popen[bytes], decisions: Path, size: float) -> bool:
    """Wait until the run's decisions file (flushed at every snapshot) holds `size` bytes
    (True), or the run ends (False)."""
    while flow.poll() is None:
        if decisions.exists() and decisions.stat().st_size >= size:
            return True
        time.sleep(0.005)
    return False


def test_kill_9_at_random_moments_then_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    straight, straight_recovery = tmp_path / "straight", tmp_path / "straight-recovery"
    wayfinder(
        "run",
        *SIMULATION,
        "--out",
        str(straight),
        "--no-progress",
        "--recovery-dir",
        str(straight_recovery),
        "--snapshot-interval",
        "0.05",
        env=COLD,
    )
    decided = (straight / "decisions.jsonl").stat().st_size
    want, want_models = comparable_outputs(straight), models_of(straight)
    want_contexts = final_contexts(straight_recovery)
    assert want_contexts and all(want.values())

    trials = random.Random(SEED)
    killed_mid_run = 0
    for trial in range(TRIALS):
        out, recovery = tmp_path / f"trial-{trial}", tmp_path / f"recovery-{trial}"
        crash_workers, resume_workers = trials.choice([(1, 2), (2, 1), (1, 1), (2, 2)])
        share = trials.uniform(0.1, 0.9)
        flow = _run(out, recovery, crash_workers)
        if _decided(flow, out / "decisions.jsonl", share * decided):
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait(timeout=30)
            killed_mid_run += not (out / "models.json").exists()
        resuming = time.monotonic()
        resumed = _run(out, recovery, resume_workers)
        _, err = resumed.communicate(timeout=300)
        print(  # the figures of the closing note: `pytest -s` shows them
            f"trial {trial}: killed at {share:.0%} of the decisions on {crash_workers} "
            f"workers, resumed on {resume_workers} in {time.monotonic() - resuming:.2f} s"
        )
        assert resumed.returncode == 0, f"trial {trial}: {err.decode()[-2000:]}"

        where = (
            f"trial {trial} (killed at {share:.0%} of the decisions on {crash_workers} workers, "
            f"resumed on {resume_workers})"
        )
        got = comparable_outputs(out)
        for name, lines in want.items():
            assert got[name] == lines, f"{name} differs in {where}"
        got_models = models_of(out)
        for model, record in want_models.items():
            assert got_models[model]["examples"] == record["examples"], f"{model}, {where}"
            assert got_models[model]["example_digest"] == record["example_digest"], where
        assert final_contexts(recovery) == want_contexts, f"contexts differ in {where}"
        cold = recovery.with_name(recovery.name + ".cold")
        assert (cold / "CURRENT").exists(), f"no cold tier in {where}"
    assert killed_mid_run >= TRIALS * 0.7, f"only {killed_mid_run} kills fell mid-run"
