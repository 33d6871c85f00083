"""A Kafka consumer that, polled, brings nothing while the broker says its partitions
hold more: told, so that its reader opens it anew at its own offsets.

After a broker restart, librdkafka's input consumer was once seen never to come back:
one refused connection, then no other attempt for minutes, while the process's
producers were back within a second; its close then waited for ever. Each long-lived
consumer of the process (the events input, the models replica, a cluster's balance)
is watched for it, and closed with a bound.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future

from confluent_kafka import Consumer, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import ListOffsetsResultInfo, OffsetSpec

from flows.runtime import metrics
from flows.runtime.settings import kafka_timeout_seconds

logger = logging.getLogger(__name__)

#: Polls further apart than this (seconds) are not "polled all along": how long a
#: consumer brought nothing is counted from the last such gap.
POLLED_ALONG_S = 1.0


class StallWatch:
    """Whether a consumer of `topic` is stalled: polled all along while the broker
    answered, it has brought nothing of a partition for `stall_after` seconds, and the
    broker says that partition holds records past where its reader is.

    Every sixth of `stall_after`, the partitions quiet for a third of it have their ends
    asked of the broker on another connection (`admin`; asynchronous: the reader never
    waits on it), at the isolation the consumers read at (committed). After an outage,
    a consumer is given `stall_after` from the broker's return (librdkafka waits up to
    10 s between its attempts to connect)."""

    def __init__(self, admin: AdminClient, topic: str, *, stall_after: float | None = None) -> None:
        self._admin, self.topic = admin, topic
        #: The Kafka timeout (WAYFINDER_KAFKA_TIMEOUT): an ask's, and (three) the wait's.
        self.timeout = kafka_timeout_seconds()
        self._stall_after = stall_after if stall_after is not None else 3 * self.timeout
        now = time.monotonic()
        #: The ends asked, on their way.
        self._asked: dict[TopicPartition, Future[ListOffsetsResultInfo]] | None = None
        self._ask_at = 0.0
        #: Since when polls have come at least every `POLLED_ALONG_S`, and the last one.
        self._polled_since = self._last_poll = now
        #: Since when the broker has answered the asks (None: the last one failed).
        self._answered_since: float | None = now
        #: When the consumer was last opened anew, and the partitions that one did not
        #: mend either (`wayfinder_consumer_stalled`).
        self._replaced_at: float | None = None
        self._stalled: list[int] = []

    def stalled(
        self, now: float, heard: Mapping[int, float], reached: Callable[[int], int]
    ) -> bool:
        """The consumer was polled `now`: whether its reader is to open it anew now (said
        and counted). `heard`: when a record of each partition was last read; `reached`:
        the offset its reader has read a partition up to (negative: not known)."""
        if not self._polled(now):
            return False
        behind = self._behind(now, heard, reached)
        if behind:
            self._replaced(behind, heard, now)
        return bool(behind)

    def _polled(self, now: float) -> bool:
        """The consumer was polled now: whether the watch has something to do (`_behind`)."""
        if now - self._last_poll > POLLED_ALONG_S:
            self._polled_since = now
        self._last_poll = now
        return self._asked is not None or now >= self._ask_at

    def silent_since(self, heard: float, now: float) -> float:
        """Since when a partition last heard from at `heard` has been silent, as the
        watch counts it (polled all along, the broker answering)."""
        answered = self._answered_since if self._answered_since is not None else now
        return max(heard, self._polled_since, answered)

    def _behind(
        self, now: float, heard: Mapping[int, float], reached: Callable[[int], int]
    ) -> dict[int, tuple[int, int]]:
        """The partitions the consumer is stalled on, {partition: (where its reader is,
        where the broker says it ends)}, from the answer to an earlier ask (empty until
        one is in)."""
        self._ask_at = now + max(1.0, self._stall_after / 6)
        if self._stalled and any(heard[i] > (self._replaced_at or now) for i in self._stalled):
            self._stalled = []
            metrics.CONSUMER_STALLED.labels(self.topic).set(0)
            logger.info("%s: its consumer reads again", self.topic)
        asked = self._asked
        if asked is None:
            quiet = [
                TopicPartition(self.topic, i)
                for i, at in heard.items()
                if now - self.silent_since(at, now) >= self._stall_after / 3
            ]
            if quiet:
                try:
                    self._asked = self._admin.list_offsets(
                        {part: OffsetSpec.latest() for part in quiet},
                        isolation_level=IsolationLevel.READ_COMMITTED,
                        request_timeout=self.timeout,
                    )
                except KafkaException:  # (the watch never stops its reader: asked again)
                    self._answered_since = None
            return {}
        if not all(future.done() for future in asked.values()):
            return {}
        self._asked = None
        behind: dict[int, tuple[int, int]] = {}
        for part, future in asked.items():
            try:
                end = future.result().offset
                at = reached(part.partition)
            except KafkaException:
                self._answered_since = None
                return {}  # the broker out of reach: nothing to judge the consumer by
            if self._answered_since is None:
                self._answered_since = now
            silent = now - self.silent_since(heard[part.partition], now)
            if silent >= self._stall_after and end > max(at, 0):
                behind[part.partition] = (at, end)
        return behind

    def _replaced(
        self, behind: dict[int, tuple[int, int]], heard: Mapping[int, float], now: float
    ) -> None:
        """Its reader opens the consumer anew for `behind`: said, counted, and, if the one
        opened last time has not read them either, the process is not alive (`/livez`)
        until one does."""
        parts = ", ".join(f"{i} (at {at} of {end})" for i, (at, end) in behind.items())
        last = self._replaced_at
        if last is not None and all(heard[i] < last for i in behind):
            if not self._stalled:
                self._stalled = list(behind)
                metrics.CONSUMER_STALLED.labels(self.topic).set(len(behind))
                logger.error(
                    "%s: partition(s) %s hold records that its consumer, opened anew, "
                    "still does not read: restart the process (it resumes from its "
                    "snapshots; /livez fails until then)",
                    self.topic,
                    parts,
                )
        else:
            logger.warning(
                "%s: its consumer brought nothing of partition(s) %s for %.0f s while the "
                "broker says they hold more; opening it anew where its reader is",
                self.topic,
                parts,
                now - min(self.silent_since(heard[i], now) for i in behind),
            )
        metrics.CONSUMERS_REPLACED.labels(self.topic).inc()
        self._replaced_at = self._polled_since = now


def close_within(consumer: Consumer, seconds: float, topic: str) -> bool:
    """Close a consumer of `topic`, waiting at most `seconds` (its close can wait on the
    broker for ever): whether it closed by then. Said if not."""

    def close() -> None:
        try:
            consumer.close()
        except (KafkaException, RuntimeError) as exc:
            logger.info("closing a consumer of %s: %s", topic, exc)

    closing = threading.Thread(target=close, name="wayfinder-consumer-close", daemon=True)
    closing.start()
    closing.join(seconds)
    if closing.is_alive() and seconds > 0:
        logger.warning(
            "%s: a consumer did not close within %.0f s (waiting on the broker); left to "
            "the process's exit",
            topic,
            seconds,
        )
    return not closing.is_alive()
