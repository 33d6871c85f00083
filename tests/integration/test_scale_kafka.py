"""Scale-out: a 2-process bytewax cluster on the local Kafka decides as one process does,
even with the process that reads the topic stopped a while.

The flow runs as deployed (`python -m bytewax.run flows.dataflow.kafka:flow`, a
service tailing its topic, stopped with SIGTERM once its outputs stop growing), once as
one process and once as a cluster of two (`-i/-a`), on the same simulated input in an
events topic of 4 partitions. Each process keeps its own replica of the models,
following the numbered example log: both replicas apply every example (their last
versions are the log's counts), the rule-driven outputs of the two runs are the same
sets, and every decision of the cluster re-runs identically with `wayfinder rerun`
from the versions it recorded. (Rule-driven within the input's span of event time:
once a service has caught up, its watermark follows the wall clock, and the timers
that fall due only then, months on, fire within a few minutes, whenever each
customer's timer was set to look again; how many have fired by the stop depends on
how long each run went on.) The processes' INFO lines (the replica's catch-up and
its last versions, with the lag it measured) are read from their stderr.
"""

import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, TopicPartition

from flows.lab.simulator import SimulationConfig, simulate
from flows.runtime.settings import KafkaSettings
from operators.rerun import parse_version
from schemas.action import Action
from schemas.deadletter import DeadLetter
from schemas.decision import Decision
from tests.conftest import fresh_topics, kafka_env
from tests.e2e.cli import REPO, wayfinder
from tests.integration.test_loop_kafka import keyed
from tests.integration.test_models_kafka import counts_of, example_log
from tests.kafka_io import free_ports, logged, produce, read_all

pytestmark = [pytest.mark.integration, pytest.mark.scale]

PARTITIONS = 4
#: Seconds the cluster's reading process is stopped for: longer than a process that
#: reads nothing once took for the input's end (`flows.dataflow.clock._QUIET`).
PAUSE = 3.0
SIM = SimulationConfig(customers=300, hours=24, seed=11)
_STOPS = re.compile(r"models replica stops with (?P<versions>\S+@\d+(?: \S+@\d+)*) \(")
_SUMMARY = re.compile(r"wayfinder on Kafka \S+: (?P<json>\{.*\})$", re.MULTILINE)


@dataclass
class Process:
    """What one process of a run said on stderr."""

    stderr: str

    @property
    def last_versions(self) -> dict[str, int]:
        found = _STOPS.search(self.stderr)
        assert found is not None, self.stderr[-3000:]
        return parse_version(found["versions"])

    @property
    def summary(self) -> dict[str, Any]:
        """The run summary it printed at exit."""
        found = _SUMMARY.search(self.stderr)
        assert found is not None, self.stderr[-3000:]
        summary: dict[str, Any] = json.loads(found["json"])
        return summary


def run_cluster(
    settings: KafkaSettings, processes: int, logs: Path, *, pause: float = 0.0
) -> tuple[list[Process], float]:
    """`python -m bytewax.run flows.dataflow.kafka:flow` as a service (tailing the
    topic), as one process or as a cluster of `processes` on this machine (`-i N -a
    ADDRESSES`); stopped as an orchestrator stops it (SIGTERM to each) once its outputs
    have stopped growing. With `pause`, the first process (the one that reads the
    topic) is stopped that long (SIGSTOP) once the flow has begun to decide, as a busy
    machine starves a process. What each process said, and the seconds from the start
    to its last output."""
    env = {**kafka_env(settings), "WAYFINDER_KAFKA_TAIL": "true"}
    cluster: list[str] = []
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))
        cluster = ["-a", addresses]
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    started = time.monotonic()
    try:
        for i in range(processes):
            err = logs / f"{settings.topic_prefix}{i}.stderr"
            args = ["flows.dataflow.kafka:flow", *(["-i", str(i), *cluster] if cluster else [])]
            with err.open("wb") as stderr:
                flow = subprocess.Popen(
                    logged("bytewax.run", *args),
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            running.append((flow, err))
        last_output = _until_quiet(settings, [flow for flow, _ in running], pause) - started
        for flow, _err in running:
            flow.send_signal(signal.SIGTERM)
        for flow, _err in running:
            flow.wait(timeout=60)
    finally:
        for flow, _err in running:
            if flow.poll() is None:
                flow.kill()
    said = []
    for flow, err in running:
        text = err.read_text()
        assert flow.returncode == 0, text[-3000:]
        said.append(Process(text))
    return said, last_output


#: Outputs unchanged this long (seconds) after the flow has decided and learned: done.
QUIET = 4.0


def _until_quiet(
    settings: KafkaSettings, flows: list[subprocess.Popen[bytes]], pause: float = 0.0
) -> float:
    """Wait until the flow's outputs have stopped growing; when they last grew. With
    `pause`: the first process stopped that long once the flow has begun to decide."""
    names = [settings.topic(t) for t in ("events", "decisions", "journeys", "models.examples")]
    consumer = KafkaConsumer(**settings.kafka_python_config())
    try:
        parts = [TopicPartition(n, p) for n in names for p in consumer.partitions_for_topic(n)]
        seen: dict[TopicPartition, int] = {}
        changed = time.monotonic()
        deadline = changed + 180
        while time.monotonic() < deadline:
            assert all(flow.poll() is None for flow in flows), "a process of the flow ended"
            ends = consumer.end_offsets(parts)
            now = time.monotonic()
            if ends != seen:
                seen, changed = ends, now
            decided = all(ends[TopicPartition(n, 0)] > 0 for n in names[1:])
            if decided and pause > 0:
                flows[0].send_signal(signal.SIGSTOP)
                time.sleep(pause)
                flows[0].send_signal(signal.SIGCONT)
                pause, changed = 0.0, time.monotonic()
                continue
            if decided and now - changed >= QUIET:
                return changed
            time.sleep(0.25)
        raise AssertionError(f"the flow's outputs were still growing after 180 s: {seen}")
    finally:
        consumer.close()


def rule_driven(settings: KafkaSettings, until: datetime) -> dict[str, set[str]]:
    """What the rules alone decide, up to `until` (event time): priority-agent decisions
    and actions (stuck transfers), journey transitions, those on timers included (not
    intent changes: a model's), dead letters."""
    decisions = [msgspec.json.decode(v, type=Decision) for _, v in read_all(settings, "decisions")]
    priority = {
        d.decision_id
        for d in decisions
        if d.created_at <= until and any(c.action == "priority_agent" for c in d.candidates)
    }
    actions = set()
    for name in ("chat", "call_centre"):
        for _, value in read_all(settings, f"actions.{name}"):
            action = msgspec.json.decode(value, type=Action)
            if action.action == "priority_agent" and action.created_at <= until:
                actions.add(action.action_id)
    transitions = {
        value.decode()
        for _, value in read_all(settings, "journeys")
        if json.loads(value)["kind"] != "intent_changed"
        and datetime.fromisoformat(json.loads(value)["at"]) <= until
    }
    dead = {msgspec.json.decode(v, type=DeadLetter).raw.hex() for _, v in read_all(settings, "dlq")}
    return {
        "priority decisions": priority,
        "priority actions": actions,
        "transitions": transitions,
        "dead letters": dead,
    }


def test_two_processes_decide_with_models_that_learned_every_example(bootstrap_servers, tmp_path):
    records = [raw for _ts, raw in simulate(SIM)]
    messages = [keyed(raw) for raw in records]  # as `wayfinder simulate --kafka` keys them
    one, two = (
        fresh_topics(bootstrap_servers, f"test-{name}", PARTITIONS, key_vault=tmp_path / name)
        for name in ("1p", "2p")
    )
    produce(one, "events", messages)
    produce(two, "events", messages)

    (alone,), one_seconds = run_cluster(one, 1, tmp_path)
    # The process that reads the topic stopped a while: a pause is not the input's end.
    pair, two_seconds = run_cluster(two, 2, tmp_path, pause=PAUSE)

    # Each process's replica applied every example of the log, wherever it arose.
    counts = counts_of(example_log(two))
    assert counts["next_step"] > 5000 and counts["intent"] > 30
    for process in pair:
        assert process.last_versions == {"intent": 0, "propensity": 0, "next_step": 0, **counts}
        assert "models replica caught up" in process.stderr
        # ... and the cluster shared the work: each process folded customers and decided.
        assert process.summary["customers"] > 50 and sum(process.summary["decisions"].values())
    alone_counts = counts_of(example_log(one))
    assert alone.last_versions == {"intent": 0, "propensity": 0, "next_step": 0, **alone_counts}

    # What the rules decide is the same on one process and on two.
    until = datetime.fromtimestamp(max(ts for ts, _raw in simulate(SIM)), UTC)
    alone_out, pair_out = rule_driven(one, until), rule_driven(two, until)
    for name, expected in alone_out.items():
        assert pair_out[name] == expected, (name, len(pair_out[name] ^ expected))
    assert alone_out["priority actions"] and alone_out["transitions"]
    assert {json.loads(t)["kind"] for t in alone_out["transitions"]} >= {"stalled", "merged"}

    # Every decision of the cluster re-runs the same from the versions it recorded.
    report = tmp_path / "rerun.json"
    wayfinder("rerun", "--kafka", "--all", "--json", str(report), env=kafka_env(two))
    rerun = json.loads(report.read_text())
    decisions = {json.loads(value)["decision_id"] for _, value in read_all(two, "decisions")}
    assert rerun["decisions"] == len(decisions) > 500
    assert rerun["identical"] == rerun["decisions"], rerun["differ"][:3]

    print(
        f"\n1 process: {one_seconds:.1f} s to its last output, lag {_lag(alone.stderr)}"
        f"\n2 processes: {two_seconds:.1f} s, {len(decisions)} decisions, customers "
        f"{[p.summary['customers'] for p in pair]}, lag {[_lag(p.stderr) for p in pair]}"
    )


def _lag(stderr: str) -> str:
    found = re.search(r"lag from publication to applied: (.*)$", stderr, re.MULTILINE)
    return found.group(1) if found else "?"
