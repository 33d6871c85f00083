"""The cold tier on the local Kafka, across a change of the cluster's shape.

bytewax routes a customer to a worker by the count of workers, and each process of a
cluster keeps a tier of its own: a resume by another shape must not lose the customers a
tier holds. The way to change shape is the one the refusal names: a bounded run brings
every cold customer back into memory at its end (into bytewax's snapshots), and a
cluster of another shape resumes from there. Its processes start at once and each counts
what the old tier holds (nobody); they must not trip over one another while they do.
Before that, while the tier holds customers, a resume by another shape, or one that
looks for the tier (or the key vault) elsewhere, is refused in one sentence by every
process.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from state.context import from_snapshot
from tests.conftest import fresh_topics, kafka_env
from tests.e2e.cli import REPO, wayfinder
from tests.e2e.test_kill_trials import final_contexts
from tests.integration.test_kill_trials_kafka import COLD, SIMULATION
from tests.integration.test_loop_kafka import keyed
from tests.integration.test_scale_kafka import Process, _until_quiet
from tests.kafka_io import free_ports, logged, produce

pytestmark = [pytest.mark.integration, pytest.mark.recovery, pytest.mark.scale]


def _start(
    env: dict[str, str], recovery: Path, logs: Path, processes: int
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """The flow as deployed (`bytewax.run`), as one process or a cluster whose processes
    start together; each with its stderr in a file."""
    cluster = []
    if processes > 1:
        cluster = ["-a", ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))]
    running = []
    for i in range(processes):
        args = [*(["-i", str(i), *cluster] if cluster else []), "-r", str(recovery), "-s", "1"]
        log = logs / f"p{i}of{processes}.{time.monotonic_ns()}.stderr"
        with log.open("wb") as err:
            command = logged("bytewax.run", "flows.dataflow.kafka:flow", *args, "-b", "0")
            running.append((subprocess.Popen(command, env=env, cwd=REPO, stderr=err), log))
    return running


def _ended(running: list[tuple[subprocess.Popen[bytes], Path]], code: int = 0) -> list[Process]:
    """What each process said, once it ended with `code`."""
    said = []
    for flow, log in running:
        ended = flow.wait(timeout=300)
        text = log.read_text(errors="replace")
        assert ended == code, text[-3000:]
        said.append(Process(text))
    return said


def _bounded(env: dict[str, str], recovery: Path, logs: Path, processes: int) -> list[Process]:
    """A bounded run, which ends well."""
    return _ended(_start(env, recovery, logs, processes))


def _folded(recovery: Path) -> dict[str, tuple[int, list[bytes], bool]]:
    """Each context in the snapshots, by its customer (or device): events folded, the
    digests of its recent interactions' ids, and whether it is a device that handed its history
    over to the customer who logged in on it."""
    contexts = (from_snapshot(change) for change in final_contexts(recovery).values())
    return {
        c.key: (c.events, c.interactions.digests(), c.alias_to is not None)
        for c in contexts
        if c.key
    }


def test_a_cluster_of_another_shape_resumes_from_a_drained_tier_and_loses_no_customer(
    bootstrap_servers, tmp_path
):
    events = tmp_path / "events.jsonl"
    wayfinder("simulate", *SIMULATION, "--out", str(events))
    messages = [keyed(line) for line in events.read_bytes().splitlines()]
    half = len(messages) // 2
    keys = tmp_path / "keys"
    settings = fresh_topics(bootstrap_servers, "test-shape", key_vault=keys)
    env = {**kafka_env(settings), **COLD}
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "2"], check=True)
    produce(settings, "events", messages[:half])

    # A service alone, stopped as an orchestrator stops it: customers stay in its tier.
    (service,) = running = _start({**env, "WAYFINDER_KAFKA_TAIL": "true"}, recovery, tmp_path, 1)
    _until_quiet(settings, [service[0]])
    service[0].send_signal(signal.SIGTERM)
    (alone,) = _ended(running)
    assert alone.summary["cold_moves"].get("left", 0) > 10, alone.summary
    tier = tmp_path / "recovery.cold"
    assert (tier / "CURRENT").is_file()
    elsewhere = {**env, "WAYFINDER_COLD_DIR": str(tmp_path / "other")}
    vault_elsewhere = {**env, "WAYFINDER_KEY_VAULT": str(tmp_path / "other-keys")}
    for refused, processes, said in (
        (env, 2, "by a cluster of 2x1 (processes x workers)"),
        (elsewhere, 1, f"the cold tier the run resumes from is at {tier} ("),
        (vault_elsewhere, 1, f"the key vault of the runs this one resumes from is at {keys},"),
    ):
        for process in _ended(_start(refused, recovery, tmp_path, processes), code=2):
            assert said in process.stderr and "Traceback" not in process.stderr, process.stderr

    # The way to change shape: a bounded run brings everyone back into memory at its end.
    (alone,) = _bounded(env, recovery, tmp_path, processes=1)
    moves = alone.summary["cold_moves"]
    assert moves.get("returned", 0) > 10, alone.summary
    # (their contexts read from the tier together, a batch's at a time, ahead of their step)
    assert moves.get("returned read ahead", 0) >= 0.9 * moves["returned"], alone.summary
    before = _folded(recovery)

    produce(settings, "events", messages[half:])
    _bounded(env, recovery, tmp_path, processes=2)
    # (Whether anyone left memory in so short a run depends on how fast the cluster
    # read; the cluster's kill trial shows each process's tier in use.)
    assert not tier.exists()  # (it held nobody: removed, once)
    opened = [p.name for p in tmp_path.glob("recovery.cold.*") if (p / "CURRENT").is_file()]
    assert sorted(opened) == ["recovery.cold.p0of2x1", "recovery.cold.p1of2x1"]

    after = _folded(recovery)
    later = {key.decode() for key, _ in messages[half:] if key is not None}
    untouched = {k for k in before if k not in later and k.removeprefix("anon:") not in later}
    assert untouched, "every customer came back in the second half"
    missing = sorted(set(before) - set(after))
    assert not missing, f"{len(missing)} customers lost in the change of shape: {missing[:3]}"
    changed = sorted(k for k in untouched if after[k] != before[k])
    assert not changed, f"customers without a new event changed: {changed[:3]}"
    for key, (folded, _recent, _handed) in before.items():
        assert after[key][0] >= folded or after[key][2], key
    assert len(after) > len(before)  # (and the second half's new ones)
