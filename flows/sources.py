"""Inputs besides Kafka: the built-in simulator and JSON-lines event files.

Both hand raw bytes to the same decode step as Kafka does, so bad lines meet
the same dead-letter path, and both resume from a recovery snapshot.
"""

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import metrics
from flows.simulator import SimulationConfig, simulate_partition
from flows.world import Reactions

BATCH_SIZE = 512


class RawRecord(NamedTuple):
    """Bytes as received, and where from (for the dead-letter record)."""

    value: bytes
    source: str
    position: int


class _SimulatorPartition(StatefulSourcePartition[RawRecord, object]):
    def __init__(
        self,
        config: SimulationConfig,
        partition: int,
        resume_state: object | None,
        reactions: Reactions | None,
    ):
        self._source = f"simulator/{partition}"
        self._partition = partition
        self._clock = metrics.INPUT_EVENT_TIME.labels(self._source)
        self._reactions = reactions
        if isinstance(resume_state, tuple):
            self._position, pending = resume_state
            if reactions is not None:
                reactions.restore(partition, pending)
        else:
            self._position = resume_state or 0  # type: ignore[assignment]
        # The simulator is deterministic: resuming is replaying and skipping.
        self._records = islice(simulate_partition(config, partition), self._position, None)

    def next_batch(self) -> list[RawRecord]:
        batch = []
        position = self._position
        ts = 0.0
        reactions = self._reactions
        for _ in range(BATCH_SIZE):
            upcoming = next(self._records, None)
            until = upcoming[0] if upcoming else float("inf")
            due = reactions.due(self._partition, until) if reactions else []
            for at, _order, raw in due:
                batch.append(RawRecord(raw, "world", -1))
                ts = at
            if upcoming is None:
                break
            ts, raw = upcoming
            batch.append(RawRecord(raw, self._source, position))
            position += 1
        if not batch:
            raise StopIteration
        self._position = position
        self._clock.set(ts)
        return batch

    def snapshot(self) -> object:
        if self._reactions is None:
            return self._position
        return (self._position, self._reactions.pending(self._partition))


class SimulatorSource(FixedPartitionedSource[RawRecord, int]):
    """The built-in traffic simulator, one input partition per simulator partition."""

    def __init__(self, config: SimulationConfig, reactions: Reactions | None = None) -> None:
        """`reactions`: the simulated customers react to what they are sent (closed loop)."""
        self.config = config
        self.reactions = reactions

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self.config.partitions)]

    def span(self) -> tuple[float, float]:
        """Event-time span of the simulation, for progress."""
        start = self.config.start.timestamp()
        return start, start + self.config.hours * 3600

    def build_part(
        self, step_id: str, for_part: str, resume_state: object | None
    ) -> _SimulatorPartition:
        return _SimulatorPartition(self.config, int(for_part), resume_state, self.reactions)


class _FilePosition(NamedTuple):
    offset: int
    line: int


class _EventFilePartition(StatefulSourcePartition[RawRecord, _FilePosition]):
    def __init__(self, path: Path, resume_state: _FilePosition | None):
        self._file = path.open("rb")
        self._source = f"file:{path.name}"
        self._position = resume_state or _FilePosition(0, 0)
        self._file.seek(self._position.offset)
        self._lines: Iterator[bytes] = iter(self._file.readline, b"")

    def next_batch(self) -> list[RawRecord]:
        offset, line_no = self._position
        batch = []
        for line in islice(self._lines, BATCH_SIZE):
            offset += len(line)
            line_no += 1
            value = line.rstrip(b"\r\n")
            if value.strip():  # blank lines carry nothing; everything else is judged
                batch.append(RawRecord(value, self._source, line_no))
        if offset == self._position.offset:
            raise StopIteration
        self._position = _FilePosition(offset, line_no)
        return batch

    def snapshot(self) -> _FilePosition:
        return self._position

    def close(self) -> None:
        self._file.close()


class EventFileSource(FixedPartitionedSource[RawRecord, _FilePosition]):
    """A JSON-lines file of events in the wire format, one Event per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def list_parts(self) -> list[str]:
        return [self.path.name]

    def build_part(
        self, step_id: str, for_part: str, resume_state: _FilePosition | None
    ) -> _EventFilePartition:
        return _EventFilePartition(self.path, resume_state)
