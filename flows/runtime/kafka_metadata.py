"""Metadata calls to the broker that ride out a leader election.

A partition has no leader for a moment after its topic is created and while the
controller moves it: librdkafka then answers NOT_LEADER_FOR_PARTITION or
LEADER_NOT_AVAILABLE. Those answers are about the moment, not the request, so every
metadata call the flow depends on asks again until its deadline instead of stopping
the run (seen: a replica's first offset lookup on a just-created topic stopped a
fresh-clone test run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import TopicMetadata

# Codes that mean "not now" even where librdkafka does not flag them retriable.
_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
        KafkaError._ALL_BROKERS_DOWN,
        # The client's metadata lost the partition: seen while the broker was down (a
        # learner's first read of its log, in a broker restart, stopped the flow).
        KafkaError._UNKNOWN_PARTITION,
    }
)
# The topic does not exist (yet): a fact, answered at once.
NO_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})
_BACKOFF_S = 0.1

T = TypeVar("T")


def transient(error: object) -> bool:
    """Whether asking again later can give another answer (`error`: a KafkaError, or
    the KafkaException that carries one)."""
    if isinstance(error, KafkaException):
        error = _error_of(error)
    if not isinstance(error, KafkaError):
        return False
    return error.code() in _TRANSIENT or bool(error.retriable())


def _code(exc: KafkaException) -> object:
    error = _error_of(exc)
    return error.code() if isinstance(error, KafkaError) else None


def _error_of(exc: KafkaException) -> object:
    return exc.args[0] if exc.args else None


def ask(call: Callable[[float], T], timeout: float) -> T:
    """`call(seconds_left)` until it answers, asking again on a transient error until
    `timeout` seconds have gone; the last error is raised then."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(deadline - time.monotonic(), 0.01)
        try:
            return call(left)
        except KafkaException as exc:
            if not transient(exc) or time.monotonic() + _BACKOFF_S >= deadline:
                raise
        time.sleep(_BACKOFF_S)


def end_offset(
    consumer: Consumer, topic: str, partition: int, timeout: float, *, cached: bool = False
) -> int:
    """The partition's end offset (0 when the topic is not there yet)."""

    def call(left: float) -> int:
        try:
            if cached:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            else:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=left
                )
        except KafkaException as exc:
            if _code(exc) == KafkaError._UNKNOWN_PARTITION:
                # The client's metadata lost the partition (a broker restart) and, for
                # a topic it neither reads nor is assigned, never asks for it again by
                # itself: asked again as it was, the end stayed unknown for minutes
                # after the broker was back. Ask for the topic's metadata first.
                consumer.list_topics(topic, timeout=left)
            raise
        return int(high)

    try:
        return ask(call, timeout)
    except KafkaException as exc:
        if _code(exc) in NO_TOPIC:
            return 0
        raise


def topic_metadata(admin: AdminClient, topic: str, timeout: float) -> TopicMetadata:
    """The topic's metadata once every partition has a leader (or the error that says
    it does not exist)."""

    def call(left: float) -> TopicMetadata:
        found = admin.list_topics(topic, timeout=left).topics[topic]
        if found.error is not None:
            raise KafkaException(found.error)
        for part in found.partitions.values():
            if part.error is not None:
                raise KafkaException(part.error)
        return found

    return ask(call, timeout)
