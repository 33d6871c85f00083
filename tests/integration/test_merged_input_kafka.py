"""The merged reader of the events topic on the real broker: it hands a record over only
when no partition can still send an earlier one, so it must never wait on a partition
whose end it has already read. librdkafka says a partition's end once, when the reader
gets there; whatever makes the reader forget it (the cluster out of reach, a pause
longer than `READER_GAP`) must not leave that partition waited on for ever; nor must a
consumer that, polled, brings nothing while the broker says there is more."""

import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from flows.dataflow.clock import EventClock
from flows.dataflow.kafka_input import KafkaInput, KafkaInputPartition
from flows.dataflow.ledger import LoopLedger
from flows.runtime.metrics import CONSUMER_STALLED
from flows.runtime.metrics_endpoint import not_alive
from flows.runtime.settings import KafkaSettings
from tests.kafka_io import produce

pytestmark = pytest.mark.integration


def _produce(
    settings: KafkaSettings, partition: int, times: list[float], *, transaction: bool = False
) -> None:
    """Records of these event times to one partition, in that order (`transaction`: in
    one, whose commit marker then ends the partition)."""
    records = [(None, json.dumps({"ts": ts, "customer_id": "c"}).encode()) for ts in times]
    writer = f"{settings.topic_prefix}writer" if transaction else None
    produce(settings, "events", records, partition=partition, transactional_id=writer)


def _merged_reader(
    kafka: KafkaSettings,
    batch: int,
    config: dict[str, str] | None = None,
    tail: bool = True,
    stall_after: float | None = None,
) -> KafkaInputPartition:
    """A reader of every partition of the events topic, merged, tailing it (or bounded:
    whole batches only, as a replay)."""
    source = KafkaInput(
        kafka.bootstrap_servers,
        kafka.topic("events"),
        clock=EventClock(),
        group=f"{kafka.topic_prefix}merged",
        ledger=LoopLedger(),
        batch=batch,
        config=config,
        tail=tail,
        stall_after=stall_after,
    )
    (name,) = source.list_parts()
    return source.build_part("input", name, None)


def _handed(part: KafkaInputPartition, count: int, timeout: float = 20) -> list[float]:
    """The event times of the next `count` records handed over (fewer: it waited)."""
    handed: list[float] = []
    deadline = time.monotonic() + timeout
    while len(handed) < count and time.monotonic() < deadline:
        handed += [json.loads(msg.value() or b"")["ts"] for msg in part.next_batch()]
        time.sleep(0.02)
    return handed


def _read_to_the_ends(part: KafkaInputPartition) -> None:
    """Poll until every partition's end is said, handing nothing over."""
    deadline = time.monotonic() + 20
    while not all(part._at_end.values()) and time.monotonic() < deadline:
        part._poll()
    assert all(part._at_end.values())


def test_a_merged_reader_goes_on_once_it_has_read_what_a_partition_held(
    kafka: KafkaSettings,
) -> None:
    """A bounded reader at the ends of the empty partitions; a record is written to
    partition 0, then a later one to partition 1. Both are handed over, in event-time
    order, as soon as they are read. librdkafka says a partition's end only after a fetch
    that brings nothing, which the broker holds up to fetch.wait.max.ms (six seconds
    here): before, the reader waited that long with a record in hand, as a cluster's
    reader did after each record the flow wrote back (500 ms by default).

    (Written in event-time order: a record read before another partition's earlier one
    is handed over first, as the partitions' ends were when it was read.)"""
    part = _merged_reader(kafka, batch=2, config={"fetch.wait.max.ms": "6000"}, tail=False)
    try:
        _read_to_the_ends(part)
        _produce(kafka, 0, [1.0])
        _produce(kafka, 1, [2.0])
        assert _handed(part, 2, timeout=3.0) == [1.0, 2.0]
    finally:
        part.close()


@pytest.mark.parametrize("transaction", [False, True], ids=["records", "a-transaction"])
def test_a_merged_reader_that_forgot_where_a_partition_ends_asks_and_reads_on(
    kafka: KafkaSettings, transaction: bool
) -> None:
    """Three records on partition 0, all read (and its end said) while the first is
    handed over; the reader then forgets every end (as after a pause or an outage) with
    two of them still in hand. It hands them over, and a record written later on
    partition 1 after them: before, partition 0 was never at its end again (its end was
    asked while records of it were in hand, and not taken), and nothing else was handed
    over. Written in a transaction, the partition ends with its commit marker, past the
    last record: the reader is at its end all the same, and resumes after the marker."""
    _produce(kafka, 0, [1.0, 2.0, 3.0], transaction=transaction)
    part = _merged_reader(kafka, batch=1)  # (one record at a time: the others stay in hand)
    try:
        assert _handed(part, 1) == [1.0]
        _read_to_the_ends(part)
        part._lost_reach()  # (what a pause longer than READER_GAP, or an outage, does)
        assert _handed(part, 2) == [2.0, 3.0]
        _produce(kafka, 1, [4.0])
        assert _handed(part, 1) == [4.0]
        # Where a run resumes from: past the last record, and past its marker.
        assert part.snapshot().offsets[0] == (4 if transaction else 3)  # type: ignore[union-attr]
    finally:
        part.close()


def test_a_partition_whose_end_was_never_said_is_asked_once_it_has_gone_quiet(
    kafka: KafkaSettings,
) -> None:
    """A partition read to its end without the reader knowing (librdkafka's one word of
    it missed, whatever the cause) is asked where it ends once it has sent nothing for
    a while: the merge goes on without waiting for a record that will not come."""
    _produce(kafka, 0, [1.0])
    part = _merged_reader(kafka, batch=10)
    try:
        assert _handed(part, 1) == [1.0]
        _read_to_the_ends(part)
        part._at_end[0] = False  # (its end, said, and missed)
        _produce(kafka, 1, [2.0])
        assert _handed(part, 1) == [2.0]
    finally:
        part.close()


#: (s) How long a consumer may bring nothing here: longer than a fresh one takes to
#: bring its first record on a busy machine.
STALL_AFTER = 3.0


def _replaced(kafka: KafkaSettings) -> float:
    found = REGISTRY.get_sample_value(
        "wayfinder_consumers_replaced_total", {"topic": kafka.topic("events")}
    )
    return found or 0.0


def _polled_for(part: KafkaInputPartition, seconds: float) -> list[float]:
    """Poll for `seconds`: the event times handed over meanwhile."""
    return _handed(part, 1_000_000, timeout=seconds)


def test_a_consumer_that_brings_nothing_while_its_partitions_hold_more_is_opened_anew(
    kafka: KafkaSettings,
) -> None:
    """A consumer idle at the partitions' ends is kept, however long it brings nothing.
    Then it stops bringing anything (paused: polled, it brings nothing, as librdkafka's
    consumer that did not come back after a broker restart), and records are written to
    both partitions: the reader asks the broker where they end, finds them past where
    it is, and reads them on a consumer opened anew, from where it was: each handed over
    once, and the snapshot's offsets after them."""
    _produce(kafka, 0, [1.0])
    part = _merged_reader(kafka, batch=10, stall_after=STALL_AFTER)
    try:
        assert _handed(part, 1) == [1.0]
        idle, replaced = part._consumer, _replaced(kafka)
        assert _polled_for(part, 2 * STALL_AFTER) == []
        assert part._consumer is idle and _replaced(kafka) == replaced
        idle.pause(idle.assignment())
        _produce(kafka, 0, [2.0])
        _produce(kafka, 1, [3.0])
        assert _handed(part, 2) == [2.0, 3.0]
        assert part._consumer is not idle and _replaced(kafka) == replaced + 1
        assert _polled_for(part, 1.0) == []  # (nothing read twice)
        assert part.snapshot().offsets == {0: 2, 1: 1, 2: 0}  # type: ignore[union-attr]
    finally:
        part.close()


class _PausedOnAssign:
    """A real consumer that pauses the partitions it is assigned as they are assigned:
    polled, it brings nothing from the start. (Paused by the test after the reader's call
    that opened it, a consumer could read in that very call.)"""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def assign(self, parts: list[TopicPartition]) -> None:
        self._consumer.assign(parts)
        self._consumer.pause(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_consumer_opened_anew_that_still_reads_nothing_fails_livez_until_it_reads(
    kafka: KafkaSettings,
) -> None:
    """Each consumer the reader opens brings nothing (paused as it is assigned): once one
    opened anew has not mended it, `/livez` says the process needs a restart. When a
    consumer reads again, it is alive again, and nothing was lost or read twice."""
    _produce(kafka, 0, [1.0])
    part = _merged_reader(kafka, batch=10, stall_after=STALL_AFTER)
    anew = part._anew
    assert anew is not None
    try:
        assert _handed(part, 1) == [1.0]
        replaced = _replaced(kafka)
        part._consumer.pause(part._consumer.assignment())
        part._anew = lambda: _PausedOnAssign(anew())  # type: ignore[assignment]
        _produce(kafka, 0, [2.0])
        _produce(kafka, 1, [3.0])
        deadline = time.monotonic() + 30
        while not_alive() is None and time.monotonic() < deadline:
            assert part.next_batch() == []
            time.sleep(0.02)
        assert "does not read" in (not_alive() or "")
        assert _replaced(kafka) >= replaced + 2
        # (the one it opened then reads again)
        part._anew = anew
        part._consumer.resume(part._consumer.assignment())
        assert _handed(part, 2) == [2.0, 3.0]
        # The watch looks again an ask's interval after the records were read (1 s here):
        # polled until it has, on a deadline, not for a fixed second a busy machine
        # could end just short of it.
        again: list[float] = []
        deadline = time.monotonic() + 10
        while not_alive() is not None and time.monotonic() < deadline:
            again += _polled_for(part, 0.1)
        assert again + _polled_for(part, 1.0) == []  # (nothing read twice)
        assert not_alive() is None
    finally:
        CONSUMER_STALLED.labels(kafka.topic("events")).set(0)
        part.close()
