"""The events topic as the flow's input: one librdkafka consumer per partition.

bytewax's `KafkaSource` reads a partition and nothing else. The service needs more
of its input, so it has its own source on the same client library:
- where each partition is in event time, and whether it has caught up with its
  end: the watermark (`flows.dataflow.clock`) follows both;
- its offsets committed to a consumer group at every snapshot, where operators'
  lag tools look (bytewax's recovery stays the truth of where to resume);
- a stop that ends the input at the next batch (`flows.dataflow.stopping`);
- a bounded run that does not end while its own events are on their way back
  (`flows.dataflow.ledger`), and a replay on one process that goes in rounds, its
  own events handed back as they are delivered, as the embedded run's are;
- a start without snapshots that says where it starts, and that what an earlier
  run of the group sent will be sent again.
Read partition by partition (each on a worker of its own, with bytewax's names: a
recovery folder bytewax's source wrote resumes with this one),
the topic's partitions are read in no common order: a customer's login on one and
their device's browsing on another meet in whatever order they arrive, and two runs of
the same input differ. Ordered (`ordered`, the default), one reader takes every
partition and hands the events over merged in event-time order (ties: partition, then
offset), the same order every run, as the embedded run reads its file.
"""

import heapq
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from msgspec import Struct, json
from prometheus_client import Gauge

from flows.dataflow.clock import READER_GAP, EventClock
from flows.dataflow.delivery import LOOP_HEADER, ROUND_HEADER
from flows.dataflow.kafka_reach import ConsumerReach
from flows.dataflow.ledger import LoopLedger
from flows.dataflow.loopback import event_order, hold_after_logins
from flows.runtime import metrics
from flows.runtime.consumer_stall import StallWatch, close_within
from flows.runtime.kafka_metadata import end_offset, topic_metadata, transient
from flows.runtime.settings import kafka_timeout_seconds
from flows.runtime.signature import RecordSignature
from schemas.topics import EVENTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputPosition:
    """A reader's snapshot: the next offset of each of its partitions, and since when a
    run may have read past them (wall clock): what the flow published since then may
    be what a run resumed from here replays (`flows.runtime.published`).

    That is when the snapshot was taken, unless the run that took it was still
    replaying what a run before it had read and published: then, the time that run
    read back from (the snapshots it resumed from, or the start of a run in its folder
    that crashed before its first snapshot)."""

    offsets: dict[int, int]
    since: float
    #: A replay in rounds (`LoopLedger.rounds`): where its rounds were.
    rounds: "RoundPosition | None" = None


@dataclass(frozen=True)
class RoundPosition:
    """A replay in rounds at a snapshot: its lineage (a run, and those resumed from its
    snapshots), how many rounds it had handed over, and from which offset of each
    partition on the loop events of the last one were written. Those have not been
    handed back yet: a run resumed from here finds them there, and hands them first."""

    lineage: str
    handed: int
    written_from: dict[int, int]
    #: (partition, offset) of the records taken for the next round (after a login).
    held: tuple[tuple[int, int], ...] = ()

    def mark(self) -> bytes:
        """The round header of the last round's loop events."""
        return round_mark(self.lineage, self.handed)


def round_mark(lineage: str, number: int) -> bytes:
    return f"{lineage}:{number}".encode()


#: Resume state: the next offset of one partition, or (ordered) of each, as bytewax's
#: source and earlier releases wrote it; or a position.
Offsets = int | dict[int, int] | InputPosition | None


#: The snapshots a reader has taken once the run's first is in the recovery store for
#: sure (bytewax writes an epoch's snapshots as that epoch closes on every worker).
_DURABLE_AFTER = 3
#: How often (wall seconds) a reader looks for partitions added to the topic, and for
#: records it deleted before they were read.
_LOOK_EVERY = 5.0
#: How long (wall seconds) a partition not at its end may send nothing, with nothing of
#: it in hand, before its end is asked (librdkafka says an end once: one the reader
#: forgot is not said again).
_QUIET_S = 1.0


def published_since(snapshots: Iterable[object]) -> float | None:
    """Since when a run resumed from these reader snapshots may have published what it
    replays (None: written by a source that does not say)."""
    times = [s.since for s in snapshots if isinstance(s, InputPosition)]
    return min(times) if times else None


class KafkaInput(FixedPartitionedSource[Message, Offsets]):
    """The events topic, every partition: each on a worker of its own, or (`ordered`)
    all on one reader, merged in event-time order.

    `tail`: a service, which waits at the end of a partition for more; otherwise the
    input ends where each partition ends. `group`: the consumer group the offsets are
    committed to. `batch`: messages taken per poll and handed over per batch at most
    (WAYFINDER_KAFKA_BATCH). `replaying`: whether a resumed run is still repeating what
    a run before it published (`operators.published`) from `since` on, which its
    snapshots then carry on saying. `snapshotted`: called once the run's snapshots can
    be resumed from. `rounds`: a replay on one process that goes in rounds
    (`LoopLedger.rounds`). `stall_after`: seconds a consumer may bring nothing of a
    partition the broker says holds more before it is opened anew (default: three
    Kafka timeouts, WAYFINDER_KAFKA_TIMEOUT).
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
        ordered: bool = True,
        starting_offset: int = OFFSET_BEGINNING,
        resuming: bool = False,
        signature: RecordSignature | None = None,
        config: dict[str, str] | None = None,
        replaying: Callable[[], bool] = lambda: False,
        since: float | None = None,
        snapshotted: Callable[[], None] | None = None,
        batch: int,
        rounds: bool = False,
        stall_after: float | None = None,
    ) -> None:
        self._brokers = brokers
        self._timeout = kafka_timeout_seconds()
        self._stall_after = stall_after
        self._rounds = rounds
        self._replaying, self._since = replaying, since
        self._snapshotted = snapshotted
        self._batch = batch
        self._topic = topic
        self._clock = clock
        self._group = group
        self._ledger = ledger
        self._tail = tail
        self._ordered = ordered
        self._starting_offset = starting_offset
        self._resuming = resuming
        self._signature = signature
        self._config = dict(config or {})

    def partitions(self) -> list[int]:
        """The topic's partitions."""
        admin = AdminClient({"bootstrap.servers": self._brokers, **self._config})
        try:
            topic = topic_metadata(admin, self._topic, timeout=30)
        except KafkaException as exc:
            raise RuntimeError(f"Kafka topic {self._topic!r}: {exc.args[0]}") from None
        return sorted(topic.partitions)

    def list_parts(self) -> list[str]:
        if self._ordered:
            return [f"ordered-{self._topic}"]
        partitions = self.partitions()
        self._ledger.reading(partitions)
        return [f"{i}-{self._topic}" for i in partitions]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Offsets
    ) -> "KafkaInputPartition":
        kind, topic = for_part.split("-", 1)
        if topic != self._topic:
            raise RuntimeError(f"recovery snapshots of topic {topic!r}, not {self._topic!r}")
        reach = ConsumerReach()
        consumer = self._consumer(reach)
        listed = self.partitions()
        indexes = listed if kind == "ordered" else [int(kind)]
        resumed: dict[int, int] = {}
        rounds = None
        if isinstance(resume_state, InputPosition):
            resumed = resume_state.offsets
            rounds = resume_state.rounds
        elif isinstance(resume_state, int):
            resumed = {indexes[0]: resume_state}
        elif isinstance(resume_state, dict):
            resumed = resume_state
        starts: dict[int, int] = {}
        # (WAYFINDER_START_AT is for a start without snapshots: a partition that a
        # resume's snapshots lack was added since, and all it holds is new)
        resumes = resume_state is not None or self._resuming
        first = OFFSET_BEGINNING if resumes else self._starting_offset
        for index in indexes:
            if index not in resumed:
                part = TopicPartition(topic, index)
                _say_where_it_starts(consumer, part, first, self._group)
            starts[index] = resumed.get(index, first)
        # Everything a run before this one can have read lies before these offsets.
        since = self._since
        read_before = None
        if since is not None:
            read_before = {i: end_offset(consumer, topic, i, timeout=30) for i in indexes}
        last_round: list[Message] = []
        held: list[Message] = []
        if rounds is not None:
            last_round = _written_in(consumer, topic, rounds)
            held = _fetched(consumer, topic, rounds.held)
            logger.info(
                "%s: the replay resumes after round %d; %d loop events it wrote come first",
                topic,
                rounds.handed,
                len(last_round),
            )
        elif self._rounds:
            rounds = RoundPosition(uuid.uuid4().hex[:12], 0, {})
        return KafkaInputPartition(
            consumer,
            topic,
            starts,
            step_id=step_id,
            clock=self._clock,
            ledger=self._ledger,
            tail=self._tail,
            merged=kind == "ordered",
            since=since,
            read_before=read_before,
            snapshotted=self._snapshotted,
            replaying=self._replaying,
            batch=self._batch,
            rounds=rounds if self._rounds else None,
            last_round=last_round,
            held=held,
            listed=listed,
            signature=self._signature,
            reach=reach,
            metadata=AdminClient({"bootstrap.servers": self._brokers, **self._config}),
            anew=lambda: self._consumer(reach),
            stall_after=self._stall_after,
            close_within=self._timeout,
        )

    def _consumer(self, reach: ConsumerReach) -> Consumer:
        """A consumer of the topic (assigned by its reader), telling `reach` what it
        reaches."""
        return Consumer(
            {
                "bootstrap.servers": self._brokers,
                "group.id": self._group,
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                # An offset the topic no longer holds (retention): from the earliest it
                # does, never its end (the loss is said: `_say_lost`).
                "auto.offset.reset": "earliest",
                "statistics.interval.ms": 1000,  # (cached high offsets, for the lag)
                "stats_cb": reach.stats,  # (whether the cluster is reachable)
                **self._config,
            }
        )


def _written_in(consumer: Consumer, topic: str, rounds: RoundPosition) -> list[Message]:
    """The loop events of a replay's last round before a snapshot (one copy of each, a
    run resumed before may have written them again), in order of partition and offset."""
    mark = rounds.mark()
    ends = {p: end_offset(consumer, topic, p, timeout=30) for p in rounds.written_from}
    left = {p for p, start in rounds.written_from.items() if start < ends[p]}
    consumer.assign([TopicPartition(topic, p, rounds.written_from[p]) for p in left])
    found: dict[tuple[bytes | None, bytes | None], Message] = {}
    try:
        while left:
            for msg in consumer.consume(500, 1.0):
                error, index = msg.error(), msg.partition() or 0
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.discard(index)
                    elif not transient(error):
                        raise RuntimeError(f"consuming {topic}[{index}]: {error.str()}")
                    continue
                if (msg.offset() or 0) + 1 >= ends[index]:
                    left.discard(index)
                if _round_of(msg) == mark:
                    found.setdefault((msg.key(), msg.value()), msg)
    finally:
        consumer.unassign()
    return sorted(found.values(), key=_position)


def _fetched(consumer: Consumer, topic: str, positions: Sequence[tuple[int, int]]) -> list[Message]:
    """The records at these (partition, offset), in that order."""
    wanted = set(positions)
    starts: dict[int, int] = {}
    for partition, offset in positions:
        starts[partition] = min(starts.get(partition, offset), offset)
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    found: dict[tuple[int, int], Message] = {}
    try:
        while len(found) < len(wanted):
            for msg in consumer.consume(500, 1.0):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # At a partition's end: only another partition's may be missing.
                        index = msg.partition()
                        if any(p == index and (p, o) not in found for p, o in wanted):
                            raise RuntimeError(f"{topic}: a record held at a snapshot is gone")
                    elif not transient(error):
                        raise RuntimeError(f"consuming {topic}: {error.str()}")
                    continue
                position = _position(msg)
                if position in wanted:
                    found[position] = msg
    finally:
        consumer.unassign()
    return [found[position] for position in positions]


def _round_of(msg: Message) -> bytes | None:
    """The round header of a loop event written in a replay's round (else None)."""
    headers = msg.headers()
    if headers is None:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if name == ROUND_HEADER:
            return value if isinstance(value, bytes) else None
    return None


def _position(msg: Message) -> tuple[int, int]:
    return msg.partition() or 0, msg.offset() or 0


def _value(msg: Message) -> bytes:
    return msg.value() or b""


def _event_order(msg: Message) -> tuple[str, str]:
    return event_order(_value(msg))


class _EventTime(Struct):
    ts: datetime


_EVENT_TIME = json.Decoder(_EventTime)


def _event_time(msg: Message) -> float:
    """A message's event time, for the merge; a record that has none goes first (the
    decode step dead-letters it)."""
    try:
        return _EVENT_TIME.decode(msg.value() or b"").ts.timestamp()
    except Exception:
        return float("-inf")


class KafkaInputPartition(StatefulSourcePartition[Message, Offsets]):
    """Partitions of the events topic on one consumer, and what the watermark needs to
    know of each. `merged`: hand them over in event-time order (a partition with
    nothing buffered holds the others back until it has, or has caught up)."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        starts: dict[int, int],
        *,
        step_id: str,
        clock: EventClock,
        ledger: LoopLedger,
        tail: bool,
        merged: bool,
        since: float | None = None,
        read_before: dict[int, int] | None = None,
        snapshotted: Callable[[], None] | None = None,
        replaying: Callable[[], bool] = lambda: False,
        batch: int,
        rounds: RoundPosition | None = None,
        last_round: list[Message] | None = None,
        held: list[Message] | None = None,
        listed: Iterable[int] | None = None,
        signature: RecordSignature | None = None,
        reach: ConsumerReach | None = None,
        metadata: AdminClient | None = None,
        anew: Callable[[], Consumer] | None = None,
        stall_after: float | None = None,
        close_within: float = 10.0,
    ) -> None:
        self._consumer = consumer
        #: A consumer like it, to replace one that brings nothing while the broker says
        #: there is more (`_stall`; None: never replaced).
        self._anew = anew
        self._close_within = close_within
        #: Where the topic's partitions are looked up (`_added`), on a connection of its
        #: own: the consumer's metadata requests queue behind its fetch on the broker's
        #: connection, which waits up to fetch.wait.max.ms (500 ms) for records; asked of
        #: the consumer every `_LOOK_EVERY` s, that held the worker half a second each
        #: time (a tenth of a bounded run's time). None: the consumer's (tests).
        self._metadata = metadata
        self._signature = signature
        self._said_forged = False
        #: Whether the consumer reaches the cluster, as last seen; and (after it did not)
        #: whether where each partition ends is still to be asked.
        self._reach = reach if reach is not None else ConsumerReach()
        self._reached = True
        self._ask_ends_at = 0.0
        self._last_poll = time.monotonic()
        #: A replay in rounds: where they are, and the last round's loop events found
        #: on the topic at a resume (handed over first).
        self._rounds = rounds
        self._last_round = list(last_round or [])
        #: (`rounds`) Records taken from the partitions that wait for the next round.
        self._held: list[Message] = list(held or [])
        self._batch = batch
        self._since, self._replaying = since, replaying
        self._read_before = read_before
        self._snapshotted = snapshotted
        self._snapshots = 0
        self._topic = topic
        self._clock = clock
        self._ledger = ledger
        self._tail = tail
        self._merged = merged
        # Per partition read (`_reads`):
        #: where it was first read from (an offset, or a logical one);
        self._starts: dict[int, int] = {}
        #: the next offset to hand over (None: not known before the first);
        self._next: dict[int, int | None] = {}
        #: the offset after the last record read from it (None: none yet);
        self._fetched: dict[int, int | None] = {}
        self._buffered: dict[int, deque[tuple[float, int, Message]]] = {}
        self._at_end: dict[int, bool] = {}
        #: when (monotonic) a record of it was last read;
        self._heard: dict[int, float] = {}
        #: where it ended when last at its end (past a transaction's markers, which no
        #: record reaches), or later where the broker last said it ends: librdkafka's
        #: word that it ends before that is stale;
        self._end_at: dict[int, int] = {}
        #: and its name on the clock (each partition's word is as fresh as its polls).
        self._parts: list[tuple[str, int]] = []
        #: what the clock was last told of it: caught up or not;
        self._told_caught_up: dict[int, bool] = {}
        #: bytewax's own lag metric, which its source sets: dashboards know it;
        self._lag: dict[int, Gauge] = {}
        #: whether it has been read to its end since the start (readiness).
        self._caught_up_once: dict[int, Gauge] = {}
        self._step_id = step_id
        for index, offset in starts.items():
            self._reads(index, offset)
        consumer.assign([TopicPartition(topic, i, offset) for i, offset in starts.items()])
        #: When (monotonic) to look again for partitions added, records lost.
        self._look_at = time.monotonic() + _LOOK_EVERY
        #: (partition, offset expected, offset read) of each gap in what was read.
        self._gaps: list[tuple[int, int, int]] = []
        #: The topic's partitions when the flow was built (those its readers read).
        self._listed = frozenset(listed if listed is not None else starts)
        self._said_unread = False
        self._stall = (
            StallWatch(metadata, topic, stall_after=stall_after)
            if anew is not None and metadata is not None
            else None
        )

    def _reads(self, index: int, offset: int) -> None:
        """Read partition `index` from `offset` on (a negative one: where the consumer
        starts): what the watermark, the ledger and the gauges keep of it."""
        self._starts[index] = offset
        self._next[index] = offset if offset >= 0 else None
        self._fetched[index] = offset if offset >= 0 else None
        self._buffered[index] = deque()
        self._at_end[index] = False
        self._heard[index] = time.monotonic()
        self._told_caught_up[index] = False
        self._lag[index] = BYTEWAX_CONSUMER_LAG_GAUGE.labels(
            step_id=self._step_id, topic=self._topic, partition=index
        )
        self._caught_up_once[index] = metrics.INPUT_CAUGHT_UP.labels(
            topic=self._topic, partition=str(index)
        )
        self._caught_up_once[index].set(0)
        self._clock.register((self._topic, index))
        self._parts.append((self._topic, index))
        self._ledger.read(0, index, max(offset, 0))

    def _now_and_then(self, *, now: bool = False) -> None:
        """Every `_LOOK_EVERY` s (or `now`): partitions added to the topic, records it
        deleted before they were read."""
        if not now and time.monotonic() < self._look_at:
            return
        self._look_at = time.monotonic() + _LOOK_EVERY
        self._added()
        self._say_lost()

    def _signed(self, msg: Message) -> bool:
        """Whether a record carries this deployment's signature (no signature known: a
        reader of tests, which takes any)."""
        signature = self._signature
        return signature is None or signature.holds(
            EVENTS, msg.key(), msg.value() or b"", msg.headers()
        )

    def _say_lost(self) -> None:
        """Records the topic deleted (its retention, or a deletion of records) before
        this reader got to them: the consumer goes on from the earliest it still holds
        (never from its end: what is left is read), and the loss is said and counted.
        A gap in the offsets alone is no loss (a transaction's markers take offsets): the
        records below the partition's first offset now are."""
        gaps, self._gaps = self._gaps, []
        for index, expected, got in gaps:
            try:
                low, _high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, index), timeout=1
                )
            except KafkaException:
                self._gaps.append((index, expected, got))  # (asked again next time)
                continue
            lost = min(low, got) - expected
            if lost > 0:
                metrics.INPUT_RECORDS_LOST.labels(self._topic).inc(lost)
                logger.error(
                    "%s[%d]: %d record(s) (offsets %d to %d) were deleted from the topic "
                    "(retention) before they were read; reading on from offset %d",
                    self._topic,
                    index,
                    lost,
                    expected,
                    expected + lost - 1,
                    got,
                )

    def _added(self) -> None:
        """Partitions added to the topic since the reader started. Merged, it reads them
        from their start, in event-time order with the others: keyed records (the flow's
        own loop events too) land on them as soon as they exist. A reader of one
        partition cannot take another (its partitions were fixed when the flow was
        built): the process then says it needs a restart
        (`wayfinder_input_partitions_unread`; `/livez` fails), which resumes with every
        partition, the new ones from their start."""
        try:
            client = self._metadata if self._metadata is not None else self._consumer
            found = client.list_topics(self._topic, timeout=1).topics[self._topic]
        except (KafkaException, KeyError):
            return  # (unreachable for now: looked at again next time)
        if found.error is not None:
            return
        if not self._merged:
            unread = len(set(found.partitions) - self._listed)
            if unread and not self._said_unread:
                self._said_unread = True
                logger.error(
                    "%s: %d partition(s) added since the flow started, which this reader "
                    "of single partitions cannot take: restart the process (it resumes "
                    "with every partition, the new ones from their start)",
                    self._topic,
                    unread,
                )
            metrics.INPUT_PARTITIONS_UNREAD.labels(self._topic).set(unread)
            return
        added = sorted(i for i in found.partitions if i not in self._next)
        if not added:
            return
        for index in added:  # (from offset 0: a snapshot from now on says so)
            self._reads(index, 0)
        self._consumer.incremental_assign([TopicPartition(self._topic, i, 0) for i in added])
        logger.warning(
            "%s: partition(s) %s added to the topic; read from their start",
            self._topic,
            ", ".join(map(str, added)),
        )

    def next_batch(self) -> list[Message]:
        if self._clock.stop.requested:
            raise StopIteration  # a clean stop: the flow finishes what it holds
        self._poll()
        if self._rounds is not None:
            if not self._ledger.round_over():
                return []  # the round in hand is still folding, writing or learning
            back = self._last_round or self._ledger.returned()
            if back:
                self._last_round = []
                back.sort(key=_event_order)
                self._start_round()
                return self._handed_back(back)
            # As embedded: a customer's records after their login wait a round, for
            # the device's answer; so does what follows under their ids.
            batch, self._held = hold_after_logins(self._held or self._take(), _value)
            for msg in self._held:  # taken: what is read next comes after them
                part, after = _position(msg)
                self._next[part] = max(self._next[part] or 0, after + 1)
        elif self._last_round:
            # A run resumed from a replay's snapshots, not in rounds itself: what the
            # last round left comes first.
            back, self._last_round = self._last_round, []
            return self._handed_back(back)
        else:
            batch, self._held = self._held or self._take(), []
        if not batch and not self._tail and self._ended():
            # A bounded run ends at the partitions' end, once nothing of its own is on
            # its way back to them.
            raise StopIteration
        if batch and self._rounds is not None:
            self._start_round()
        handed: dict[int, int] = {}
        loop = 0
        for msg in batch:
            headers = msg.headers()
            if headers is not None and LOOP_HEADER in headers and self._signed(msg):
                loop += 1  # (the flow's own: anyone else's header counts for nothing)
            index = msg.partition() or 0
            handed[index] = handed.get(index, 0) + 1
            offset = msg.offset()
            if offset is not None:
                self._next[index] = max(self._next[index] or 0, offset + 1)
        for index, n in handed.items():
            self._past_markers(index)
            self._ledger.read(n, index, self._next[index] or 0)
        # (after the records handed over are counted: never at its end with them unsaid)
        self._ledger.at_end(
            {i: at_end and not self._buffered[i] for i, at_end in self._at_end.items()}
        )
        if loop:
            metrics.LOOP_EVENTS.inc(loop)  # (the summary's events are the others)
        return batch

    def _handed_back(self, loop_events: list[Message]) -> list[Message]:
        self._ledger.read_back(len(loop_events))
        metrics.LOOP_EVENTS.inc(len(loop_events))
        return loop_events

    def _start_round(self) -> None:
        """Hand over a round: its loop events will carry its mark, and land after the
        loop events delivered so far (or, on a partition with none yet, after where
        its reader is)."""
        rounds = self._rounds
        assert rounds is not None
        delivered = self._ledger.delivered_up_to()
        written_from = dict(rounds.written_from)
        for index, offset in self._next.items():
            start = max(delivered.get(index, 0), offset or 0)
            written_from[index] = max(written_from.get(index, 0), start)
        self._rounds = RoundPosition(rounds.lineage, rounds.handed + 1, written_from)
        self._ledger.start_round(self._rounds.mark())

    def _poll(self) -> None:
        now = time.monotonic()
        if now - self._last_poll > READER_GAP and self._reached:
            # Paused (stopped, a frozen machine) or busy that long: what was written
            # meanwhile is not known, and each partition's end is asked anew.
            logger.info(
                "%s: no poll for %.0f s; asking where each partition ends",
                self._topic,
                now - self._last_poll,
            )
            self._lost_reach()
        self._last_poll = now
        self._now_and_then()
        if self._stall is not None and self._stall.stalled(now, self._heard, self._reached_in):
            self._reopen()
        buffered = self._buffered
        caught_up: set[int] = set()
        fresh: set[int] = set()
        fetched, heard = self._fetched, self._heard
        for msg in self._consumer.consume(self._batch, 0.001):
            error = msg.error()
            index = msg.partition() or 0
            offset = 0
            if error is None:
                heard[index] = now
                offset = msg.offset() or 0
                expected = fetched[index]
                if expected is not None and offset > expected:
                    self._gaps.append((index, expected, offset))
                fetched[index] = offset + 1
            if error is None and msg.headers() is not None and _round_of(msg) is not None:
                if self._signed(msg):
                    # A loop event of a replay's round: handed back as it was delivered
                    # (or at a resume, from where it was written); else a copy written
                    # again.
                    if not buffered[index]:
                        self._next[index] = max(self._next[index] or 0, offset + 1)
                    continue
                # A round's header on a record this deployment did not write: read as any
                # other (never skipped unseen), and counted.
                metrics.UNSIGNED_RECORDS.labels(EVENTS).inc()
                if not self._said_forged:
                    self._said_forged = True
                    logger.warning(
                        "%s[%d] offset %d: a round's header without this deployment's "
                        "signature (another producer's); read as any other record",
                        self._topic,
                        index,
                        offset,
                    )
            if error is None:
                key = _event_time(msg) if self._merged else 0.0
                buffered[index].append((key, offset, msg))
                fresh.add(index)
                caught_up.discard(index)
            elif error.code() == KafkaError._PARTITION_EOF:
                end = msg.offset() or 0
                # Where the reader is (past any transaction's markers), a partition with
                # no record read yet too. Said before an end asked since, or before the
                # reader lost its reach (a pause: librdkafka queued it before the process
                # froze), it is not where the partition ends now: that is asked of the
                # broker (`_follow_reach`).
                fetched[index] = max(fetched[index] or 0, end)
                if self._reached and end >= self._end_at.get(index, 0):
                    caught_up.add(index)
                    self._end_at[index] = end
            elif transient(error):  # librdkafka asks again by itself
                logger.info("consuming %s[%d]: %s", self._topic, index, error.str())
            else:  # the client's, not a record's, and asking again will not mend it
                raise RuntimeError(f"consuming {self._topic}[{index}]: {error.str()}")
        for index in fresh - caught_up:
            if self._reached and self._read_to_end(index):
                caught_up.add(index)
            else:
                self._at_end[index] = False
        for index in caught_up:
            self._at_end[index] = True
            self._caught_up_once[index].set(1)
            self._past_markers(index)
        self._follow_reach()
        # A partition at its end is caught up only once the flow's own events are back:
        # a login's merge still on its way is input to come, at an earlier event time,
        # and a watermark gone on to the wall clock would give the customer up for it.
        settled = self._ledger.even()
        for index, at_end in self._at_end.items():
            if (at_end and settled) != self._told_caught_up[index]:
                self._told_caught_up[index] = at_end and settled
                self._clock.caught_up((self._topic, index), at_end=at_end and settled)
        # (as of the poll's start: a process frozen during it wakes with what it found
        # before, and the clock must not take that for news)
        self._clock.polled(self._parts, now)

    def _read_to_end(self, index: int) -> bool:
        """Whether what was read of a partition reaches where the fetch that brought it
        said the partition ends: at its end now, not once librdkafka says so, which it
        does only after a fetch that brings nothing, and the broker holds such a fetch
        up to fetch.wait.max.ms (500 ms). A merged reader waited that long after each
        record the flow wrote back to a partition: with two processes, six polls in seven
        handed nothing over."""
        part = TopicPartition(self._topic, index)
        try:
            _low, high = self._consumer.get_watermark_offsets(part, cached=True)
        except KafkaException:
            return False
        fetched = self._fetched[index]
        if fetched is None or high < 0 or fetched < max(high, self._end_at.get(index, 0)):
            return False
        self._end_at[index] = max(self._end_at.get(index, 0), high)
        return True

    def _past_markers(self, index: int) -> None:
        """A partition at its end with nothing of it in hand: the next offset to hand
        over is its end, past any transaction's markers after its last record (else
        snapshots and the group's offsets stop short of them, lag tools say one behind,
        and a resumed run takes itself for replaying for ever)."""
        if self._at_end[index] and not self._buffered[index]:
            self._next[index] = max(self._next[index] or 0, self._end_at.get(index, 0))

    def _lost_reach(self) -> None:
        """Nothing known of the partitions' ends: none is at its end until asked."""
        self._reached = False
        self._ask_ends_at = 0.0
        for index in self._at_end:
            self._at_end[index] = False

    def _follow_reach(self) -> None:
        """While the consumer reaches no broker, nothing is known of what the topic
        holds: no partition is at its end, so the watermark does not follow the wall
        clock (what producers wrote meanwhile is read, on their return, as a backlog, in
        event time; their customers' deadlines are not passed by the wall clock before
        it is). Back in reach, a partition is at its end again once its end, asked anew,
        is where the reader is (librdkafka says an end once, when it reaches it).

        So is any partition not at its end that has sent nothing for `_QUIET_S`, with
        nothing of it in hand: whatever made the reader forget where it ends, a merged
        reader never waits on it for ever, nor does the watermark."""
        if not self._reach.up:
            if self._reached:
                self._lost_reach()
            return
        now = time.monotonic()
        if now < self._ask_ends_at:
            return
        asked = [
            index
            for index, at_end in self._at_end.items()
            if not at_end
            and (
                not self._reached
                or (not self._buffered[index] and now - self._heard[index] >= _QUIET_S)
            )
        ]
        self._ask_ends_at = now + 1.0  # (asked once a second at most)
        left = 0
        for index in asked:
            part = TopicPartition(self._topic, index)
            try:
                # Back in reach, the broker is asked; a quiet partition's end is the one
                # the consumer's last fetch brought (asked of the broker, it would wait
                # behind that fetch, up to half a second, with the worker).
                low, high = self._consumer.get_watermark_offsets(
                    part, timeout=1, cached=self._reached
                )
                reached = self._reached_in(index)
            except KafkaException:
                left += 1
                continue
            if high < 0:  # (no fetch has brought it yet)
                left += 1
                continue
            # The end the consumer's last fetch brought may be older than one known (a
            # fetch from before a pause; the broker said more since): never below it.
            high = self._end_at[index] = max(self._end_at.get(index, 0), high)
            if (reached >= 0 and reached >= high) or (reached < 0 and high == low):
                self._at_end[index] = True
                self._caught_up_once[index].set(1)
                self._past_markers(index)
            elif reached < 0:
                left += 1  # (not known yet where it is: asked again)
        if not self._reached:
            self._reached = left == 0

    def _take(self) -> list[Message]:
        """What may be handed over now: everything buffered, or (merged) the events in
        event-time order as far as no partition that may still send earlier ones is
        empty."""
        buffered = self._buffered
        if not self._merged:
            everything = [msg for queue in buffered.values() for _key, _offset, msg in queue]
            for queue in buffered.values():
                queue.clear()
            return everything
        if any(not queue and not self._at_end[i] for i, queue in buffered.items()):
            return []  # that partition's next event may come before everyone's
        heads = [(queue[0][0], i, queue[0][1]) for i, queue in buffered.items() if queue]
        heapq.heapify(heads)
        taken: list[tuple[int, tuple[float, int, Message]]] = []
        while heads and len(taken) < self._batch:
            _key, index, _offset = heapq.heappop(heads)
            queue = buffered[index]
            taken.append((index, queue.popleft()))
            if queue:
                heapq.heappush(heads, (queue[0][0], index, queue[0][1]))
            elif not self._at_end[index]:
                break  # its next may be earlier than the others' heads
        if len(taken) < self._batch and not self._tail and not all(self._at_end.values()):
            # A replay hands over whole batches: a short one would end where this poll
            # happened to, and what the models had learned by each decision with it.
            for index, item in reversed(taken):
                buffered[index].appendleft(item)
            return []
        return [msg for _index, (_key, _offset, msg) in taken]

    def _ended(self) -> bool:
        ended = (
            all(self._at_end.values())
            and not any(self._buffered.values())
            and not self._held
            and self._ledger.even()
            and self._ledger.everywhere_at_end()
        )
        if ended:
            count = len(self._next)
            self._now_and_then(now=True)  # (a partition added meanwhile is read first)
            return len(self._next) == count
        return ended

    def next_awake(self) -> datetime | None:
        return None

    def snapshot(self) -> Offsets:
        committed = [
            TopicPartition(self._topic, i, offset)
            for i, offset in self._next.items()
            if offset is not None
        ]
        for part in committed:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, part.partition), cached=True
                )
            except KafkaException:  # a leader moving: the lag waits for the next snapshot
                continue
            if high >= 0:
                self._lag[part.partition].set(max(high - part.offset, 0))
        if committed:
            # Where lag tools look; recovery, not the group, says where a run resumes.
            self._consumer.commit(offsets=committed, asynchronous=True)
        offsets = {i: offset for i, offset in self._next.items() if offset is not None}
        self._snapshots += 1
        if self._snapshots == _DURABLE_AFTER and self._snapshotted is not None:
            self._snapshotted()
        now = time.time()
        since = self._since if self._since is not None and self._still_replaying() else now
        rounds = self._rounds
        if rounds is not None:
            held = tuple(_position(msg) for msg in self._held)
            rounds = RoundPosition(rounds.lineage, rounds.handed, rounds.written_from, held)
        return InputPosition(offsets, min(since, now), rounds)

    def _still_replaying(self) -> bool:
        """Whether the replay may still come to what a run before it published: the flow
        says so, and the input has not yet gone past all that run could have read."""
        if not self._replaying():
            return False
        ends = self._read_before
        return ends is None or any((self._next.get(i) or 0) < end for i, end in ends.items())

    def _reopen(self) -> None:
        """A consumer that brings nothing while the broker says its partitions hold more
        (`StallWatch`) is opened anew, at the offsets the reader is at (after what it
        holds: nothing is read twice or skipped); the old one is closed on a thread of
        its own. Ends are asked anew."""
        assert self._anew is not None  # (a reader that has none has no watch)
        old, self._consumer = self._consumer, self._anew()
        self._consumer.assign(
            [
                TopicPartition(self._topic, i, fetched if fetched is not None else self._starts[i])
                for i, fetched in self._fetched.items()
            ]
        )
        self._lost_reach()
        close_within(old, 0.0, self._topic)

    def _reached_in(self, index: int) -> int:
        """Where the reader has read a partition to (negative: not known): past its last
        record, and past the markers of transactions after it, which only the consumer's
        position passes."""
        fetched = self._fetched[index]
        position = self._consumer.position([TopicPartition(self._topic, index)])[0].offset
        return max(fetched if fetched is not None else -1, position)

    def close(self) -> None:
        # (recovery, not the group's offsets, says where a run resumes)
        close_within(self._consumer, self._close_within, self._topic)


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
