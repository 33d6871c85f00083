"""The events topic as an output, for embedded runs that have no broker.

The customer step writes some events itself (a visitor's profile merge, a
forwarded device event, the erasure of a linked device). On Kafka they go to
the events topic and come back as input; the dataflow itself has no cycle.
Embedded, the topic is a file: the sink appends to `events.jsonl` and a
loopback input partition reads it back, resuming from its offset like a
consumer. The run ends when the primary input is exhausted and nothing that
could still write to the loop is in flight.

The primary input moves in lockstep with the loop: a partition hands over its
next batch only when everything before it has been folded and every loop event
it caused has come back. A customer's merge is therefore folded at the same
point of their stream whatever the number of workers, and an embedded run gives
the same outputs in any shape. Outputs that the input itself reads back (its
`feedback` topics: the actions that simulated customers react to) are in flight
too until the sink has written them, so every partition reads them at the same
point of its stream.
"""

import threading
from collections.abc import Callable
from datetime import datetime

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.dataflow.sources import RawRecord, RecordPartition, Records, WrittenTopics
from flows.runtime import metrics
from schemas.topics import EVENTS


class _Order(msgspec.Struct):
    ts: str = ""
    event_id: str = ""


_ORDER = msgspec.json.Decoder(_Order)


def _event_order(raw: bytes) -> tuple[str, str]:
    # Wayfinder wrote these lines itself, always in UTC ("...Z"), so the text sorts.
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
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None  # bad input: the decode step dead-letters it


def _hold_after_logins(batch: list[RawRecord]) -> tuple[list[RawRecord], list[RawRecord]]:
    """Split a batch so that a customer's records after their login wait for the merge.

    Everyone else's records go ahead; the held ones go in the next round, once the
    visitor's profile merge has come back round the loop. Order is kept per customer
    and per device: holding a record also holds what follows under its ids.
    """
    blocked: set[str] = set()
    now: list[RawRecord] = []
    later: list[RawRecord] = []
    for record in batch:
        raw = record.value
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


class Loopback:
    """The rounds of an embedded run: what is in flight, and whose turn it is.

    A round is one batch of one input partition (or the loop events of the round
    before), with everything it causes: folding, the outputs that come back as
    input, and the learning of the examples it teaches. The next round starts
    only when this one has settled, and the input partition furthest behind in
    event time goes next (ties: the first listed), so the rounds, and everything
    decided in them, are the same on any number of workers and after a resume.
    Examples are learned when every record of their round has been folded and
    every example has reached its learner, never while the round is deciding.
    """

    def __init__(
        self, primary_parts: list[str], feedback: tuple[str, ...] = (), consumers: int = 1
    ) -> None:
        """`feedback`: prefixes of output topics the primary input reads back;
        `consumers`: customer steps that fold every record (a challenger is a second)."""
        self.feedback = feedback
        self.consumers = consumers
        self._lock = threading.Lock()
        self._order = {part: i for i, part in enumerate(primary_parts)}
        self._reached = dict.fromkeys(primary_parts, float("-inf"))
        self._records = 0  # handed to the customer steps, not yet folded (per consumer)
        self._outputs = 0  # emitted to come back as input, not yet written
        self._emitted = self._arrived = self._learned = 0  # examples, since the start
        self._written = 0
        self._read = 0
        self._ended = False
        self._turn: str | None = None  # the partition handing over right now

    # -- records

    def started(self, n: int) -> None:
        """`n` records entered the flow (read from an input, or split in two)."""
        if n:
            with self._lock:
                self._records += n * self.consumers

    def settled(self, n: int, *, all_consumers: bool = False) -> None:
        """`n` records were folded by one customer step (or, `all_consumers`, left the
        flow before reaching any: dead letters)."""
        if n:
            with self._lock:
                self._records -= n * (self.consumers if all_consumers else 1)

    # -- outputs that come back

    def fed_back(self, topic: str) -> bool:
        """Whether the primary input reads this output topic back."""
        return topic.startswith(self.feedback) if self.feedback else False

    def emitted(self, outputs: int, examples: int) -> None:
        """A customer step emitted outputs that come back as input, and examples."""
        if outputs or examples:
            with self._lock:
                self._outputs += outputs
                self._emitted += examples

    def written(self, n: int) -> None:
        """`n` loop events reached the loop file (they leave the flow until read back)."""
        with self._lock:
            self._outputs -= n
            self._written += n

    def delivered(self, n: int) -> None:
        """`n` outputs that the input reads back reached their topic file."""
        if n:
            with self._lock:
                self._outputs -= n

    def read_back(self, n: int) -> None:
        with self._lock:
            self._read += n
            self._records += n * self.consumers

    # -- examples

    def arrived(self, n: int) -> None:
        """`n` examples reached their learner."""
        with self._lock:
            self._arrived += n

    def learned(self, n: int) -> None:
        with self._lock:
            self._learned += n

    def may_learn(self) -> bool:
        """Every record handed over is folded and every example has reached its
        learner: nothing of this round decides any more. After the input's end, the
        learners wait for their own end (the last wakes may still be deciding)."""
        with self._lock:
            return not self._ended and self._records <= 0 and self._arrived >= self._emitted

    # -- rounds

    def _round_over(self) -> bool:
        return self._records <= 0 and self._outputs <= 0 and self._learned >= self._emitted

    def quiet(self) -> bool:
        """The round is over: everything it caused is written and learned."""
        with self._lock:
            return self._round_over()

    def take_turn(self, part: str) -> bool:
        """Take the turn for `part` if the round is over, the loop file is read to its
        end, and `part` is furthest behind; nobody else hands over until `hand_over`."""
        with self._lock:
            if self._turn is not None or not self._round_over() or self._read < self._written:
                return False
            reached = self._reached
            if part != min(reached, key=lambda p: (reached[p], self._order[p])):
                return False
            self._turn = part
            return True

    def hand_over(self, part: str, records: int, event_time: float) -> None:
        """`part`, holding the turn, hands over `records`, having got to `event_time`."""
        with self._lock:
            self._reached[part] = event_time
            self._records += records * self.consumers
            self._turn = None

    def reached(self, part: str, event_time: float) -> None:
        """How far in event time `part` got before this run (a resumed partition)."""
        with self._lock:
            self._reached[part] = event_time

    def primary_finished(self, part: str) -> None:
        with self._lock:
            self._reached.pop(part, None)
            if self._turn == part:
                self._turn = None

    def idle(self) -> bool:
        """Nothing more can reach the loop file: inputs done, the last round over."""
        with self._lock:
            done = not self._reached and self._round_over() and self._read >= self._written
            if done:
                self._ended = True
            return done


class CountedPartition(StatefulSourcePartition[RawRecord, object]):
    """A primary input partition that takes its turn in the rounds of the loop."""

    def __init__(
        self,
        inner: RecordPartition,
        loop: Loopback,
        name: str,
        resume_state: tuple[list[RawRecord], float] | None = None,
    ) -> None:
        self._inner = inner
        self._loop = loop
        self._name = name
        self._done = False
        held, reached = resume_state if resume_state is not None else ([], float("-inf"))
        self._held: list[RawRecord] = held
        self._reached = reached
        loop.reached(name, reached)

    def next_batch(self) -> list[RawRecord]:
        if self._done:
            raise StopIteration
        if not self._loop.take_turn(self._name):
            return []  # lockstep: wait for the round to end, and for this partition's turn
        batch = self._held
        if not batch:
            try:
                batch = self._inner.next_batch()
            except StopIteration:
                self._done = True
                self._loop.primary_finished(self._name)
                raise
            reached = self._inner.event_time()
            if reached is not None:
                self._reached = reached
                metrics.INPUT_EVENT_TIME.labels(self._name).set(reached)
        batch, self._held = _hold_after_logins(batch)
        self._loop.hand_over(self._name, len(batch), self._reached)
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

    def __init__(self, loop: Loopback, resume_state: int | None, written: WrittenTopics) -> None:
        self._loop = loop
        self._written = written
        self._offset = resume_state or 0
        self._line = 0

    def next_batch(self) -> list[RawRecord]:
        if not self._loop.quiet():
            return []  # the flow is still writing this round's loop events
        lines, self._offset = self._written.read(EVENTS, self._offset)
        if not lines:
            if self._loop.idle():
                raise StopIteration
            return []
        # One round's loop events, in event-time order: the order the workers wrote
        # them in depends on scheduling, this one does not.
        lines.sort(key=_event_order)
        batch = []
        for raw in lines:
            self._line += 1
            batch.append(RawRecord(raw, "loopback", self._line))
        self._loop.read_back(len(batch))
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
        self, primary: Records, loop: Loopback, written: Callable[[], WrittenTopics]
    ) -> None:
        self.primary = primary
        self.loop = loop
        self.written = written

    def list_parts(self) -> list[str]:
        return [*self.primary.list_parts(), "loopback"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: object | None
    ) -> StatefulSourcePartition[RawRecord, object]:
        if for_part == "loopback":
            offset = resume_state if isinstance(resume_state, int) else None
            return LoopbackPartition(self.loop, offset, self.written())
        inner_state: object = None
        own: tuple[list[RawRecord], float] | None = None
        if isinstance(resume_state, tuple):  # (the inner partition's, the loop's)
            inner_state, own = resume_state
        inner = self.primary.open_part(for_part, inner_state, self.written())
        return CountedPartition(inner, self.loop, for_part, own)
