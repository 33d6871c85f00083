"""Test clients on kafka-python: produce a batch, read a topic to its end; the live flow."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flows.settings import KafkaSettings


def produce(
    settings: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes]]
) -> None:
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    for key, value in messages:
        producer.send(settings.topic(topic), key=key, value=value)
    producer.flush()
    producer.close()


def read_all(
    settings: KafkaSettings, topic: str, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes]]:
    """Every message on the topic now, (key, value), partition by partition."""
    name = settings.topic(topic)
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_python_config(),
    )
    try:
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        out: list[tuple[bytes | None, bytes]] = []
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                raise TimeoutError(
                    f"{name}: no message within {timeout_s}s, {len(remaining)} partitions short"
                )
            for tp, records in polled.items():
                out += [(r.key, r.value) for r in records]
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        consumer.close()


@contextlib.contextmanager
def live_flow(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """The Kafka dataflow as deployed (`python -m bytewax.run flows.orchestrate:flow`),
    running while the block runs, then stopped with its process group."""
    flow = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.orchestrate:flow"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield flow
    finally:
        os.killpg(flow.pid, signal.SIGTERM)
        flow.wait(timeout=30)
