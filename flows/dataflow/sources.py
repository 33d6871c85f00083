"""Inputs besides Kafka: partitions of raw records, and JSON-lines event files.

Every input hands raw bytes to the same decode step as Kafka does, so bad lines
meet the same dead-letter path. An embedded input is a set of `Records`: named
partitions, each resumable from the state it snapshots. What produces the
records (an event file, the simulator of the lab) is not the dataflow's
business; `written` lets a partition read back, by offset, what the run's sink
wrote (the simulated customers react to the actions they were sent), so what
it reads is recovered with the input.
"""

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

BATCH_SIZE = 512


class RawRecord(NamedTuple):
    """Bytes as received, and where from (for the dead-letter record)."""

    value: bytes
    source: str
    position: int


class RecordPartition(Protocol):
    """One resumable partition of input: batches of records, then StopIteration."""

    def next_batch(self) -> list[RawRecord]: ...

    def snapshot(self) -> object: ...

    def close(self) -> None: ...

    def event_time(self) -> float | None:
        """How far in event time the partition has got, when it knows (progress)."""
        ...


class WrittenTopics(Protocol):
    """What the run's sink has written so far, readable by topic and byte offset."""

    def topics(self) -> list[str]: ...

    def read(self, topic: str, offset: int) -> tuple[list[bytes], int]:
        """Whole lines written at or after `offset`, and the offset after the last."""
        ...


class Records(Protocol):
    """An embedded input: named partitions of raw records.

    `feedback`: prefixes of output topics the partitions read back through
    `written`; the run then hands over the next input only once everything
    written to them so far can be read.
    """

    feedback: tuple[str, ...]

    def list_parts(self) -> list[str]: ...

    def open_part(
        self, part: str, resume_state: object | None, written: WrittenTopics
    ) -> RecordPartition: ...

    def span(self) -> tuple[float, float] | None:
        """Event-time span of the input when known in advance (a progress bar)."""
        ...


class LineTail:
    """Reads whole lines appended to a file, from a byte offset that is kept.

    A line is returned only once its newline is there, so a reader never sees a
    half-written record, and the offset is always at the start of a line. `end`
    bounds the read: bytes past it are not vouched for by the writer (yet).
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._file: BinaryIO | None = None

    def read(self, end: int | None = None) -> list[bytes]:
        if end is not None and self.offset >= end:
            return []
        if self._file is None:
            if not self.path.exists():
                return []
            self._file = self.path.open("rb")
        self._file.seek(self.offset)
        lines: list[bytes] = []
        for line in iter(self._file.readline, b""):
            if not line.endswith(b"\n") or (end is not None and self.offset + len(line) > end):
                break  # being written: read it next time
            self.offset += len(line)
            lines.append(line[:-1])
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _FilePosition(NamedTuple):
    offset: int
    line: int


class _EventFilePartition:
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

    def event_time(self) -> float | None:
        return None  # not known without decoding: the file is read as it comes


class EventFileSource:
    """A JSON-lines file of events in the wire format, one Event per line."""

    feedback: tuple[str, ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = path

    def list_parts(self) -> list[str]:
        return [self.path.name]

    def open_part(
        self, part: str, resume_state: object | None, written: WrittenTopics
    ) -> _EventFilePartition:
        position = resume_state if isinstance(resume_state, _FilePosition) else None
        return _EventFilePartition(self.path, position)

    def span(self) -> tuple[float, float] | None:
        return None
