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
from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import Message

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

    `rounds`: a replay on one process goes in rounds, as an embedded run does
    (`flows.dataflow.rounds`): a round is one batch of the input, or the loop events
    the round before wrote, with everything it causes (folding, loop events delivered,
    examples learned); the next starts only when it is over. The loop events a round
    wrote are handed back as they were delivered (the sink gives them here), not when
    the reader reaches the end of the topic they were appended to, so a login's answer
    comes where it does embedded, and the run is the same every time.
    """

    def __init__(self, consumers: int = 1, *, rounds: bool = False) -> None:
        self.consumers = consumers
        self.rounds = rounds
        self._lock = threading.Lock()
        self._entered = self._settled = 0  # records, per consumer
        self._emitted = self._resolved = 0  # loop events
        self._examples = self._arrived = self._learned = 0  # examples (`rounds`)
        self._delivered: dict[int, int] = {}  # partition → offset after the last loop event
        self._read: dict[int, int] = {}  # partition → next offset its reader reads
        self._at_end: dict[int, bool] = {}  # partition → read to its end, nothing held
        self._returned: list[Message] = []  # (`rounds`) delivered, not handed back yet
        self._round = b""  # (`rounds`) the mark of the round in hand: lineage and number
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
        if outputs or examples:
            with self._lock:
                self._emitted += outputs
                self._examples += examples

    def fed_back(self, topic: str) -> bool:
        return topic == EVENTS

    def delivered(self, partition: int, offset: int, message: Message | None = None) -> None:
        """A loop event reached the events topic at (`partition`, `offset`) (`message`:
        its delivery report, which a replay in rounds hands back)."""
        with self._lock:
            self._resolved += 1
            self._delivered[partition] = max(self._delivered.get(partition, 0), offset + 1)
            if self.rounds and message is not None:
                self._returned.append(message)

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

    def reading(self, partitions: Iterable[int]) -> None:
        """This process reads these partitions, each on a reader of its own: none is at
        its end until its reader says so."""
        with self._lock:
            for partition in partitions:
                self._at_end.setdefault(partition, False)

    def everywhere_at_end(self) -> bool:
        """Whether every partition this process reads is at its end, nothing held back.
        The readers of a bounded run end together: a record one of them still hands over
        may write a loop event onto any partition, which no reader that ended would read
        back. (A cluster's balance says so for the cluster.)"""
        if self._cluster is not None:
            return True
        with self._lock:
            return all(self._at_end.values())

    def at_end(self, partitions: dict[int, bool]) -> None:
        """Which of the partitions this process reads are at their end, with nothing
        held back."""
        with self._lock:
            self._at_end.update(partitions)

    # -- rounds

    def start_round(self, mark: bytes) -> None:
        """The reader hands over a round, marked so (the loop events it writes carry it)."""
        with self._lock:
            self._round = mark

    def round_mark(self) -> bytes:
        return self._round

    def round_over(self) -> bool:
        """Every record handed over is folded, every loop event delivered, every example
        learned."""
        with self._lock:
            return (
                self._entered <= self._settled
                and self._emitted <= self._resolved
                and self._learned >= self._examples
            )

    def returned(self) -> list[Message]:
        """The loop events delivered since the last call, in the order delivered."""
        with self._lock:
            returned, self._returned = self._returned, []
            return returned

    def read_back(self, n: int) -> None:
        """`n` loop events were handed back to the flow."""
        with self._lock:
            self._entered += n * self.consumers

    def delivered_up_to(self) -> dict[int, int]:
        """Partition → the offset after the last loop event delivered there."""
        with self._lock:
            return dict(self._delivered)

    def arrived(self, n: int) -> None:
        """`n` examples reached their learner."""
        with self._lock:
            self._arrived += n

    def learned(self, n: int) -> None:
        with self._lock:
            self._learned += n

    def may_learn(self) -> bool:
        """Every record of the round is folded and every example it taught has reached
        its learner: nothing of the round decides any more."""
        with self._lock:
            return self._entered <= self._settled and self._arrived >= self._examples

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
        if self.rounds:
            with self._lock:
                waiting = bool(self._returned)
            return not waiting and self.round_over()
        with self._lock:
            read = self._read
            return (
                self._entered <= self._settled
                and self._emitted <= self._resolved
                # (a partition that no reader has taken yet, added to the topic, is
                # not read back)
                and all(read.get(p, -1) >= end for p, end in self._delivered.items())
            )
