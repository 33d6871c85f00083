"""The Kafka sink on the real broker: what the broker refuses is never dropped in silence."""

import msgspec
import pytest
from bytewax.connectors.kafka import KafkaSinkMessage

from flows.dataflow.delivery import DeliveredKafkaSink
from flows.runtime import metrics
from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import read_topic
from schemas.deadletter import MAX_RAW_BYTES, DeadLetter
from schemas.topics import DECISIONS, DLQ

pytestmark = pytest.mark.integration


def _sink(kafka: KafkaSettings) -> DeliveredKafkaSink:
    # A topic missing from the metadata fails after 1 s here, not the default 30 s.
    config = {**kafka.librdkafka_config(), "topic.metadata.propagation.max.ms": "1000"}
    return DeliveredKafkaSink(kafka.brokers, config, kafka.topic(DLQ))


def test_messages_the_broker_refuses_are_dead_letters_and_the_rest_is_delivered(kafka):
    """Too large for the broker, and for a topic that does not exist: each is a bounded
    dead letter naming the topic and the error; the good messages around them arrive."""
    part = _sink(kafka).build("out", 0, 1)
    huge = b"x" * (2 * 1024 * 1024)
    before = metrics.samples_by_label("wayfinder_dead_letters", "reason")
    part.write_batch(
        [
            KafkaSinkMessage(key=b"k1", value=b'{"n":1}', topic=kafka.topic(DECISIONS)),
            KafkaSinkMessage(key=b"k2", value=huge, topic=kafka.topic(DECISIONS)),
            KafkaSinkMessage(key=b"k3", value=b'{"n":3}', topic=kafka.topic("no.such.topic")),
            KafkaSinkMessage(key=b"k4", value=b'{"n":4}', topic=kafka.topic(DECISIONS)),
        ]
    )
    part.close()

    assert [value for _key, value in read_topic(kafka, DECISIONS)] == [b'{"n":1}', b'{"n":4}']
    letters = {
        key: msgspec.json.decode(value, type=DeadLetter) for key, value in read_topic(kafka, DLQ)
    }
    assert set(letters) == {b"k2", b"k3"}
    assert all(d.reason == "undeliverable" for d in letters.values())
    too_large, no_topic = letters[b"k2"], letters[b"k3"]
    assert "MSG_SIZE_TOO_LARGE" in too_large.detail and kafka.topic(DECISIONS) in too_large.detail
    assert too_large.size == len(huge) and len(too_large.raw) == MAX_RAW_BYTES
    assert "UNKNOWN" in no_topic.detail and no_topic.raw == b'{"n":3}'
    after = metrics.samples_by_label("wayfinder_dead_letters", "reason")
    assert after.get("undeliverable", 0) - before.get("undeliverable", 0) == 2
