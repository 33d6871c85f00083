"""The Kafka output: every message delivered, dead-lettered, or the flow told why not.

bytewax's `KafkaSink` produces without delivery reports, so a message the broker
refuses (too large, a topic that does not exist) vanishes in silence. This sink
uses the same client (confluent-kafka's Producer) and reads every report:

- errors that retrying can cure (a broker restarting, a leader moving) are retried
  by the client, then here, a bounded number of times;
- errors no retry can cure (a message too large, a topic that does not exist, a
  topic this client may not write) send the message to the dead-letter topic,
  bounded and with the reason;
- anything left raises: the flow stops with the reason and resumes from its
  snapshots, which replays what was not delivered (at least once, same ids).
"""

import logging
import time
from collections.abc import Iterable

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from flows.dataflow.kafka_reach import waiting_on_the_cluster
from flows.dataflow.ledger import LoopLedger
from flows.runtime import metrics
from flows.runtime.settings import kafka_timeout_seconds
from schemas.codec import encode
from schemas.deadletter import dead_letter

logger = logging.getLogger(__name__)

Outgoing = KafkaSinkMessage[bytes | None, bytes | None]

#: Errors no retry can cure: the message goes to the dead-letter topic instead.
_HOPELESS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
    }
)
#: What marks the flow's own events on the events topic (merges, forwards, erasures of
#: devices), so whichever process reads one back counts it as such.
LOOP_HEADER = ("wayfinder-loop", b"1")

#: What marks a loop event written in a round of a replay (`LoopLedger.rounds`): the
#: run's lineage and the round's number. The reader never takes one from the topic: it
#: was handed back as delivered, or is a copy a run resumed from snapshots writes again.
ROUND_HEADER = "wayfinder-round"

#: Messages delivered, by topic (a child bound once for each).
_PRODUCED = metrics.Children(metrics.PRODUCED)

#: Rounds of producing again what the client could not deliver, before giving up.
_ATTEMPTS = 3
#: Seconds of each wait for delivery reports (between them, how long it has lasted).
_FLUSH_STEP_S = 1.0


class UndeliverableError(RuntimeError):
    """Output that could be neither delivered nor dead-lettered: the flow must stop."""


class DeliveredKafkaSink(DynamicSink[Outgoing]):
    """Writes `KafkaSinkMessage`s to their topics, checking each delivery report."""

    def __init__(
        self,
        brokers: Iterable[str],
        config: dict[str, str],
        dlq_topic: str,
        loop: tuple[str, LoopLedger] | None = None,
    ) -> None:
        """`loop`: the events topic, and the ledger told of each event delivered to it."""
        self._config = {"bootstrap.servers": ",".join(brokers), **config}
        self._dlq_topic = dlq_topic
        self._loop = loop

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "_DeliveredPartition":
        return _DeliveredPartition(self._config, self._dlq_topic, self._loop)


class _DeliveredPartition(StatelessSinkPartition[Outgoing]):
    def __init__(
        self, config: dict[str, str], dlq_topic: str, loop: tuple[str, LoopLedger] | None
    ) -> None:
        #: Whether librdkafka said every broker is down since the last delivery: while
        #: it waits for deliveries, the worker thread polls no input (`kafka_reach`).
        self._down = False
        #: The kinds of error said since the last delivery (each once, not at each retry).
        self._said: set[int] = set()
        self._producer = Producer({**config, "error_cb": self._error})
        #: A wait for deliveries longer than this is said, and again each time as long.
        self._patience = kafka_timeout_seconds()
        self._dlq_topic = dlq_topic
        self._loop_topic: str | None = None
        self._ledger: LoopLedger | None = None
        if loop is not None:
            self._loop_topic, self._ledger = loop

    def write_batch(self, items: list[Outgoing]) -> None:
        pending = items
        for _attempt in range(_ATTEMPTS):
            failed = self._deliver(pending)
            if not failed:
                return
            retry: list[Outgoing] = []
            for msg, error in failed:
                metrics.DELIVERY_FAILURES.labels(error.name()).inc()
                if error.code() in _HOPELESS:
                    self._dead_letter(msg, error)
                else:
                    retry.append(msg)
            if not retry:
                return
            metrics.DELIVERY_RETRIES.inc(len(retry))
            pending = retry
        raise UndeliverableError(
            f"{len(pending)} messages not delivered after {_ATTEMPTS} rounds of retries "
            f"(last error: {failed[-1][1].name()}); resume from the snapshots to replay them"
        )

    def _error(self, error: KafkaError) -> None:
        """librdkafka's word on the client, not on a message."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._down = True
        if error.code() not in self._said:
            self._said.add(error.code())
            logger.warning("Kafka output: %s", error.str())

    def _deliver(self, items: list[Outgoing]) -> list[tuple[Outgoing, KafkaError]]:
        """Produce, wait for every report, and return what failed with why."""
        with waiting_on_the_cluster(lambda: self._down):
            return self._produce(items)

    def _produce(self, items: list[Outgoing]) -> list[tuple[Outgoing, KafkaError]]:
        failed: list[tuple[Outgoing, KafkaError]] = []
        producer = self._producer
        for msg in items:

            def report(error: KafkaError | None, message: Message, msg: Outgoing = msg) -> None:
                if error is not None:
                    failed.append((msg, error))
                    return
                self._down = False
                self._said.clear()
                topic = message.topic() or ""
                _PRODUCED(topic).inc()
                if topic == self._loop_topic and self._ledger is not None:
                    partition, offset = message.partition() or 0, message.offset() or 0
                    self._ledger.delivered(partition, offset, message)

            topic = msg.topic
            assert topic is not None  # the flow names each message's topic
            headers: list[tuple[str, str | bytes | None]] = [*msg.headers]
            if topic == self._loop_topic:
                headers.append(LOOP_HEADER)
                if self._ledger is not None and self._ledger.rounds:
                    headers.append((ROUND_HEADER, self._ledger.round_mark()))
            while True:
                try:
                    producer.produce(
                        topic, value=msg.value, key=msg.key, headers=headers, on_delivery=report
                    )
                    break
                except BufferError:  # the client's queue is full: let it drain
                    producer.poll(1.0)
                except KafkaException as exc:  # refused before sending (too large...)
                    failed.append((msg, exc.args[0]))
                    break
            producer.poll(0)
        self._flush()
        return failed

    def _flush(self) -> None:
        """Wait for every delivery report, saying so while the wait lasts longer than the
        Kafka timeout: the worker thread polls no input meanwhile, and a flow stalled
        on its output must not be silent. librdkafka gives a message up after its
        `message.timeout.ms` (5 min by default), and its report says why."""
        started = said = time.monotonic()
        while (left := self._producer.flush(_FLUSH_STEP_S)) > 0:
            now = time.monotonic()
            if now - said >= self._patience:
                said = now
                logger.warning(
                    "Kafka output: %d message(s) not acknowledged after %.0f s; "
                    "waiting for the broker",
                    left,
                    now - started,
                )

    def _dead_letter(self, msg: Outgoing, error: KafkaError) -> None:
        """The message the broker will never take, on the dead-letter topic instead."""
        if msg.topic == self._dlq_topic:  # a dead letter that cannot be written: stop
            raise UndeliverableError(f"dead-letter topic refused a record: {error.name()}")
        if msg.topic == self._loop_topic and self._ledger is not None:
            self._ledger.dropped()  # it will not come back
        letter = dead_letter(
            "undeliverable",
            f"to {msg.topic}: {error.name()} ({error.str()})",
            msg.value,
            f"output:{msg.topic}",
        )
        metrics.DEAD_LETTERS.labels("undeliverable").inc()
        record = KafkaSinkMessage(key=msg.key, value=encode(letter), topic=self._dlq_topic)
        self.write_batch([record])

    def close(self) -> None:
        self._flush()
