"""What the Kafka flow reads back of its own topics is its own: a resumed flow repeats
only the decisions its deployment signed, and a replica learns only signed examples.

Anyone who may write to an output topic could otherwise plant a decision under an id
the replay will make (the first copy of an id stands), or teach every process's models.
"""

import json
import subprocess
import time
from datetime import UTC, datetime

import msgspec
import pytest
from kafka import KafkaProducer

from flows.dataflow.delivery import LOOP_HEADER, ROUND_HEADER
from flows.dataflow.replica import ModelReplica
from flows.runtime.published import read_published
from flows.runtime.settings import KafkaSettings, deployment_secret, state_key
from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from operators.models import ModelSet
from schemas.decision import Decision
from schemas.learning import Example, LearnedExamples
from tests.conftest import kafka_env
from tests.e2e.cli import REPO
from tests.helpers import default_playbook
from tests.integration.test_scale_kafka import Process
from tests.kafka_io import logged, produce, read_all

pytestmark = pytest.mark.integration


def _send(
    settings: KafkaSettings, topic: str, key: bytes, value: bytes, signature: bytes | None
) -> None:
    headers = [(SIGNATURE_HEADER, signature)] if signature is not None else []
    produce(settings, topic, [(key, value)], headers=headers)


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


def _batch(label: str) -> bytes:
    """A batch of one next-step example, numbered 1, with the id `ex-{label}`."""
    example = Example("next_step", f"ex-{label}", label, 1.0, {"a": 1.0}, ("web",))
    return msgspec.json.encode(LearnedExamples(1, [example]))


def _send_signed(settings: KafkaSettings, signature: RecordSignature, batch: bytes) -> None:
    topic, key = "models.examples", b"next_step"
    _send(settings, topic, key, batch, signature.of(topic, key, batch))


def test_a_replica_learns_only_the_examples_its_deployment_signed(kafka):
    signature = RecordSignature(deployment_secret(required=True))
    _send(kafka, "models.examples", b"next_step", _batch("planted"), None)
    _send_signed(kafka, signature, _batch("real"))
    models = ModelSet(default_playbook())
    replica = ModelReplica(models, kafka, signature)
    try:
        assert replica.start(30.0)
        assert replica.versions()["next_step"] == 1  # the signed one, once
        assert replica.published_after("next_step", 0) == {1: "ex-real"}
    finally:
        replica.close()


def test_the_flows_own_topics_are_read_to_an_end_past_another_writers_transaction(kafka):
    """Someone else's transaction on the flow's topics ends each partition it wrote
    with a commit marker, which no record reaches. The replica catches up with the
    log's end, a learner step that starts reads the log to it, and a resumed run reads
    back what was published: before, the catch-up waited its whole time, and the other
    two waited 30 s, then stopped the flow."""
    signature = RecordSignature(deployment_secret(required=True))
    since = time.time()
    _send_signed(kafka, signature, _batch("real"))
    writer = f"{kafka.topic_prefix}writer"
    produce(kafka, "models.examples", [(b"next_step", b"{}")], transactional_id=writer)
    produce(kafka, "decisions", [(b"cust-1", _decision("sent"))], transactional_id=writer)
    replica = ModelReplica(ModelSet(default_playbook()), kafka, signature)
    try:
        assert replica.start(20.0)
        started = time.monotonic()
        assert replica.published_after("next_step", 0) == {1: "ex-real"}
        live, _shadow = read_published(kafka, since, signature)
        assert live.decision("dec-planted") is None  # (not this deployment's)
        assert time.monotonic() - started < 20  # (not the wait for an end never reached)
    finally:
        replica.close()


def test_a_record_that_forges_a_rounds_header_is_read_as_any_other(kafka):
    """A replay in rounds skips the loop events of its rounds where it reads them on the
    topic (they come back by their delivery reports): only those its deployment signed.
    A record of anyone else's with that header is read, decided on, and counted as
    unsigned, never skipped unseen."""
    plain, forged = (
        json.dumps(
            {
                "event_id": f"req-{n}",
                "ts": "2026-05-04T10:00:00+00:00",
                "type": "decision_request",
                "channel": "app",
                "customer_id": f"cust-{n}",
                "request_id": f"r-{n}",
            }
        ).encode()
        for n in ("plain", "forged")
    )
    producer = KafkaProducer(acks="all", **kafka.kafka_python_config())
    producer.send(kafka.topic("events"), key=b"cust-plain", value=plain)
    producer.send(
        kafka.topic("events"),
        key=b"cust-forged",
        value=forged,
        headers=[(ROUND_HEADER, b"lineage:1"), LOOP_HEADER],
    )
    producer.flush()
    producer.close()
    done = subprocess.run(
        logged("bytewax.run", "flows.dataflow.kafka:flow"),
        env=kafka_env(kafka),
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    decided = {json.loads(value)["trigger_id"] for _key, value in read_all(kafka, "decisions")}
    assert {"req-plain", "req-forged"} <= decided
    said = done.stderr.decode()
    assert "a round's header without this deployment's signature" in said
    summary = Process(said).summary  # (nor is it counted as the flow's own loop event)
    assert summary["events"] == 2 and summary["loop_events"] == 0, summary
