"""`wayfinder simulate --kafka`, then `wayfinder run --kafka`: the embedded outputs, on Kafka."""

import msgspec
import pytest

from schemas.action import Action
from schemas.deadletter import DeadLetter
from schemas.decision import Decision
from tests.conftest import kafka_env
from tests.e2e.cli import lines, wayfinder
from tests.kafka_io import read_all

pytestmark = pytest.mark.integration

SIM = ["--customers", "300", "--hours", "24", "--seed", "11"]


def test_kafka_run_gives_the_same_decisions_as_the_embedded_run(kafka, tmp_path):
    env = kafka_env(kafka)
    produced = wayfinder("simulate", "--kafka", *SIM, env=env)
    assert "produced" in produced
    stdout = wayfinder("run", "--kafka", "--no-progress", env=env)
    assert "Wayfinder run" in stdout

    out = tmp_path / "embedded"
    wayfinder("run", *SIM, "--out", str(out), "--no-progress", "--no-reactions")

    kafka_actions = sorted(
        msgspec.json.decode(v, type=Action).action_id for _, v in read_all(kafka, "actions.chat")
    )
    embedded_actions = sorted(
        msgspec.json.decode(raw, type=Action).action_id for raw in lines(out / "actions.chat.jsonl")
    )
    assert kafka_actions == embedded_actions
    assert len(kafka_actions) > 0

    # Priority-agent decisions are rule-driven and do not depend on anonymous browsing,
    # whose merges come back through the events topic after a bounded Kafka run has
    # stopped reading it (decisions a model took part in may differ with arrival order).
    def transfer_decisions(values: list[bytes]) -> list[str]:
        decisions = [msgspec.json.decode(v, type=Decision) for v in values]
        return sorted(
            d.decision_id
            for d in decisions
            if any(c.action == "priority_agent" for c in d.candidates)
        )

    kafka_decisions = transfer_decisions([v for _, v in read_all(kafka, "decisions")])
    assert kafka_decisions == transfer_decisions(lines(out / "decisions.jsonl"))
    assert kafka_decisions

    kafka_dead = sorted(
        msgspec.json.decode(v, type=DeadLetter).raw for _, v in read_all(kafka, "dlq")
    )
    embedded_dead = sorted(
        msgspec.json.decode(raw, type=DeadLetter).raw for raw in lines(out / "dlq.jsonl")
    )
    assert kafka_dead == embedded_dead
