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
the same outputs in any shape.
"""

import threading
from datetime import datetime
from pathlib import Path

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import metrics
from flows.sources import RawRecord

LOOP_TOPIC = "events"


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
    """Counts records in flight between the inputs and the loop file."""

    def __init__(self, path: Path, primary_parts: int) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._in_flight = 0
        self._written = 0
        self._read = 0
        self._primary_open = primary_parts

    def started(self, n: int) -> None:
        """`n` records entered the flow (read from an input, or split in two)."""
        if n:
            with self._lock:
                self._in_flight += n

    def settled(self, n: int) -> None:
        """`n` records left the flow (dead-lettered, folded, or written to the loop)."""
        if n:
            with self._lock:
                self._in_flight -= n

    def written(self, n: int) -> None:
        """`n` loop events reached the loop file (they leave the flow until read back)."""
        with self._lock:
            self._in_flight -= n
            self._written += n

    def read_back(self, n: int) -> None:
        with self._lock:
            self._read += n
            self._in_flight += n

    def quiet(self) -> bool:
        """Nothing is in flight: every loop event of this round has been written."""
        with self._lock:
            return self._in_flight <= 0

    def pending(self) -> bool:
        """Loop events written and not yet read back."""
        with self._lock:
            return self._read < self._written

    def settled_all(self) -> bool:
        """Everything handed over so far is folded, and the loop file is read to its end."""
        with self._lock:
            return self._in_flight <= 0 and self._read >= self._written

    def primary_finished(self) -> None:
        with self._lock:
            self._primary_open -= 1

    def idle(self) -> bool:
        """Nothing more can reach the loop file: inputs done, nothing in flight."""
        with self._lock:
            return self._primary_open <= 0 and self._in_flight <= 0 and self._read >= self._written


class CountedPartition(StatefulSourcePartition[RawRecord, object]):
    """A primary input partition that tells the loop what it started and when it ends."""

    def __init__(
        self, inner: StatefulSourcePartition, loop: Loopback, held: list[RawRecord] | None = None
    ) -> None:
        self._inner = inner
        self._loop = loop
        self._done = False
        self._held: list[RawRecord] = held or []

    def next_batch(self) -> list[RawRecord]:
        if not self._loop.settled_all():
            return []  # lockstep: wait for the previous batch and its loop events
        batch = self._held
        if not batch:
            try:
                batch = self._inner.next_batch()
            except StopIteration:
                if not self._done:
                    self._done = True
                    self._loop.primary_finished()
                raise
        batch, self._held = _hold_after_logins(batch)
        self._loop.started(len(batch))
        return batch

    def next_awake(self) -> datetime | None:
        return None  # waiting for the loop is short: ask again at the next activation

    def snapshot(self) -> object:
        # The inner position is past the records held back: keep them with it.
        return (self._inner.snapshot(), list(self._held))

    def close(self) -> None:
        self._inner.close()


class LoopbackPartition(StatefulSourcePartition[RawRecord, int]):
    """Reads back what the flow wrote to the loop file, from a resumable offset."""

    def __init__(self, loop: Loopback, resume_state: int | None) -> None:
        self._loop = loop
        self._offset = resume_state or 0
        self._line = 0
        self._file = None

    def next_batch(self) -> list[RawRecord]:
        if not self._loop.quiet():
            return []  # the flow is still writing this round's loop events
        if self._file is None:
            if not self._loop.path.exists():
                return self._wait_or_stop()
            self._file = self._loop.path.open("rb")
            self._file.seek(self._offset)
        lines: list[bytes] = []
        while True:
            line = self._file.readline()
            if not line.endswith(b"\n"):  # nothing more
                self._file.seek(self._offset)
                break
            self._offset += len(line)
            lines.append(line.rstrip(b"\n"))
        if not lines:
            return self._wait_or_stop()
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

    def _wait_or_stop(self) -> list[RawRecord]:
        if self._loop.idle():
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        # Rounds are short and the primary input waits on them: ask at every activation.
        return None

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class EmbeddedSource(FixedPartitionedSource[RawRecord, object]):
    """The primary input (simulator or event file) plus the loopback partition."""

    def __init__(self, primary: FixedPartitionedSource, loop: Loopback) -> None:
        self.primary = primary
        self.loop = loop

    def list_parts(self) -> list[str]:
        return [*self.primary.list_parts(), "loopback"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: object | None
    ) -> StatefulSourcePartition:
        if for_part == "loopback":
            return LoopbackPartition(self.loop, resume_state)  # type: ignore[arg-type]
        inner_state, held = resume_state if resume_state is not None else (None, [])  # type: ignore[misc]
        inner = self.primary.build_part(step_id, for_part, inner_state)
        return CountedPartition(inner, self.loop, held)
