"""The events topic as the flow's input: one librdkafka consumer per partition.

bytewax's `KafkaSource` reads a partition and nothing else. The service needs more
of its input, so it has its own source on the same client library:
- where each partition is in event time, and whether it has caught up with its
  end: the watermark (`flows.dataflow.clock`) follows both;
- its offsets committed to a consumer group at every snapshot, where operators'
  lag tools look (bytewax's recovery stays the truth of where to resume);
- a stop that ends the input at the next batch (`flows.dataflow.stopping`);
- a bounded run that does not end while its own events are on their way back
  (`flows.dataflow.ledger`);
- a start without snapshots that says where it starts, and that what an earlier
  run of the group sent will be sent again.
Partition names and resume state (the next offset) are bytewax's own, so a recovery
folder written with either source resumes with the other.
"""

import logging
from datetime import datetime

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from flows.dataflow.clock import EventClock
from flows.dataflow.ledger import LoopLedger

logger = logging.getLogger(__name__)

#: Messages taken per poll: enough to amortise the call, few enough to keep batches short.
BATCH_SIZE = 1000


class KafkaInput(FixedPartitionedSource[Message, int | None]):
    """The events topic, every partition (bytewax places each on one worker).

    `tail`: a service, which waits at the end of a partition for more; otherwise the
    input ends where each partition ends. `group`: the consumer group the offsets are
    committed to.
    """

    def __init__(
        self,
        brokers: str,
        topic: str,
        *,
        clock: EventClock,
        group: str,
        ledger: LoopLedger,
        tail: bool = True,
        starting_offset: int = OFFSET_BEGINNING,
        config: dict[str, str] | None = None,
    ) -> None:
        self._brokers = brokers
        self._topic = topic
        self._clock = clock
        self._group = group
        self._ledger = ledger
        self._tail = tail
        self._starting_offset = starting_offset
        self._config = dict(config or {})

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._brokers, **self._config})
        metadata = admin.list_topics(self._topic, timeout=30)
        topic = metadata.topics[self._topic]
        if topic.error is not None:
            raise RuntimeError(f"Kafka topic {self._topic!r}: {topic.error.str()}")
        return [f"{i}-{self._topic}" for i in sorted(topic.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> "KafkaInputPartition":
        index, topic = for_part.split("-", 1)
        if topic != self._topic:
            raise RuntimeError(f"recovery snapshots of topic {topic!r}, not {self._topic!r}")
        consumer = Consumer(
            {
                "bootstrap.servers": self._brokers,
                "group.id": self._group,
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                "statistics.interval.ms": 1000,  # (cached high offsets, for the lag)
                **self._config,
            }
        )
        part = TopicPartition(topic, int(index))
        if resume_state is None:
            _say_where_it_starts(consumer, part, self._starting_offset, self._group)
        start = self._starting_offset if resume_state is None else resume_state
        return KafkaInputPartition(
            consumer,
            TopicPartition(topic, int(index), start),
            step_id,
            self._clock,
            self._ledger,
            self._tail,
        )


class KafkaInputPartition(StatefulSourcePartition[Message, int | None]):
    """One partition of the events topic, and what the watermark needs to know of it."""

    def __init__(
        self,
        consumer: Consumer,
        part: TopicPartition,
        step_id: str,
        clock: EventClock,
        ledger: LoopLedger,
        tail: bool,
    ) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._topic = part.topic
        self._index = part.partition
        self._offset: int | None = part.offset if part.offset >= 0 else None
        self._clock = clock
        self._tail = tail
        self._name = (part.topic, part.partition)
        self._at_end = False
        #: bytewax's own lag metric, which its source sets: dashboards know it.
        self._lag = BYTEWAX_CONSUMER_LAG_GAUGE.labels(
            step_id=step_id, topic=part.topic, partition=part.partition
        )
        clock.register(self._name)
        ledger.read(0, part.partition, max(part.offset, 0))
        consumer.assign([part])

    def next_batch(self) -> list[Message]:
        if self._clock.stop.requested:
            raise StopIteration  # a clean stop: the flow finishes what it holds
        if self._at_end and not self._tail and self._ledger.even():
            # A bounded run ends at the partition's end, once nothing of its own is on
            # its way back to it.
            raise StopIteration
        batch: list[Message] = []
        at_end = False
        for msg in self._consumer.consume(BATCH_SIZE, 0.001):
            error = msg.error()
            if error is None:
                batch.append(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end = True
            else:  # the client's, not a record's: librdkafka retries what it can
                raise RuntimeError(f"consuming {self._topic}[{self._index}]: {error.str()}")
        last = batch[-1].offset() if batch else None
        if last is not None:
            self._offset = last + 1
            self._ledger.read(len(batch), self._index, self._offset)
        if at_end:
            self._at_end = True
            self._clock.caught_up(self._name)
        elif batch and self._at_end:
            self._at_end = False
            self._clock.caught_up(self._name, at_end=False)
        return batch

    def next_awake(self) -> datetime | None:
        return None

    def snapshot(self) -> int | None:
        offset = self._offset
        if offset is not None:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._index), cached=True
            )
            if high >= 0:
                self._lag.set(max(high - offset, 0))
            # Where lag tools look; recovery, not the group, says where a run resumes.
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, self._index, offset)], asynchronous=True
            )
        return offset

    def close(self) -> None:
        self._consumer.close()


def _say_where_it_starts(consumer: Consumer, part: TopicPartition, start: int, group: str) -> None:
    """A start without snapshots: where it reads from, and what it will send again."""
    where = "the earliest offset" if start == OFFSET_BEGINNING else "the end"
    try:
        committed = consumer.committed([part], timeout=10)[0].offset
    except Exception:
        committed = -1
    if committed > 0 and start == OFFSET_BEGINNING:
        logger.warning(
            "%s[%d]: no recovery snapshot, starting at %s; group %r had committed offset "
            "%d, so what an earlier run sent for those %d events is sent again "
            "(consumers de-duplicate by action id)",
            part.topic,
            part.partition,
            where,
            group,
            committed,
            committed,
        )
    else:
        logger.info(
            "%s[%d]: no recovery snapshot, starting at %s", part.topic, part.partition, where
        )
