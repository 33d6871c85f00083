"""What a run has in flight that could still write to its own input.

The customer step writes some events itself (a device's answer to a login, a
forwarded device event, the erasure of a linked device) to the events topic, which
the flow reads back: the dataflow has no cycle. A bounded run on Kafka (a replay)
must not stop at the topic's end while one of them is on its way, or a customer's
login would never get its answer. The process keeps the balance here: records read
and not yet folded, loop events emitted and not yet delivered, and, per partition,
how far the loop events delivered reach and how far the reader has got. Its input
partitions end only when the balance is even.

The embedded run's `Rounds` keep the same accounts (and more: its lockstep); both
serve the decode and customer steps through `FlowLedger`.
"""

import threading
import time
from typing import Protocol

from schemas.topics import EVENTS

#: Seconds without a record settling here after which a cluster's records are taken to
#: be folded elsewhere (see `LoopLedger.even`).
SETTLED_AFTER = 5.0


class FlowLedger(Protocol):
    """What the decode and customer steps report of the records they handle."""

    def started(self, n: int) -> None:
        """`n` records entered the flow (an identify event splits in two)."""

    def settled(self, n: int, *, all_consumers: bool = False) -> None:
        """`n` records were folded by one customer step (or, `all_consumers`, left the
        flow before reaching any: dead letters)."""

    def emitted(self, outputs: int, examples: int) -> None:
        """A customer step emitted outputs that come back as input, and examples."""

    def fed_back(self, topic: str) -> bool:
        """Whether the input reads this output topic back."""


class LoopLedger:
    """The balance of a Kafka run's loop through the events topic (one process).

    `consumers`: customer steps that fold every record (a challenger is a second).
    """

    def __init__(self, consumers: int = 1) -> None:
        self.consumers = consumers
        self._lock = threading.Lock()
        self._records = 0
        self._pending = 0
        self._delivered: dict[int, int] = {}  # partition → offset after the last loop event
        self._read: dict[int, int] = {}  # partition → next offset its reader reads
        self._last_records, self._records_since = 0, 0.0  # (see `even`)

    def started(self, n: int) -> None:
        if n:
            with self._lock:
                self._records += n * self.consumers

    def settled(self, n: int, *, all_consumers: bool = False) -> None:
        if n:
            with self._lock:
                self._records -= n * (self.consumers if all_consumers else 1)

    def emitted(self, outputs: int, examples: int) -> None:
        if outputs:
            with self._lock:
                self._pending += outputs

    def fed_back(self, topic: str) -> bool:
        return topic == EVENTS

    def delivered(self, partition: int, offset: int) -> None:
        """A loop event reached the events topic at (`partition`, `offset`)."""
        with self._lock:
            self._pending -= 1
            self._delivered[partition] = max(self._delivered.get(partition, 0), offset + 1)

    def dropped(self) -> None:
        """A loop event the topic refused for good (it went to the dead letters)."""
        with self._lock:
            self._pending -= 1

    def read(self, n: int, partition: int, offset: int) -> None:
        """The reader of `partition` (of this process) handed `n` records over and reads
        `offset` next."""
        with self._lock:
            self._records += n * self.consumers
            self._read[partition] = offset

    def even(self) -> bool:
        """Nothing read is still being folded, nothing written is still on its way, and
        every loop event delivered has been read back.

        In a cluster the records this process reads are folded by every process, and
        settle there: when its count has not moved for `SETTLED_AFTER` seconds, with
        nothing of its own on the way, they are taken to be folded. (What another
        process writes back comes as new input, and the input is not at its end then.)
        """
        with self._lock:
            read = self._read
            balanced = self._pending <= 0 and all(
                read[p] >= end for p, end in self._delivered.items() if p in read
            )
            if self._records <= 0 or not balanced:
                return balanced
            now = time.monotonic()
            if self._records != self._last_records:
                self._last_records, self._records_since = self._records, now
                return False
            return now - self._records_since >= SETTLED_AFTER
