"""A recovery folder shared by a cluster's processes, and a run that crashed before its
first snapshot: what a resumed Kafka flow needs to know to repeat what was published."""

import subprocess
import sys
from pathlib import Path

import pytest

from flows.dataflow.kafka import this_process
from flows.runtime.recovery_store import (
    earlier_start,
    forget_start,
    hold,
    release,
)


def test_a_crash_before_the_first_snapshot_leaves_the_start_for_the_run_after_it(tmp_path):
    folder = tmp_path / "recovery"
    assert earlier_start(folder, 100.0) is None  # the first run: it records its start
    assert earlier_start(folder, 200.0) == 100.0  # the run after a crash reads it back
    assert earlier_start(folder, 300.0) == 100.0  # ... and so does a process beside it
    forget_start(folder)  # snapshots say more from now on
    assert earlier_start(folder, 400.0) is None
    assert not folder.exists()  # beside the folder: a new folder still looks new


def test_each_process_of_a_cluster_holds_the_shared_folder_for_itself(tmp_path):
    folder = tmp_path / "recovery"
    hold(folder, 0)
    hold(folder.with_name("recovery"), 0)  # held already by this process: nothing to do
    try:
        assert (tmp_path / "recovery.process-0.lock").exists()
        assert not (tmp_path / "recovery.lock").exists()
    finally:
        release(folder)


def _hold_elsewhere(folder: Path, process: int) -> subprocess.CompletedProcess[str]:
    """Another process holding the folder as process `process` of a cluster."""
    code = (
        "import sys; from pathlib import Path; from flows.runtime.recovery_store import hold; "
        "hold(Path(sys.argv[1]), int(sys.argv[2]))"
    )
    command = [sys.executable, "-c", code, str(folder), str(process)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_a_second_process_with_the_same_id_is_refused_one_with_another_is_not(tmp_path):
    folder = tmp_path / "recovery"
    hold(folder, 1)
    try:
        same = _hold_elsewhere(folder, 1)
        assert same.returncode != 0 and "is in use by another run" in same.stderr
        other = _hold_elsewhere(folder, 0)
        assert other.returncode == 0, other.stderr
    finally:
        release(folder)


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["-r", "rec"], {}, (Path("rec"), None, 1, 1)),
        (["-r", "rec", "-w", "2"], {}, (Path("rec"), None, 1, 2)),
        (["-r", "rec", "-i", "1", "-a", "h:1;h:2"], {}, (Path("rec"), 1, 2, 1)),
        (["-i", "0", "-a", "h:1"], {}, (None, None, 1, 1)),  # a cluster of one: alone
        (
            [],
            {"BYTEWAX_RECOVERY_DIRECTORY": "rec", "BYTEWAX_PROCESS_ID": "1"}
            | {"BYTEWAX_ADDRESSES": "h:1;h:2", "BYTEWAX_WORKERS_PER_PROCESS": "3"},
            (Path("rec"), 1, 2, 3),
        ),
        (  # the Helm chart's: a pod's ordinal and a host file
            ["-r", "rec"],
            {"BYTEWAX_POD_NAME": "wf-2", "BYTEWAX_STATEFULSET_NAME": "wf", "HOSTS": "a\nb\nc\n"},
            (Path("rec"), 2, 3, 1),
        ),
    ],
)
def test_the_process_knows_whether_it_is_one_of_a_cluster(tmp_path, argv, env, expected):
    env = dict(env)
    if "HOSTS" in env:
        hosts = tmp_path / "hosts"
        hosts.write_text(env.pop("HOSTS"))
        env["BYTEWAX_HOSTFILE_PATH"] = str(hosts)
    assert this_process(["flows.dataflow.kafka:flow", *argv], env) == expected
