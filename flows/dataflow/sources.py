"""Inputs besides Kafka: partitions of raw records, and JSON-lines event files.

Every input hands raw bytes to the same decode step as Kafka does, so bad lines
meet the same dead-letter path. An embedded input is a set of `Records`: named
partitions, each resumable from the state it snapshots. What produces the
records (an event file, the simulator of the lab) is not the dataflow's
business; `written` lets a partition read back, by offset, what the run's sink
wrote (the simulated customers react to the actions they were sent), so what
it reads is recovered with the input.
"""

import hashlib
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from flows.runtime.settings import BATCH_SIZE
from schemas.codec import DEFAULT_MAX_EVENT_BYTES
from schemas.deadletter import MAX_RAW_BYTES

#: Bytes read at a time while skipping the rest of a line too long to keep.
_SKIP_CHUNK = 1 << 20


class RawRecord(NamedTuple):
    """Bytes as received, and where from (for the dead-letter record).

    `cut`: the record was longer than its reader holds, so `value` is its start;
    (original size, SHA-256 hex) say what it was.
    """

    value: bytes
    source: str
    position: int
    cut: tuple[int, str] | None = None


def read_line(file: BinaryIO, limit: int) -> tuple[bytes, int, tuple[int, str] | None]:
    """One line of at most `limit` bytes (newline excluded) in memory, whatever its length.

    Returns (the line or its first `limit` bytes, bytes consumed, and for a longer
    line its size and digest, taken while skipping the rest in bounded chunks), so
    a 200 MB line costs `limit` bytes to reject. b"" with 0 consumed: end of file.
    """
    line = file.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line.rstrip(b"\r\n"), len(line), None
    digest = hashlib.sha256(line)
    consumed = len(line)
    while True:
        chunk = file.readline(_SKIP_CHUNK)
        consumed += len(chunk)
        ended = chunk.endswith(b"\n")
        digest.update(chunk[:-1] if ended else chunk)
        if ended or not chunk:
            break
    return b"", consumed, (consumed - ended, digest.hexdigest())


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
    def __init__(self, path: Path, resume_state: _FilePosition | None, max_line: int):
        self._file = path.open("rb")
        self._source = f"file:{path.name}"
        self._position = resume_state or _FilePosition(0, 0)
        self._file.seek(self._position.offset)
        self._max_line = max_line

    def next_batch(self) -> list[RawRecord]:
        offset, line_no = self._position
        batch = []
        readline, limit, source = self._file.readline, self._max_line, self._source
        for _ in range(BATCH_SIZE):
            line = readline(limit + 1)
            if not line:
                break
            line_no += 1
            if len(line) > limit and not line.endswith(b"\n"):  # too long to hold: skip it
                self._file.seek(offset)
                _value, consumed, cut = read_line(self._file, limit)
                assert cut is not None
                batch.append(RawRecord(self._head(offset), source, line_no, cut))
                offset += consumed
                continue
            offset += len(line)
            value = line.rstrip(b"\r\n")
            if value.strip():  # blank lines carry nothing; everything else is judged
                batch.append(RawRecord(value, source, line_no))
        if offset == self._position.offset:
            raise StopIteration
        self._position = _FilePosition(offset, line_no)
        return batch

    def _head(self, start: int) -> bytes:
        """The first bytes of the line at `start` (a dead letter keeps them)."""
        end = self._file.tell()
        self._file.seek(start)
        head = self._file.read(min(MAX_RAW_BYTES, self._max_line))
        self._file.seek(end)
        return head

    def snapshot(self) -> _FilePosition:
        return self._position

    def close(self) -> None:
        self._file.close()

    def event_time(self) -> float | None:
        return None  # not known without decoding: the file is read as it comes


class EventFileSource:
    """A JSON-lines file of events in the wire format, one Event per line."""

    feedback: tuple[str, ...] = ()

    def __init__(self, path: Path, max_line: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        """`max_line`: the longest line held in memory (the decoder's limit: a longer
        one is a dead letter whatever it holds)."""
        self.path = path
        self.max_line = max_line

    def list_parts(self) -> list[str]:
        return [self.path.name]

    def open_part(
        self, part: str, resume_state: object | None, written: WrittenTopics
    ) -> _EventFilePartition:
        position = resume_state if isinstance(resume_state, _FilePosition) else None
        return _EventFilePartition(self.path, position, self.max_line)

    def span(self) -> tuple[float, float] | None:
        return None
