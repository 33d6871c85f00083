"""`kill -9` at random moments of the Kafka service loses nothing and doubles nothing.

The same simulated day (its logins go round the flow's own loop on the events topic)
is put on two sets of topics with three partitions each. On the first, the service
runs uninterrupted (`wayfinder run --kafka`, a bounded run with a recovery folder). On
the second, each seeded trial starts it, kills its process group with SIGKILL once it
has published a drawn number of new decisions (0.5-3% of the day's), and resumes it from
its snapshots; the topics are the same through every trial, as in a deployment that
crashes again and again. At the end:

- no id carries two contents: a decision, input, action, transition or audience change
  the resumed run sent again is byte-identical to the first copy (the models may have
  moved on since: a published decision is repeated, not made again);
- what the rules decide is what the uninterrupted run decided: journey transitions,
  audience changes, dead letters, the decisions on every trigger but a model's;
- every example was learned once: no number with two examples, no example at two
  numbers, and the examples of the events and journeys are the uninterrupted run's;
- each customer's context folded the same events.

The single process and each process of the cluster run with the cold tier on (an
hour idle, or more than 40 in memory, and a customer leaves it), so kills fall between
customers' moves out of memory and back too.

What the models had learned by each decision is not compared: on Kafka it follows the
broker's timing even between two uninterrupted runs (test_determinism_kafka names it).
"""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from flows.runtime.settings import KafkaSettings
from operators.models import INTENT, NEXT_STEP
from operators.rerun import RerunError
from state.context import Entry, from_snapshot
from state.key_vault import VaultReader
from tests.conftest import fresh_topics, kafka_env
from tests.e2e.cli import REPO, WAYFINDER, wayfinder
from tests.e2e.test_kill_trials import final_contexts, final_keys
from tests.flow_helpers import opened_inputs
from tests.integration.test_determinism_kafka import outputs
from tests.integration.test_loop_kafka import keyed
from tests.integration.test_scale_kafka import Process
from tests.kafka_io import free_ports, logged, produce

pytestmark = [pytest.mark.integration, pytest.mark.recovery]

SEED = 20261202
# Six kills (four of the cluster) prove the point in the suite; `make soak` repeats them.
TRIALS = 6
CLUSTER_TRIALS = 4
SIMULATION = ["--customers", "120", "--hours", "24", "--seed", "9"]
COLD = {"WAYFINDER_COLD_AFTER": "1h", "WAYFINDER_HOT_MAX": "40"}


def _service(settings: KafkaSettings, recovery: Path) -> subprocess.Popen[bytes]:
    command = [WAYFINDER, "run", "--kafka", "--no-progress", "--recovery-dir", str(recovery)]
    return subprocess.Popen(
        [*command, "--snapshot-interval", "0.05"],
        # Batches of 100 events: a kill can fall between any two of about sixty. The cold
        # tier on, with a small hot set: an hour idle, or 40 others in memory seen more
        # recently, and a customer leaves memory.
        env={**kafka_env(settings), "WAYFINDER_KAFKA_BATCH": "100", **COLD},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


class _Decisions:
    """The decisions on the decisions topic, read as they come: how many distinct ones."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": "kill-trials",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": "false",
                "fetch.wait.max.ms": 5,  # the broker answers at once: the kill does not lag
            }
        )
        topic = settings.topic("decisions")
        parts = self._consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self.ids: set[str] = set()

    def wait_for(self, flow: subprocess.Popen[bytes], count: int) -> bool:
        """Wait until `count` distinct decisions are on the topic (True) or the flow ends
        (False)."""
        while flow.poll() is None:
            for msg in self._consumer.consume(500, 0.005):
                value = msg.value() if msg.error() is None else None
                if value:
                    self.ids.add(json.loads(value)["decision_id"])
            if len(self.ids) >= count:
                return True
        return False

    def close(self) -> None:
        self._consumer.close()


def _written(settings: KafkaSettings) -> dict[str, set[bytes]]:
    """Each output topic's distinct records (as `outputs` reads them). A record sent
    again with other content than its first copy shows as a record the uninterrupted
    run did not write."""
    vault = settings.key_vault
    assert vault is not None

    def opened(inputs: list[bytes]) -> list[bytes]:
        """Decision inputs opened with the run's keys (each run makes its own). A copy
        sealed before a kill under a key made after the last snapshot does not open (the
        resumed run made the key again): it must have a copy that does."""
        found: list[bytes] = []
        unopened: set[str] = set()
        for value in inputs:
            try:
                found += opened_inputs([value], vault)
            except RerunError:
                unopened.add(json.loads(value)["decision_id"])
        reopened = {json.loads(value)["decision_id"] for value in found}
        assert unopened <= reopened, f"inputs no key opens: {sorted(unopened - reopened)[:3]}"
        return found

    return {topic: set(values) for topic, values in outputs(settings, opened).items()}


def _examples(batches: set[bytes]) -> dict[tuple[str, int], set[str]]:
    """Each model's example numbers and the examples published under each (a resumed
    learner may cut its batches elsewhere)."""
    numbered: dict[tuple[str, int], set[str]] = defaultdict(set)
    for value in batches:
        first, examples = json.loads(value)  # LearnedExamples, array-like
        for number, example in enumerate(examples, start=first):
            numbered[(example[0], number)].add(json.dumps(example))
    return dict(numbered)


def _the_day_twice(
    bootstrap_servers: str, name: str, tmp_path: Path
) -> tuple[KafkaSettings, KafkaSettings]:
    """The simulated day on two sets of topics: for the uninterrupted run, and for the
    trials (each with a key vault of its own)."""
    events = tmp_path / "events.jsonl"
    wayfinder("simulate", *SIMULATION, "--out", str(events))
    messages = [keyed(line) for line in events.read_bytes().splitlines()]
    topics = []
    for run in ("straight", "trials"):
        settings = fresh_topics(bootstrap_servers, name, key_vault=tmp_path / f"keys-{run}")
        produce(settings, "events", messages)
        topics.append(settings)
    return topics[0], topics[1]


def test_kill_9_at_random_moments_of_the_kafka_service_then_resume_loses_and_doubles_nothing(
    bootstrap_servers, tmp_path
):
    straight, trials = _the_day_twice(bootstrap_servers, "test-kill", tmp_path)
    straight_recovery = tmp_path / "straight-recovery"
    done = _service(straight, straight_recovery)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-3000:]
    want = _written(straight)
    assert want["decisions"] and want["journeys"] and final_contexts(straight_recovery)

    recovery = tmp_path / "recovery"
    print(f"topics: {trials.topic_prefix}* (trials), {straight.topic_prefix}* (uninterrupted)")
    draw = random.Random(SEED)
    killed = 0
    decided = _Decisions(trials)
    total = len(want["decisions"])
    for trial in range(TRIALS):
        # A kill falls when the flow has published a drawn number of new decisions (a
        # moment of its processing, whatever this machine's speed, never of its start or
        # of its replay).
        more = int(draw.uniform(0.01, 0.05) * total)
        flow = _service(trials, recovery)
        if decided.wait_for(flow, len(decided.ids) + more):
            os.killpg(flow.pid, signal.SIGKILL)
            killed += 1
        flow.wait(timeout=30)
        print(f"trial {trial}: killed after {more} new decisions, {len(decided.ids)} of {total}")
    decided.close()
    resuming = time.monotonic()
    resumed = _service(trials, recovery)
    _, err = resumed.communicate(timeout=300)
    print(f"resumed to the end in {time.monotonic() - resuming:.2f} s")
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert killed >= TRIALS * 0.7, f"only {killed} of {TRIALS} kills fell mid-run"

    _assert_lost_and_doubled_nothing(trials, recovery, want, straight_recovery)
    assert not [path.name for path in tmp_path.glob("*.started")]


def _assert_lost_and_doubled_nothing(
    trials: KafkaSettings,
    recovery: Path,
    want: dict[str, set[bytes]],
    straight_recovery: Path,
) -> None:
    """What the trials wrote against what the uninterrupted run wrote (`want`): the
    module's list, and the key vault holding each customer's key as their state does."""
    vault = VaultReader(trials.key_vault or Path())
    try:
        keys = final_keys(recovery)
        differ = [key for key, secret in keys.items() if vault.secret(key) != secret]
    finally:
        vault.close()
    assert keys and not differ, f"{len(differ)} of {len(keys)} keys are not the vault's"
    got = _written(trials)
    for topic, records in got.items():
        field = _ID_FIELDS.get(topic if not topic.startswith("actions.") else "actions")
        if field is not None:
            contents = Counter(json.loads(record)[field] for record in records)
            twice = [key for key, n in contents.items() if n > 1]
            assert not twice, f"{topic}: {len(twice)} ids carry two contents, e.g. {twice[0]}"
    for topic in ("audiences", "dlq"):
        assert got[topic] == want[topic], f"{topic}: {_difference(got[topic], want[topic])}"
    rules, want_rules = _rule_driven(got), _rule_driven(want)
    for name, expected in want_rules.items():
        assert rules[name] == expected, f"{name}: {_difference(rules[name], expected)}"

    learned = _examples(got["models.examples"])
    assert all(len(copies) == 1 for copies in learned.values()), "a number with two examples"
    ids, want_ids = _example_ids(learned), _example_ids(_examples(want["models.examples"]))
    for model, examples in ids.items():
        assert len(examples) == len(set(examples)), f"{model}: an example learned twice"
    for model in (INTENT, NEXT_STEP):  # from events and journeys (propensity: from actions)
        assert set(ids[model]) == set(want_ids[model]), model
    assert _folded(final_contexts(recovery)) == _folded(final_contexts(straight_recovery))


def _cluster(settings: KafkaSettings, recovery: Path, logs: Path) -> list[subprocess.Popen[bytes]]:
    """The service as a cluster of two processes on this machine (`bytewax.run -i/-a`),
    bounded, sharing one recovery folder (snapshots every second, bytewax's least); each
    process's stderr in a file of `logs`."""
    if not recovery.exists():
        recovery.mkdir()
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "2"], check=True)
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    env = {**kafka_env(settings), "WAYFINDER_KAFKA_BATCH": "100", **COLD}
    processes = []
    for i in range(2):
        args = ["-i", str(i), "-a", addresses, "-r", str(recovery), "-s", "1", "-b", "0"]
        log = logs / f"{settings.topic_prefix}{i}.{time.monotonic_ns()}.stderr"
        with log.open("wb") as err:
            command = logged("bytewax.run", "flows.dataflow.kafka:flow", *args)
            process = subprocess.Popen(
                command,
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        _LOGS[process.pid] = log
        processes.append(process)
    return processes


#: Where each cluster process's stderr went, by pid.
_LOGS: dict[int, Path] = {}


def _finish(cluster: list[subprocess.Popen[bytes]]) -> None:
    """Wait for a bounded cluster to end; each process ends well."""
    for process in cluster:
        code = process.wait(timeout=300)
        assert code == 0, _LOGS[process.pid].read_text(errors="replace")[-3000:]


@pytest.mark.scale
def test_kill_9_at_random_moments_of_a_two_process_cluster_then_resume_loses_and_doubles_nothing(
    bootstrap_servers, tmp_path
):
    """The same, on a cluster of two processes killed together: each process reads back
    what was published, and a kill before the folder's first snapshot is a crash too
    (the run after it starts from the beginning, and repeats what was published)."""
    straight, trials = _the_day_twice(bootstrap_servers, "test-kill2", tmp_path)
    straight_recovery = tmp_path / "straight-recovery"
    uninterrupted = _cluster(straight, straight_recovery, tmp_path)
    _finish(uninterrupted)
    for process in uninterrupted:  # each process's own tier: customers left and came back
        moves = Process(_LOGS[process.pid].read_text()).summary["cold_moves"]
        assert moves.get("left", 0) > 10 and moves.get("returned", 0) > 10, moves
    want = _written(straight)
    total = len(want["decisions"])
    # The cluster reads a backlog faster than its loop comes round (no rounds): what the
    # devices forward still reaches their customers, as on the embedded run.
    embedded = tmp_path / "embedded"
    wayfinder(
        "run", "--events", str(tmp_path / "events.jsonl"), "--out", str(embedded), "--no-progress"
    )
    with gzip.open(embedded / "models.examples.jsonl.gz") as batches:
        one = _example_ids(_examples(set(batches.read().splitlines())))
    two = _example_ids(_examples(want["models.examples"]))
    assert set(two[NEXT_STEP]) == set(one[NEXT_STEP]), "a device's events were lost"

    recovery = tmp_path / "recovery"
    print(f"topics: {trials.topic_prefix}* (trials), {straight.topic_prefix}* (uninterrupted)")
    draw = random.Random(SEED)
    decided = _Decisions(trials)
    killed = 0
    for trial in range(CLUSTER_TRIALS):
        more = int(draw.uniform(0.03, 0.18) * total)
        cluster = _cluster(trials, recovery, tmp_path)
        if decided.wait_for(cluster[0], len(decided.ids) + more):
            for process in cluster:
                os.killpg(process.pid, signal.SIGKILL)
            killed += 1
        for process in cluster:
            process.wait(timeout=30)
        print(f"trial {trial}: killed after {more} new decisions, {len(decided.ids)} of {total}")
    decided.close()
    resuming = time.monotonic()
    _finish(_cluster(trials, recovery, tmp_path))
    print(f"resumed to the end in {time.monotonic() - resuming:.2f} s")
    assert killed >= CLUSTER_TRIALS * 0.7, f"only {killed} of {CLUSTER_TRIALS} kills fell mid-run"
    _assert_lost_and_doubled_nothing(trials, recovery, want, straight_recovery)
    # Once snapshots say since when, the start written beside each folder is gone: a run
    # that ended before it knew its snapshots kept (a few seconds) leaves it, and the
    # next run, which resumes from them, forgets it.
    _finish(_cluster(trials, recovery, tmp_path))
    _finish(_cluster(straight, straight_recovery, tmp_path))
    assert not [path.name for path in tmp_path.glob("*.started")]


#: The id each output record carries, by topic.
_ID_FIELDS = {
    "decisions": "decision_id",
    "decisions.inputs": "decision_id",
    "actions": "action_id",
    "journeys": "transition_id",
    "audiences": "change_id",
}


def _rule_driven(written: dict[str, set[bytes]]) -> dict[str, set[bytes]]:
    """Journey transitions but the intent model's announcements, and the ids of the
    decisions on every trigger but those announcements."""
    return {
        "transitions": {r for r in written["journeys"] if b'"intent_changed"' not in r},
        "decisions": {
            json.loads(r)["decision_id"].encode()
            for r in written["decisions"]
            if json.loads(r)["trigger_type"] != "intent_changed"
        },
    }


def _example_ids(numbered: dict[tuple[str, int], set[str]]) -> dict[str, list[str]]:
    """Each model's example ids, once per number they were published under."""
    by_model: dict[str, list[str]] = defaultdict(list)
    for (model, _number), copies in numbered.items():
        by_model[model] += [json.loads(copy)[1] for copy in copies]
    return by_model


def _folded(contexts: dict[str, bytes]) -> dict[str, tuple[int, list[Entry]]]:
    """Each customer's count of events folded and their recent interactions."""
    return {
        key: (ctx.events, ctx.interactions.entries())
        for key, ctx in ((key, from_snapshot(value)) for key, value in contexts.items())
    }


def _difference(got: set[bytes], want: set[bytes]) -> str:
    extra, missing = sorted(got - want), sorted(want - got)
    return (
        f"{len(extra)} not in the uninterrupted run (e.g. {extra[:1]!r}), "
        f"{len(missing)} missing (e.g. {missing[:1]!r})"
    )
