"""What the Kafka flow reads back of its own topics is its own: a resumed flow repeats
only the decisions its deployment signed, and a replica learns only signed examples.

Anyone who may write to an output topic could otherwise plant a decision under an id
the replay will make (the first copy of an id stands), or teach every process's models.
"""

import time
from datetime import UTC, datetime

import msgspec
import pytest
from kafka import KafkaProducer

from flows.dataflow.replica import ModelReplica
from flows.runtime.published import read_published
from flows.runtime.settings import KafkaSettings, deployment_secret, state_key
from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from operators.models import ModelSet
from schemas.decision import Decision
from schemas.learning import Example, LearnedExamples
from tests.helpers import default_playbook

pytestmark = pytest.mark.integration


def _send(
    settings: KafkaSettings, topic: str, key: bytes, value: bytes, signature: bytes | None
) -> None:
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    headers = [(SIGNATURE_HEADER, signature)] if signature is not None else []
    producer.send(settings.topic(topic), key=key, value=value, headers=headers)
    producer.flush()
    producer.close()


def _decision(outcome: str) -> bytes:
    decision = Decision(
        decision_id="dec-planted",
        customer=state_key("cust-1"),
        trigger_id="ev-1",
        trigger_type="page_view",
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        outcome=outcome,  # type: ignore[arg-type]
        candidates=[],
        playbook_version="pb-1",
    )
    return msgspec.json.encode(decision)


def test_a_resumed_flow_repeats_only_the_decisions_its_deployment_signed(kafka):
    signature = RecordSignature(deployment_secret(required=True))
    since = time.time()
    forged, real = _decision("sent"), _decision("no_action")
    _send(kafka, "decisions", b"cust-1", forged, None)  # first: it would stand
    _send(kafka, "decisions", b"cust-1", forged, signature.of("decisions", b"cust-1", real))
    _send(kafka, "decisions", b"cust-1", real, signature.of("decisions", b"cust-1", real))
    live, _shadow = read_published(kafka, since, signature)
    fact = live.decision("dec-planted")
    assert fact is not None and fact.decision is not None
    assert fact.decision.outcome == "no_action"


def test_a_replica_learns_only_the_examples_its_deployment_signed(kafka):
    signature = RecordSignature(deployment_secret(required=True))

    def batch(label: str) -> bytes:
        example = Example("next_step", f"ex-{label}", label, 1.0, {"a": 1.0}, ("web",))
        return msgspec.json.encode(LearnedExamples(1, [example]))

    planted, real = batch("planted"), batch("real")
    _send(kafka, "models.examples", b"next_step", planted, None)
    _send(
        kafka,
        "models.examples",
        b"next_step",
        real,
        signature.of("models.examples", b"next_step", real),
    )
    models = ModelSet(default_playbook())
    replica = ModelReplica(models, kafka, signature)
    try:
        assert replica.start(30.0)
        assert replica.versions()["next_step"] == 1  # the signed one, once
        assert replica.published_after("next_step", 0) == {1: "ex-real"}
    finally:
        replica.close()
