"""Which bytewax epoch each record is in, said in the input itself.

bytewax cuts a run into epochs and snapshots every step where one ends; a resume goes
back to the start of an epoch (the first of a run is 1, a resumed run's is the one it
resumes from). The steps are not told the epoch. The cold tier must be (its writes are
versioned by it, `state.customer_store`), so every input partition counts its own:
bytewax snapshots each partition where each epoch ends, and what it hands over after
that is in the next. Each batch starts with an `EpochMark`, which the decode step puts
in the stamps of the records after it, in order on the same worker.

The partition chosen as the cold tier's (`ColdTier.partition`) also hands over the
tier's wakes, between the input's batches (`flows.dataflow.cold_tier`). A process of a
cluster has a tier of its own, whose wakes a partition of its own hands over: it reads
nothing, and only that process lists it, so one of its workers runs it.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.dataflow.cold_tier import ColdTier, Wake
from flows.dataflow.ledger import FlowLedger


class EpochMark:
    """The epoch of the records after it, on this worker."""

    __slots__ = ("epoch",)

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch


class EpochSource(FixedPartitionedSource[Any, Any]):
    """`inner`'s partitions, each counting epochs from `first` (the run's first epoch);
    `cold`: the cold tier, whose partition hands over its wakes, counted in `ledger`.
    `process`: this process's id in a cluster, whose tier's wakes a partition of its own
    hands over (None: one of `inner`'s does); `read_all`: for a bounded cluster run, says
    when the cluster has read and folded all its input (None: a service)."""

    def __init__(
        self,
        inner: FixedPartitionedSource[Any, Any],
        first: int,
        *,
        cold: ColdTier | None = None,
        ledger: FlowLedger | None = None,
        process: int | None = None,
        read_all: Callable[[], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.first = first
        self.cold = cold
        self.ledger = ledger
        self.read_all = read_all
        self._own = f"cold-tier-{process}" if cold is not None and process is not None else None
        #: (asked of `inner` once: a Kafka admin call)
        self._cold_part: str | None = self._own

    def list_parts(self) -> list[str]:
        parts = self.inner.list_parts()
        return parts if self._own is None else [*parts, self._own]

    def build_part(
        self, step_id: str, for_part: str, resume_state: object | None
    ) -> StatefulSourcePartition[Any, Any]:
        if for_part == self._own:
            assert self.cold is not None
            return _WakePartition(self.first, self.cold, self.ledger, self.read_all)
        inner = self.inner.build_part(step_id, for_part, resume_state)
        cold = self.cold
        if cold is not None and self._cold_part is None:
            self._cold_part = cold.partition(self.inner.list_parts())
        if cold is not None and for_part != self._cold_part:
            cold = None
        return _EpochPartition(inner, self.first, cold, self.ledger)


class _EpochPartition(StatefulSourcePartition[Any, Any]):
    def __init__(
        self,
        inner: StatefulSourcePartition[Any, Any],
        epoch: int,
        cold: ColdTier | None,
        ledger: FlowLedger | None,
    ) -> None:
        self._inner = inner
        self._epoch = epoch
        self._cold = cold
        self._started: Callable[[int], None] = ledger.started if ledger else lambda n: None

    def next_batch(self) -> list[Any]:
        cold = self._cold
        if cold is None:
            batch = list(self._inner.next_batch())
            return [EpochMark(self._epoch), *batch] if batch else batch
        cold.maintain(self._epoch)
        wakes: list[Wake] = []
        try:
            batch = list(self._inner.next_batch())
        except StopIteration:
            wakes = cold.sweep()  # the input's end: every cold customer comes back first
            if not wakes:
                raise
            batch = []
        else:
            wakes = cold.wakes()
        if wakes:
            self._started(len(wakes))
            batch = [*wakes, *batch]
        return [EpochMark(self._epoch), *batch] if batch else batch

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> object:
        state = self._inner.snapshot()
        self._epoch += 1  # (bytewax snapshots a partition where each epoch ends)
        return state

    def close(self) -> None:
        self._inner.close()


class _WakePartition(StatefulSourcePartition[Any, None]):
    """A cluster process's own partition: it hands over its cold tier's wakes and reads
    nothing. In a bounded run, once the cluster has read and folded all its input
    (`read_all`), it brings every cold customer back, as the partition that hands over
    a process alone's wakes does at its end, and then ends; in a service, it ends with
    a stop."""

    #: How long it waits when there was nothing to hand over.
    PAUSE = timedelta(milliseconds=50)

    def __init__(
        self,
        epoch: int,
        cold: ColdTier,
        ledger: FlowLedger | None,
        read_all: Callable[[], bool] | None,
    ) -> None:
        self._epoch = epoch
        self._cold = cold
        self._started: Callable[[int], None] = ledger.started if ledger else lambda n: None
        self._read_all = read_all
        self._quiet = False

    def next_batch(self) -> list[Any]:
        cold = self._cold
        if cold.stopping():
            raise StopIteration
        cold.maintain(self._epoch)
        wakes: list[Any]
        if self._read_all is not None and self._read_all():
            wakes = cold.sweep()  # the input's end: every cold customer comes back first
            if not wakes:
                raise StopIteration
        else:
            wakes = cold.wakes()
        self._quiet = not wakes
        if not wakes:
            return []
        self._started(len(wakes))
        return [EpochMark(self._epoch), *wakes]

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + self.PAUSE if self._quiet else None

    def snapshot(self) -> None:
        self._epoch += 1  # (bytewax snapshots a partition where each epoch ends)
