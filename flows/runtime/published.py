"""Reading back what the run before a crash published after its snapshot.

A resumed process replays the input its snapshot had not folded; where that replay
comes to a decision or an intent change that was published already, it repeats it
(`operators.published`). Those records are on the decision, action, input and journey
topics, written after the snapshot was taken: each partition is read from the first
record stamped (Kafka's CreateTime, the producer's clock) at or after the snapshot's
time, less a margin for the clocks of a cluster's machines, to its end as of now.
What a run publishes between two snapshots is small, and so is this.
"""

import logging
import time
from collections import Counter

import msgspec
from confluent_kafka import Consumer, KafkaException, TopicPartition

from flows.runtime import metrics
from flows.runtime.kafka_metadata import ask, end_offset
from flows.runtime.settings import KafkaSettings, kafka_timeout_seconds
from flows.runtime.signature import Headers, RecordSignature
from operators.published import Published
from schemas.action import Action
from schemas.decision import Decision, DecisionInput
from schemas.journey import IntentTransition
from schemas.topics import DECISION_INPUTS, DECISIONS, JOURNEYS, SHADOW_DECISIONS, action_topic

logger = logging.getLogger(__name__)

#: How much earlier than the snapshot's time a record may be stamped and still follow
#: it: the clocks of a cluster's machines, and Kafka's milliseconds.
CLOCK_MARGIN_S = 60.0

_DECODERS: dict[str, msgspec.json.Decoder[Decision | Action | DecisionInput | IntentTransition]] = {
    DECISIONS: msgspec.json.Decoder(Decision),
    DECISION_INPUTS: msgspec.json.Decoder(DecisionInput),
    JOURNEYS: msgspec.json.Decoder(IntentTransition),
    SHADOW_DECISIONS: msgspec.json.Decoder(Decision),
}
_ACTIONS = msgspec.json.Decoder(Action)


def read_published(
    settings: KafkaSettings, since: float, signature: RecordSignature
) -> tuple[Published, Published]:
    """What the live step and a challenger's step published from `since` (a wall-clock
    time, seconds) on: (live, shadow). A record without this deployment's `signature`
    was not published by its flow, and is skipped."""
    started = time.monotonic()
    live, shadow = Published(), Published()
    timeout = max(kafka_timeout_seconds(), 30.0)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.group}.published",  # never joined nor committed to
            "enable.auto.commit": "false",
            "enable.partition.eof": "false",
            **settings.librdkafka_config(),
        }
    )
    try:
        names = ask(lambda left: consumer.list_topics(timeout=left), timeout).topics
        prefix = settings.topic_prefix
        actions = prefix + action_topic("")
        wanted = {
            name: len(meta.partitions)
            for name, meta in names.items()
            if name.startswith(actions)
            or (name.startswith(prefix) and name[len(prefix) :] in _DECODERS)
        }
        ranges = _offsets_at(consumer, wanted, since - CLOCK_MARGIN_S, timeout)
        read = 0
        unsigned: Counter[str] = Counter()
        for name, key, value, headers in _read(consumer, ranges, timeout):
            topic = name[len(prefix) :]
            if topic == JOURNEYS and b'"intent_changed"' not in value:
                continue  # a journey's transition: it follows from the input alone
            if not signature.holds(topic, key, value, headers):
                unsigned[topic] += 1
                continue
            decode = _ACTIONS.decode if name.startswith(actions) else _DECODERS[topic].decode
            try:
                record = decode(value)
            except msgspec.DecodeError:  # (anyone who may write to a topic may write anything)
                continue  # not a record of this flow's
            (shadow if topic == SHADOW_DECISIONS else live).add(record)
            read += 1
    finally:
        consumer.close()
    for topic, count in sorted(unsigned.items()):
        metrics.UNSIGNED_RECORDS.labels(topic).inc(count)
        logger.warning(
            "resuming: %d records on %s%s without this deployment's signature skipped (written "
            "by another producer, or under another WAYFINDER_STATE_KEY_SECRET): the replay "
            "does not repeat them",
            count,
            prefix,
            topic,
        )
    logger.info(
        "resuming: %d records published after the snapshot (from %s, less %.0f s) read back "
        "in %.1f s; the replay repeats them",
        read,
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since)),
        CLOCK_MARGIN_S,
        time.monotonic() - started,
    )
    return live, shadow


def _offsets_at(
    consumer: Consumer, topics: dict[str, int], since: float, timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """{(topic, partition): (first offset stamped at or after `since`, end offset)} of
    the partitions that hold such records."""
    wanted = [
        TopicPartition(name, index, int(since * 1000))
        for name, count in topics.items()
        for index in range(count)
    ]
    if not wanted:
        return {}
    found = ask(lambda left: consumer.offsets_for_times(wanted, timeout=left), timeout)
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for part in found:
        if part.error is not None:
            raise KafkaException(part.error)
        if part.offset < 0:
            continue  # nothing stamped since
        end = end_offset(consumer, part.topic, part.partition, timeout)
        if part.offset < end:
            ranges[(part.topic, part.partition)] = (part.offset, end)
    return ranges


def _read(
    consumer: Consumer, ranges: dict[tuple[str, int], tuple[int, int]], timeout: float
) -> list[tuple[str, bytes | None, bytes, Headers | None]]:
    """(topic, key, value, headers) of every record in the ranges, each partition in its
    order (tombstones left out)."""
    if not ranges:
        return []
    consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _end) in ranges.items()])
    left = {part: end for part, (_start, end) in ranges.items()}
    values: list[tuple[str, bytes | None, bytes, Headers | None]] = []
    deadline = time.monotonic() + timeout
    while left:
        if time.monotonic() > deadline:
            (topic, partition), end = next(iter(left.items()))
            raise RuntimeError(
                f"{topic}[{partition}]: not read to offset {end} before the timeout; what "
                "was published after the snapshot is not known"
            )
        for msg in consumer.consume(500, 0.1):
            if msg.error() is not None:
                continue
            part, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
            stop = left.get(part)
            if stop is None or offset >= stop:
                continue
            value = msg.value()
            if value is not None:
                values.append((part[0], msg.key(), value, msg.headers()))
            if offset + 1 >= stop:
                del left[part]
        # (past a transaction's markers too, which no record reaches)
        for at in consumer.position([TopicPartition(t, p) for t, p in left]) if left else ():
            if at.offset >= left[(at.topic, at.partition)]:
                del left[(at.topic, at.partition)]
    return values
