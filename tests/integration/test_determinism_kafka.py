"""Two uninterrupted Kafka runs of the same input give the same outputs, except for
what the models had learned by each decision.

The topic's three partitions are read as one stream in event-time order, the same
every run, and everything the rules decide is the same. What the models had learned
by a decision is not fixed yet (issue 13's lockstep): the learner is a step of its own,
so a decision sees the examples of the batches before its own, and where the batches
are cut follows the broker's timing (the flow's own events come back round the events
topic at no fixed point of the stream); on two worker threads, also the threads'
scheduling. A fresh-clone run saw it on one worker too. So the intent model's
announcements and the decisions they trigger are named, and every decision of each run
re-runs identically (`wayfinder rerun --all`) with the model versions it recorded.
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.dataflow.kafka import kafka_flow
from flows.runtime.settings import KafkaSettings
from schemas.topics import all_topics
from tests.conftest import fresh_topics, kafka_env
from tests.e2e.cli import WAYFINDER, run
from tests.flow_helpers import opened_inputs
from tests.helpers import default_playbook
from tests.integration.test_loop_kafka import keyed
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration


def outputs(
    settings: KafkaSettings, open_inputs: Callable[[list[bytes]], list[bytes]] | None = None
) -> dict[str, list[bytes]]:
    """Every output topic's messages, sorted; a dead letter without where and when the
    broker took it (another topic, another time: the record is the same); the decision
    inputs opened with the run's keys (by `open_inputs`, if given)."""
    topics = [t for t in all_topics(default_playbook().channels) if t != "events"]
    found = {t: [v for _, v in read_all(settings, t) if v is not None] for t in topics}
    found["dlq"] = [_unplaced(v) for v in found["dlq"]]
    # Each run makes its customers' keys anew: their decisions' inputs compare opened.
    vault = settings.key_vault
    assert vault is not None
    inputs = found["decisions.inputs"]
    found["decisions.inputs"] = (
        opened_inputs(inputs, vault) if open_inputs is None else open_inputs(inputs)
    )
    return {t: sorted(values) for t, values in found.items()}


def _unplaced(dead_letter: bytes) -> bytes:
    record = json.loads(dead_letter)
    for where in ("source", "partition", "offset", "received_at"):
        record.pop(where, None)
    return json.dumps(record, sort_keys=True).encode()


def model_driven_triggers(decisions: list[bytes]) -> set[str]:
    """Decisions whose trigger is itself a model's (the intent model announcing a change)."""
    return {
        json.loads(line)["decision_id"]
        for line in decisions
        if json.loads(line)["trigger_type"] == "intent_changed"
    }


def test_two_runs_of_the_same_input_decide_the_same_by_the_rules_and_rerun_identically(
    bootstrap_servers, entry_point, tmp_path
):
    events = tmp_path / "events.jsonl"
    subprocess.run(
        [WAYFINDER, "simulate", "--out", str(events), "--customers", "200", "--hours", "24"],
        check=True,
        capture_output=True,
    )
    messages = [keyed(line) for line in events.read_bytes().splitlines()]
    runs = []
    for run_number in range(2):
        vault = tmp_path / f"keys-{run_number}"
        settings = fresh_topics(bootstrap_servers, "test-det", key_vault=vault)
        produce(settings, "events", messages)
        entry_point(kafka_flow(settings))
        runs.append((settings, outputs(settings)))
    (first, a), (second, b) = runs
    assert a["journeys"] and a["decisions"] and a["audiences"]

    # Named: what the models took part in may differ between the two runs. The intent
    # model's announcements (journeys topic) and the decisions they trigger; the content
    # of decisions and actions (scores, choices, the model versions recorded).
    def rules(rows: list[bytes]) -> list[bytes]:
        return [row for row in rows if b'"intent_changed"' not in row]

    assert rules(a["journeys"]) == rules(b["journeys"])
    assert a["audiences"] == b["audiences"]
    assert a["dlq"] == b["dlq"]

    def ids(rows: list[bytes]) -> set[str]:
        return {json.loads(row)["decision_id"] for row in rows}

    named = model_driven_triggers(a["decisions"]) | model_driven_triggers(b["decisions"])
    assert ids(a["decisions"]) - named == ids(b["decisions"]) - named
    # Each run's decisions re-run identically with the versions that run recorded.
    for settings in (first, second):
        done = run(
            [WAYFINDER, "rerun", "--all", "--kafka", "--json", str(tmp_path / "rerun.json")],
            env=kafka_env(settings),
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        report = json.loads(Path(tmp_path / "rerun.json").read_text())
        assert report, report
