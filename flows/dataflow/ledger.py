"""What a run has in flight that could still write to its own input.

The customer step writes some events itself (a device's answer to a login, a
forwarded device event, the erasure of a linked device) to the events topic, which
the flow reads back: the dataflow has no cycle. A bounded run on Kafka (a replay)
must not stop at the topic's end while one of them is on its way, or a customer's
login would never get its answer. The process keeps the balance here: records read
and not yet folded, loop events emitted and not yet delivered, and, per partition,
how far the loop events delivered reach and how far the reader has got. Its input
partitions end only when the balance is even: in a cluster, the balance of every
process (`flows.runtime.balance`).

The embedded run's `Rounds` keep the same accounts (and more: its lockstep); both
serve the decode and customer steps through `FlowLedger`.
"""

import threading
from typing import Protocol

from flows.runtime.balance import ClusterBalance, LoopCounts
from schemas.topics import EVENTS


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
    The counts only grow, so that a cluster's processes can compare them
    (`flows.runtime.balance`).
    """

    def __init__(self, consumers: int = 1) -> None:
        self.consumers = consumers
        self._lock = threading.Lock()
        self._entered = self._settled = 0  # records, per consumer
        self._emitted = self._resolved = 0  # loop events
        self._delivered: dict[int, int] = {}  # partition → offset after the last loop event
        self._read: dict[int, int] = {}  # partition → next offset its reader reads
        self._at_end: dict[int, bool] = {}  # partition → read to its end, nothing held
        self._cluster: ClusterBalance | None = None

    def in_cluster(self, balance: ClusterBalance) -> None:
        """This process is one of a cluster's, which `balance` hears from."""
        self._cluster = balance

    def started(self, n: int) -> None:
        if n:
            with self._lock:
                self._entered += n * self.consumers

    def settled(self, n: int, *, all_consumers: bool = False) -> None:
        if n:
            with self._lock:
                self._settled += n * (self.consumers if all_consumers else 1)

    def emitted(self, outputs: int, examples: int) -> None:
        if outputs:
            with self._lock:
                self._emitted += outputs

    def fed_back(self, topic: str) -> bool:
        return topic == EVENTS

    def delivered(self, partition: int, offset: int) -> None:
        """A loop event reached the events topic at (`partition`, `offset`)."""
        with self._lock:
            self._resolved += 1
            self._delivered[partition] = max(self._delivered.get(partition, 0), offset + 1)

    def dropped(self) -> None:
        """A loop event the topic refused for good (it went to the dead letters)."""
        with self._lock:
            self._resolved += 1

    def read(self, n: int, partition: int, offset: int) -> None:
        """The reader of `partition` (of this process) handed `n` records over and reads
        `offset` next."""
        with self._lock:
            self._entered += n * self.consumers
            self._read[partition] = offset

    def at_end(self, partitions: dict[int, bool]) -> None:
        """Which of the partitions this process reads are at their end, with nothing
        held back."""
        with self._lock:
            self._at_end.update(partitions)

    def counts(self) -> LoopCounts:
        with self._lock:
            return LoopCounts(
                entered=self._entered,
                settled=self._settled,
                emitted=self._emitted,
                resolved=self._resolved,
                read=dict(self._read),
                delivered=dict(self._delivered),
                at_end=tuple(sorted(p for p, done in self._at_end.items() if done)),
            )

    def even(self) -> bool:
        """Nothing read is still being folded, nothing written is still on its way, and
        every loop event delivered has been read back.

        In a cluster, records this process reads are folded by every process, whose
        loop events land on partitions any may read: the cluster's balance says.
        """
        if self._cluster is not None:
            return self._cluster.done()
        with self._lock:
            read = self._read
            return (
                self._entered <= self._settled
                and self._emitted <= self._resolved
                and all(read[p] >= end for p, end in self._delivered.items() if p in read)
            )
