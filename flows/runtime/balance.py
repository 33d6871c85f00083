"""When a cluster's bounded run is done: every process's balance of its loop, on a
topic of its own.

A record one process reads is folded wherever its customer lives, and a loop event
(a device's answer to a login, a forward, a device's erasure) lands on the partition
of its key, which another process may read. No process alone can tell that nothing
is left in flight. So each publishes its counts several times a second, and reads
everyone's: records that entered the flow and records folded; loop events emitted
and loop events delivered (or dead-lettered); per partition, how far its readers
have handed records over, how far its loop events reach, and whether that partition
is read to its end.

The cluster is done when the sums balance, every partition is read to its end and
past every loop event delivered to it, in two rounds of reports with nothing changed
in between (the four-counter method of termination detection): the counts only grow,
so a process whose counts are the same in two reports had them all along in between;
and each process counted its later report after reading everyone's earlier one (its
report says how far it had read the topic), so there was a moment when every
process's counts were those, and nothing was in flight. Nothing starts again then: a
bounded run reads no new input.
"""

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping

import msgspec
from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from flows.runtime import metrics
from flows.runtime.consumer_stall import StallWatch, close_within
from flows.runtime.kafka_metadata import transient
from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from schemas.topics import BALANCE

logger = logging.getLogger(__name__)

#: Seconds between two reports of one process.
REPORT_EVERY = 0.2


class LoopCounts(msgspec.Struct, kw_only=True, frozen=True):
    """One process's counts (each only grows, but `at_end`, which changes only with
    them: a partition read to its end gets more to read only as records are handed
    over)."""

    #: Records handed to the flow (read, or split in two by the decoder), per consumer.
    entered: int = 0
    #: Records folded by a customer step (or dead-lettered before reaching any).
    settled: int = 0
    #: Loop events the customer steps emitted.
    emitted: int = 0
    #: Loop events delivered to the events topic, or dead-lettered.
    resolved: int = 0
    #: Partition → the next offset this process's reader hands over.
    read: dict[int, int] = {}
    #: Partition → the offset after the last loop event this process delivered there.
    delivered: dict[int, int] = {}
    #: Partitions this process reads that are at their end, with nothing held back.
    at_end: tuple[int, ...] = ()


class BalanceReport(msgspec.Struct, kw_only=True, frozen=True):
    """What one process says of itself on the balance topic."""

    group: str
    process: int
    processes: int
    #: The offset of the balance topic this process had read up to when it counted.
    seen: int
    counts: LoopCounts


_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(BalanceReport)


class BalanceBook:
    """The latest report of each process, and since when its counts have not changed
    (the offset of the first report that said them)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._latest: dict[int, BalanceReport] = {}
        self._since: dict[int, int] = {}

    def receive(self, offset: int, report: BalanceReport) -> None:
        before = self._latest.get(report.process)
        if before is None or before.counts != report.counts:
            self._since[report.process] = offset
        self._latest[report.process] = report

    def latest(self, process: int) -> BalanceReport | None:
        return self._latest.get(process)

    def done(self, partitions: Collection[int]) -> bool:
        """Whether every process reported the same counts twice, the later after
        reading everyone's earlier, and those counts say that nothing is in flight."""
        latest = self._latest
        if len(latest) < self.processes:
            return False
        seen = min(report.seen for report in latest.values())
        if any(since >= seen for since in self._since.values()):
            return False
        return nothing_in_flight([r.counts for r in latest.values()], partitions)


def nothing_in_flight(counts: Collection[LoopCounts], partitions: Collection[int]) -> bool:
    """Whether the cluster's counts balance: every record folded, every loop event
    delivered and read back, every partition read to its end."""
    if sum(c.entered for c in counts) != sum(c.settled for c in counts):
        return False
    if sum(c.emitted for c in counts) != sum(c.resolved for c in counts):
        return False
    at_end = {p for c in counts for p in c.at_end}
    if not set(partitions) <= at_end:
        return False
    read: dict[int, int] = {}
    for c in counts:
        for p, offset in c.read.items():
            read[p] = max(read.get(p, 0), offset)
    return all(read.get(p, 0) >= offset for c in counts for p, offset in c.delivered.items())


class ClusterBalance:
    """This process's side of the balance topic: a daemon thread reports `counts()`
    every `REPORT_EVERY` seconds and reads every process's reports.

    `partitions`: the events topic's, each of which some process must read to its end.
    """

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        *,
        group: str,
        process: int,
        processes: int,
        partitions: Collection[int],
        signature: RecordSignature,
        counts: Callable[[], LoopCounts],
    ) -> None:
        self._config = dict(config)
        self._topic = topic
        self._group, self._process = group, process
        self._partitions = tuple(partitions)
        self._signature = signature
        self._counts = counts
        self._book = BalanceBook(processes)
        #: This process's counts in a round that found the cluster done (None: not so).
        self._done_at: LoopCounts | None = None
        self._stop = threading.Event()
        #: The offset after the last report read (0: none yet).
        self._seen = 0

    def start(self) -> None:
        # From now on: a report from before this run started is not this run's.
        consumer = self._consumer(OFFSET_END)
        producer = Producer(self._config)
        stall = StallWatch(AdminClient(dict(self._config)), self._topic)
        # A daemon for the process's life (or until `stop`): a report matters for
        # seconds, and nothing is lost with the last ones.
        threading.Thread(
            target=self._follow,
            args=(consumer, producer, stall),
            name="wayfinder-balance",
            daemon=True,
        ).start()

    def _consumer(self, offset: int) -> Consumer:
        """A consumer of the balance topic from `offset`."""
        consumer = Consumer(
            {**self._config, "group.id": f"{self._group}.balance", "enable.auto.commit": "false"}
        )
        consumer.assign([TopicPartition(self._topic, 0, offset)])
        return consumer

    def stop(self) -> None:
        """Report and read no more (the thread ends within a round)."""
        self._stop.set()

    def done(self) -> bool:
        """Whether the cluster was found done, and this process's counts have not
        changed since."""
        done_at = self._done_at
        return done_at is not None and self._counts() == done_at

    def _follow(self, consumer: Consumer, producer: Producer, stall: StallWatch) -> None:
        """Read the others' reports and send this process's, for the process's life. A
        round that fails (the producer's queue full, a client error) is said once by
        kind and the next goes on: were this thread to end, the cluster would never be
        found done, and a bounded run would never end. A consumer that brings nothing
        while the topic holds more (`StallWatch`: its own reports come back every round)
        is opened anew where it was."""
        last_report = 0.0
        key = f"{self._group}/{self._process}".encode()
        said: set[type[BaseException]] = set()
        heard = {0: time.monotonic()}
        while not self._stop.is_set():
            try:
                messages = consumer.consume(500, REPORT_EVERY / 2)
                now = time.monotonic()
                for msg in messages:
                    self._seen = max(self._seen, self._take(msg))
                if any(msg.error() is None for msg in messages):
                    heard[0] = now
                self._done_at = self._settled()
                if time.monotonic() - last_report >= REPORT_EVERY:
                    self._report(producer, key, self._seen)
                    last_report = time.monotonic()
                if stall.stalled(now, heard, self._read_to):
                    old, consumer = consumer, self._consumer(self._seen or OFFSET_END)
                    close_within(old, 0.0, self._topic)
            except Exception as exc:
                if type(exc) not in said:
                    said.add(type(exc))
                    logger.exception("cluster balance on %s: a round failed; going on", self._topic)
                self._stop.wait(REPORT_EVERY / 2)
        close_within(consumer, 1.0, self._topic)
        producer.flush(1.0)

    def _read_to(self, _partition: int) -> int:
        """The offset after the last report read (-1: none yet)."""
        return self._seen or -1

    def _report(self, producer: Producer, key: bytes, seen: int) -> None:
        report = BalanceReport(
            group=self._group,
            process=self._process,
            processes=self._book.processes,
            seen=seen,
            counts=self._counts(),
        )
        value = _ENCODE.encode(report)
        signed = self._signature.of(BALANCE, key, value)
        producer.produce(self._topic, value=value, key=key, headers=[(SIGNATURE_HEADER, signed)])
        producer.poll(0)

    def _take(self, msg: Message) -> int:
        """Read one record of the balance topic; the offset after it."""
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF and not transient(error):
                logger.warning("reading %s: %s", self._topic, error.str())
            return 0
        offset = msg.offset() or 0
        value = msg.value() or b""
        if not self._signature.holds(BALANCE, msg.key(), value, msg.headers()):
            metrics.UNSIGNED_RECORDS.labels(BALANCE).inc()
            return offset + 1
        try:
            report = _DECODE.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return offset + 1
        mine = report.group == self._group and report.processes == self._book.processes
        if mine and 0 <= report.process < report.processes:
            self._book.receive(offset, report)
        return offset + 1

    def _settled(self) -> LoopCounts | None:
        if not self._book.done(self._partitions):
            return None
        own = self._book.latest(self._process)
        return own.counts if own is not None else None
