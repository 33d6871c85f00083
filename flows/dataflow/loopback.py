"""The events topic as an output, for embedded runs that have no broker.

The customer step writes some events itself (a visitor's profile merge, a
forwarded device event, the erasure of a linked device). On Kafka they go to
the events topic and come back as input; the dataflow itself has no cycle.
Embedded, the topic is a file: the sink appends to `events.jsonl` and a
loopback input partition reads it back, resuming from its offset like a
consumer. The run ends when the primary input is exhausted and nothing that
could still write to the loop is in flight.

The primary input moves in rounds with the loop (`flows.dataflow.rounds`): a
partition hands over its next batch only when everything before it has been
folded and every loop event it caused has come back. A customer's merge is
therefore folded at the same point of their stream whatever the number of
workers, and an embedded run gives the same outputs in any shape.
"""

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.dataflow.rounds import Rounds
from flows.dataflow.sources import RawRecord, RecordPartition, Records, WrittenTopics
from flows.runtime import metrics
from schemas.topics import EVENTS


class _Order(msgspec.Struct):
    ts: str = ""
    event_id: str = ""


_ORDER = msgspec.json.Decoder(_Order)


def event_order(raw: bytes) -> tuple[str, str]:
    """The order a round's loop events are handed back in: the order the workers wrote
    them in depends on scheduling, this one does not."""
    # Wayfinder wrote these itself, always in UTC ("...Z"), so the text sorts.
    order = _ORDER.decode(raw)
    return order.ts, order.event_id


class _Ids(msgspec.Struct):
    type: str = ""
    customer_id: str | None = None
    anonymous_id: str | None = None


_IDS = msgspec.json.Decoder(_Ids)


def _ids(raw: bytes) -> _Ids | None:
    try:
        return _IDS.decode(raw)
    except Exception:  # bad input of any kind: the decode step dead-letters it
        return None


T = TypeVar("T")


def hold_after_logins(batch: list[T], value: Callable[[T], bytes]) -> tuple[list[T], list[T]]:
    """Split a batch so that a customer's records after their login wait for the merge.

    Everyone else's records go ahead; the held ones go in the next round, once the
    visitor's profile merge has come back round the rounds. Order is kept per customer
    and per device: holding a record also holds what follows under its ids.
    """
    blocked: set[str] = set()
    now: list[T] = []
    later: list[T] = []
    for record in batch:
        raw = value(record)
        if blocked or b"identify" in raw:
            ids = _ids(raw)
            if ids is not None:
                if ids.customer_id in blocked or ids.anonymous_id in blocked:
                    later.append(record)
                    blocked.update(i for i in (ids.customer_id, ids.anonymous_id) if i)
                    continue
                if ids.type == "identify" and ids.customer_id:
                    blocked.add(ids.customer_id)
        now.append(record)
    return now, later


def _value(record: RawRecord) -> bytes:
    return record.value


class CountedPartition(StatefulSourcePartition[RawRecord, object]):
    """A primary input partition that takes its turn in the rounds of the rounds."""

    def __init__(
        self,
        inner: RecordPartition,
        rounds: Rounds,
        name: str,
        resume_state: tuple[list[RawRecord], float] | None = None,
    ) -> None:
        self._inner = inner
        self._rounds = rounds
        self._name = name
        self._done = False
        held, reached = resume_state if resume_state is not None else ([], float("-inf"))
        self._held: list[RawRecord] = held
        self._reached = reached
        rounds.reached(name, reached)

    def next_batch(self) -> list[RawRecord]:
        if self._done:
            raise StopIteration
        if not self._rounds.take_turn(self._name):
            return []  # lockstep: wait for the round to end, and for this partition's turn
        batch = self._held
        if not batch:
            try:
                batch = self._inner.next_batch()
            except StopIteration:
                self._done = True
                self._rounds.primary_finished(self._name)
                raise
            reached = self._inner.event_time()
            if reached is not None:
                self._reached = reached
                metrics.INPUT_EVENT_TIME.labels(self._name).set(reached)
        batch, self._held = hold_after_logins(batch, _value)
        self._rounds.hand_over(self._name, len(batch), self._reached)
        return batch

    def next_awake(self) -> datetime | None:
        return None  # waiting for the loop is short: ask again at the next activation

    def snapshot(self) -> object:
        # The inner position is past the records held back: keep them with it.
        return (self._inner.snapshot(), (list(self._held), self._reached))

    def close(self) -> None:
        self._inner.close()


class LoopbackPartition(StatefulSourcePartition[RawRecord, object]):
    """Reads back what the flow wrote to the loop file, from a resumable offset."""

    def __init__(self, rounds: Rounds, resume_state: int | None, written: WrittenTopics) -> None:
        self._rounds = rounds
        self._written = written
        self._offset = resume_state or 0
        self._line = 0
        rounds.read_back(0, self._offset)  # where it had got at the snapshot resumed

    def next_batch(self) -> list[RawRecord]:
        if not self._rounds.quiet():
            return []  # the flow is still writing this round's loop events
        lines, self._offset = self._written.read(EVENTS, self._offset)
        if not lines:
            if self._rounds.idle():
                raise StopIteration
            return []
        lines.sort(key=event_order)  # one round's loop events
        batch = []
        for raw in lines:
            self._line += 1
            batch.append(RawRecord(raw, "loopback", self._line))
        self._rounds.read_back(len(batch), self._offset)
        metrics.LOOP_EVENTS.inc(len(batch))
        return batch

    def next_awake(self) -> datetime | None:
        # Rounds are short and the primary input waits on them: ask at every activation.
        return None

    def snapshot(self) -> int:
        return self._offset


class EmbeddedSource(FixedPartitionedSource[RawRecord, object]):
    """The primary input (simulator or event file) plus the loopback partition.

    `written`: makes a reader of what the run's sink has written, one per partition
    (a partition keeps its files open).
    """

    def __init__(
        self, primary: Records, rounds: Rounds, written: Callable[[], WrittenTopics]
    ) -> None:
        self.primary = primary
        self.rounds = rounds
        self.written = written

    def list_parts(self) -> list[str]:
        return [*self.primary.list_parts(), "loopback"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: object | None
    ) -> StatefulSourcePartition[RawRecord, object]:
        if for_part == "loopback":
            offset = resume_state if isinstance(resume_state, int) else None
            return LoopbackPartition(self.rounds, offset, self.written())
        inner_state: object = None
        own: tuple[list[RawRecord], float] | None = None
        if isinstance(resume_state, tuple):  # (the inner partition's, the loop's)
            inner_state, own = resume_state
        inner = self.primary.open_part(for_part, inner_state, self.written())
        return CountedPartition(inner, self.rounds, for_part, own)
