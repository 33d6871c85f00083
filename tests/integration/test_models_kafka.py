"""Models on Kafka: the numbered example log is the truth, and a replica follows it.

The learner step numbers and publishes each example once (`models.examples`); the
process's replica learns them in number order and every decision records the version
it asked, so `wayfinder rerun --kafka` rebuilds that version from the log and decides
the same. Across a crash and a resume from bytewax snapshots, the examples the replay
emits again are not published twice: the log ends with the examples of an
uninterrupted run, each once, numbered without a gap.
"""

import re
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from flows.dataflow.kafka import kafka_flow
from flows.dataflow.replica import ModelReplica, live_replicas
from flows.runtime.settings import FAULT_EXIT_CODE, KafkaSettings
from operators.models import WARM_UP, ModelSet
from operators.rerun import parse_version
from schemas.decision import Decision
from schemas.learning import LearnedExamples
from tests.conftest import fresh_topics, kafka_env
from tests.e2e.cli import run, wayfinder
from tests.flow_helpers import cluster_main_threads
from tests.helpers import default_playbook
from tests.kafka_io import logged, produce, read_all

pytestmark = pytest.mark.integration

SIM = ["--customers", "300", "--hours", "24", "--seed", "11"]


def example_log(settings: KafkaSettings) -> dict[str, dict[int, list[str]]]:
    """{model: {number: [example id, once per time the number was published]}}."""
    log: dict[str, dict[int, list[str]]] = {}
    for _key, value in read_all(settings, "models.examples"):
        batch = msgspec.json.decode(value, type=LearnedExamples)
        for number, example in enumerate(batch.examples, start=batch.first):
            log.setdefault(example.model, {}).setdefault(number, []).append(example.example_id)
    return log


def counts_of(log: dict[str, dict[int, list[str]]]) -> dict[str, int]:
    """Each model's examples, checked: numbered 1..N, each number and each id once."""
    counts = {}
    for model, numbered in log.items():
        assert sorted(numbered) == list(range(1, len(numbered) + 1)), f"{model}: a gap"
        twice = {n: ids for n, ids in numbered.items() if len(ids) > 1}
        assert not twice, f"{model}: numbers published twice {list(twice.items())[:3]}"
        ids = Counter(ids[0] for ids in numbered.values())
        assert ids.most_common(1)[0][1] == 1, f"{model}: an example published twice"
        counts[model] = len(numbered)
    return counts


def decisions_of(settings: KafkaSettings) -> list[Decision]:
    return [msgspec.json.decode(v, type=Decision) for _, v in read_all(settings, "decisions")]


def rerun_all(settings: KafkaSettings, report: Path) -> dict[str, object]:
    """`wayfinder rerun --kafka --all`: every recorded decision, decided again."""
    wayfinder("rerun", "--kafka", "--all", "--json", str(report), env=kafka_env(settings))
    result: dict[str, object] = msgspec.json.decode(report.read_bytes())
    return result


def replica_of(models: ModelSet) -> ModelReplica:
    return next(r for r in live_replicas() if r.models is models)


def test_every_kafka_decision_reruns_the_same_with_the_model_versions_it_recorded(kafka, tmp_path):
    wayfinder("simulate", "--kafka", *SIM, env=kafka_env(kafka))
    models = ModelSet(default_playbook())
    flow = kafka_flow(kafka, models=models)  # its replica caught up (an empty log) and follows
    started = time.perf_counter()
    cluster_main_threads(2)(flow)  # two workers of one process decide at once
    seconds = time.perf_counter() - started

    counts = counts_of(example_log(kafka))
    assert counts["next_step"] > 5000 and counts["intent"] > WARM_UP
    # The replica applied every example of the log, in number order.
    replica = replica_of(models)
    assert replica.wait_for(len(read_all(kafka, "models.examples")), 10)
    assert replica.versions() == {"intent": 0, "propensity": 0, "next_step": 0, **counts}

    decisions = decisions_of(kafka)
    versions = [parse_version(d.model_version) for d in decisions]
    assert all(v[m] <= counts.get(m, 0) for v in versions for m in v)  # none ahead of the log
    advanced = sorted({v["next_step"] for v in versions})
    assert len(advanced) > 5  # decided with models that learned as the run went
    assert sum(v["intent"] >= WARM_UP for v in versions) > len(decisions) // 4

    # A copy of a decision planted by another producer: skipped, not compared with.
    planted = msgspec.structs.replace(decisions[0], outcome="holdout", holdout=True)
    produce(kafka, "decisions", [(b"planted", msgspec.json.encode(planted))])
    report = rerun_all(kafka, tmp_path / "rerun.json")
    assert report["decisions"] == len({d.decision_id for d in decisions}) > 500
    assert report["identical"] == report["decisions"], report["differ"]
    assert report["unsigned"] == {"decisions": 1}
    lag = replica.lag_summary()
    print(f"\n1 process, 2 workers: {len(decisions)} decisions in {seconds:.1f} s; lag {lag}")


@pytest.mark.recovery
def test_a_crash_and_a_resume_on_kafka_publish_every_example_once(kafka, tmp_path):
    """Crashed mid-stream (no clean-up) and resumed from its snapshots: the replay emits
    again examples the crashed run had published after its last snapshot; the log ends
    with the examples of an uninterrupted run, each once, and every decision re-runs.
    (Two Kafka runs of this input learn the same examples: it is read in event-time
    order, and with no responses to actions in it, every example comes from its events
    and journeys, none from a choice the models made.)"""
    straight = _other_topics(kafka)
    wayfinder("simulate", "--kafka", *SIM, env=kafka_env(straight))
    wayfinder("run", "--kafka", "--no-progress", env=kafka_env(straight))
    expected = example_log(straight)

    env = kafka_env(kafka)
    wayfinder("simulate", "--kafka", *SIM, env=env)
    service = ["run", "--kafka", "--no-progress", "--recovery-dir", str(tmp_path / "recovery")]
    crashed = run(
        logged("flows.cli.main", *service, "--snapshot-interval", "0.3"),
        env={**env, "WAYFINDER_FAULT_AFTER_EVENTS": "9000"},
    )
    assert crashed.returncode == FAULT_EXIT_CODE, crashed.stderr[-3000:]
    before = sum(len(numbered) for numbered in example_log(kafka).values())
    resumed = run(logged("flows.cli.main", *service), env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stderr
    # Caught up before deciding: what the crashed run had learned by its last snapshot,
    # and the rest held until the replay learns it again.
    caught_up = re.search(
        r"(\d+) examples applied.*?(?:; (\d+) examples after the snapshot.*)?$", said, re.M
    )
    assert caught_up is not None, said[-3000:]
    applied, held = (int(n or 0) for n in caught_up.groups())
    assert applied + held == before, caught_up.group(0)
    # What the replay emitted again and the log held (when the crash left any after the
    # last snapshot, which is most runs) was not published again:
    dropped = [line for line in said.splitlines() if "not published again" in line]
    print("\n" + "\n".join(dropped or ["nothing published after the last snapshot"]))

    log = example_log(kafka)
    assert counts_of(log) == counts_of(expected)
    for model, numbered in expected.items():
        assert sorted(ids[0] for ids in log[model].values()) == sorted(
            ids[0] for ids in numbered.values()
        ), model
    report = rerun_all(kafka, tmp_path / "rerun.json")
    assert report["identical"] == report["decisions"], report["differ"]
    # A decision made again by the replay was made with the models it was made with
    # before the crash, so it was sent again the same.
    contents: dict[str, set[bytes]] = {}
    for _key, value in read_all(kafka, "decisions"):
        contents.setdefault(msgspec.json.decode(value, type=Decision).decision_id, set()).add(value)
    assert all(len(copies) == 1 for copies in contents.values())


def _other_topics(settings: KafkaSettings) -> KafkaSettings:
    """The same cluster with topics of their own (for a second run to compare with)."""
    return fresh_topics(settings.bootstrap_servers, "test-straight", settings.partitions)
