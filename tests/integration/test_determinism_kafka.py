"""Two uninterrupted Kafka replays of the same input, on one process, give the same
outputs, byte for byte, on one worker or two.

The topic's three partitions are read as one stream in event-time order, and a replay
goes in rounds (`flows.dataflow.ledger.LoopLedger`): each batch, or the loop events the
batch before wrote, is folded, delivered and learned before the next, so what every
decision saw, the models included, is the same every run. Each run makes its
customers' keys anew, so decision inputs compare opened; a dead letter compares without
where and when the broker took it. Every decision also re-runs identically (`wayfinder
rerun --all`) with the model versions it recorded. Named: the contact-map
snapshots a scope publishes at each window of event time (the last of each is the
same). (A cluster's processes read as the
records come: `tests/integration/test_scale_kafka.py` names what may differ there.)
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def last_maps(snapshots: list[bytes]) -> dict[str, Any]:
    """The last contact-map snapshot of each scope (the one at the input's end), as
    data (its counters' keys are written in the order they were first met)."""
    last: dict[str, Any] = {}
    for snapshot in snapshots:
        record = json.loads(snapshot)
        if record["scope"] not in last or record["at"] >= last[record["scope"]]["at"]:
            last[record["scope"]] = record
    return last


def test_two_replays_of_the_same_input_give_the_same_outputs_and_rerun_identically(
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
    assert a["journeys"] and a["decisions"] and a["audiences"] and a["decisions.inputs"]
    assert any(b'"intent_changed"' in row for row in a["journeys"])
    for topic, written in a.items():
        if topic != "analytics":
            assert written == b[topic], topic
    # Named: the contact-map snapshots a scope publishes at each window of event time
    # fold the finished journeys in the order they reach it from the workers; the last
    # of each scope, which has folded them all, is the same.
    assert last_maps(a["analytics"]) == last_maps(b["analytics"])
    # Each run's decisions re-run identically with the versions that run recorded.
    for settings in (first, second):
        done = run(
            [WAYFINDER, "rerun", "--all", "--kafka", "--json", str(tmp_path / "rerun.json")],
            env=kafka_env(settings),
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        report = json.loads(Path(tmp_path / "rerun.json").read_text())
        assert report, report
