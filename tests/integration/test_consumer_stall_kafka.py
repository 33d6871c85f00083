"""Long-lived consumers that stop reading, on the real broker: the models replica's
follower and a cluster's balance open theirs anew where they were (the events input's:
`test_merged_input_kafka.py`). The fault is a consumer paused: polled, it brings nothing,
as librdkafka's consumer that did not come back after a broker restart. It is paused in
the thread that polls it (a consumer's calls from two threads at once can deadlock)."""

import threading
import time

import msgspec
import pytest
from confluent_kafka import Consumer, Message
from prometheus_client import REGISTRY

from flows.dataflow.replica import ModelReplica
from flows.runtime.balance import ClusterBalance, LoopCounts
from flows.runtime.settings import KafkaSettings, deployment_secret, load_default_playbook
from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from operators.models import ModelSet
from schemas.learning import Example, LearnedExamples
from schemas.topics import BALANCE, MODEL_EXAMPLES
from tests.kafka_io import produce

pytestmark = pytest.mark.integration

#: The Kafka timeout here: a consumer is given three before it is opened anew.
TIMEOUT = "1s"


def _replaced(topic: str) -> float:
    found = REGISTRY.get_sample_value("wayfinder_consumers_replaced_total", {"topic": topic})
    return found or 0.0


def _publish(kafka: KafkaSettings, signature: RecordSignature, number: int) -> None:
    """Example `number` of the next-step model, as its learner publishes it."""
    example = Example("next_step", f"ex-{number}", "b", 1.0, prefix=("a",))
    batch = msgspec.json.encode(LearnedExamples(number, [example]))
    header = (SIGNATURE_HEADER, signature.of(MODEL_EXAMPLES, b"next_step", batch))
    produce(kafka, MODEL_EXAMPLES, [(b"next_step", batch)], headers=[header])


def test_a_models_replica_whose_consumer_reads_nothing_opens_it_anew(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower has applied example 1; its consumer stops bringing anything, and
    example 2 is published: the follower opens a consumer anew where it was, and applies
    example 2, once."""
    monkeypatch.setenv("WAYFINDER_KAFKA_TIMEOUT", TIMEOUT)
    paused: list[Consumer] = []
    took = ModelReplica._take

    def take(self: ModelReplica, messages: list[Message], reached: int = -1) -> None:
        took(self, messages, reached)
        if self.applied() == 1 and not paused and self._following is not None:
            self._following.pause(self._following.assignment())
            paused.append(self._following)

    monkeypatch.setattr(ModelReplica, "_take", take)
    signature = RecordSignature(deployment_secret())
    _publish(kafka, signature, 1)
    replica = ModelReplica(ModelSet(load_default_playbook()), kafka, signature)
    topic = kafka.topic(MODEL_EXAMPLES)
    replaced = _replaced(topic)
    try:
        assert replica.start(30.0) and replica.applied() == 1
        deadline = time.monotonic() + 10
        while not paused and time.monotonic() < deadline:
            time.sleep(0.05)
        (stuck,) = paused
        _publish(kafka, signature, 2)
        deadline = time.monotonic() + 30
        while replica.applied() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replica.applied() == 2
        assert replica._following is not stuck and _replaced(topic) == replaced + 1
        time.sleep(0.5)
        assert replica.applied() == 2 and replica._in_order.duplicates == 0
    finally:
        replica.close()


def test_a_cluster_balance_whose_consumer_reads_nothing_opens_it_anew(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster of one finds itself done; its balance consumer stops bringing anything,
    and its counts change: it is found done again only from reports read after them,
    which a consumer opened anew reads. (Were the balance never to read again, a bounded
    cluster run would never end.)"""
    monkeypatch.setenv("WAYFINDER_KAFKA_TIMEOUT", TIMEOUT)
    consumers: list[Consumer] = []
    opened, took = ClusterBalance._consumer, ClusterBalance._take
    pause, paused = threading.Event(), threading.Event()

    def recorded(self: ClusterBalance, offset: int) -> Consumer:
        consumers.append(opened(self, offset))
        return consumers[-1]

    def take(self: ClusterBalance, msg: Message) -> int:
        if pause.is_set() and not paused.is_set():
            consumers[0].pause(consumers[0].assignment())
            paused.set()
        return took(self, msg)

    monkeypatch.setattr(ClusterBalance, "_consumer", recorded)
    monkeypatch.setattr(ClusterBalance, "_take", take)
    folded = [1]
    lock = threading.Lock()

    def counts() -> LoopCounts:
        with lock:
            return LoopCounts(entered=folded[0], settled=folded[0], at_end=(0,))

    topic = kafka.topic(BALANCE)
    balance = ClusterBalance(
        kafka.librdkafka_config() | {"bootstrap.servers": kafka.bootstrap_servers},
        topic,
        group=kafka.group,
        process=0,
        processes=1,
        partitions=(0,),
        signature=RecordSignature(deployment_secret(required=True)),
        counts=counts,
    )
    try:
        balance.start()
        deadline = time.monotonic() + 30
        while not balance.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert balance.done() and len(consumers) == 1
        replaced = _replaced(topic)
        pause.set()
        assert paused.wait(10)
        with lock:
            folded[0] = 2
        deadline = time.monotonic() + 30
        while not balance.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert balance.done() and len(consumers) == 2
        assert _replaced(topic) == replaced + 1
    finally:
        balance.stop()
