"""Local-file output: one JSON-lines file per topic, for the embedded run.

Each topic is a sink partition that remembers its byte offset in the recovery
snapshot; a resumed run truncates back to it, so a file holds every output
exactly once, as the topic would; what it wrote can be read back by offset, as
a consumer reads a topic (`WrittenFiles`). Bulky audit topics (decision inputs,
learned examples) are gzip files: one gzip member per batch, so the offset of a
snapshot is always between whole members and truncating there leaves a valid file.
"""

import gzip
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.dataflow.rounds import Rounds
from flows.dataflow.sources import LineTail
from flows.runtime.run_files import topic_file
from schemas.topics import AUDIT_TOPICS, EVENTS


class _TopicFilePartition(StatefulSinkPartition[bytes, int]):
    def __init__(
        self,
        topic: str,
        path: Path,
        resume_state: int | None,
        ends: dict[str, int],
        rounds: Rounds | None = None,
        *,
        compress: bool = False,
        fed_back: bool = False,
    ):
        """`ends`: where each topic file ends as far as this run knows (the sink's);
        `rounds`: this topic is read back as input (the events topic's loop, or with
        `fed_back` another topic the input reads): flushed at once and counted as
        arrived."""
        self.path = path
        #: Packing runs beside the flow (zlib lets go of the GIL); one thread keeps the order.
        self._packer = ThreadPoolExecutor(1, thread_name_prefix="gzip") if compress else None
        self._packed: Future[None] | None = None
        self._rounds = rounds
        self._fed_back = fed_back
        self._file: BinaryIO | None = None
        if resume_state is None:
            path.unlink(missing_ok=True)
        elif path.exists():
            with path.open("r+b") as f:
                f.truncate(resume_state)
        self._offset = resume_state or 0
        self._ends = ends
        self._topic = topic
        ends[topic] = self._offset
        if rounds is not None and not fed_back:  # the loop file, as of the snapshot
            rounds.written(0, self._offset)

    def write_batch(self, values: list[bytes]) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        data = b"\n".join(values) + b"\n"
        if self._packer is not None:
            self._packed = self._packer.submit(_write_packed, self._file, data)
        else:
            self._file.write(data)
        if self._rounds is None:
            return
        self._file.flush()  # the input reads it back right away
        self._ends[self._topic] = self._file.tell()
        if self._fed_back:
            self._rounds.delivered(len(values))
        else:
            self._rounds.written(len(values), self._ends[self._topic])

    def _drain(self) -> None:
        """Wait for the batches being packed (the last one done means all are)."""
        if self._packed is not None:
            self._packed.result()
            self._packed = None

    def snapshot(self) -> int:
        self._drain()
        if self._file is not None:
            self._file.flush()
            self._offset = self._file.tell()
        return self._offset

    def close(self) -> None:
        self._drain()
        if self._packer is not None:
            self._packer.shutdown()
        if self._file is not None:
            self._file.close()


def _write_packed(file: BinaryIO, data: bytes) -> None:
    """One gzip member per batch: a snapshot's offset always falls between members."""
    file.write(gzip.compress(data, compresslevel=1))


class TopicFileSink(FixedPartitionedSink[bytes, int]):
    """Writes `(topic, line)` items to `<directory>/<topic>.jsonl` (`.jsonl.gz` for the
    audit topics)."""

    def __init__(self, directory: Path, topics: list[str], rounds: Rounds | None = None) -> None:
        self.directory = directory
        self.compressed = AUDIT_TOPICS
        self.rounds = rounds
        self._parts = sorted(topics)
        self._index = {topic: i for i, topic in enumerate(self._parts)}
        #: Bytes of each topic file that this run wrote or resumed from; a file that
        #: this run has not opened yet may hold an earlier run's lines, never read.
        self._ends: dict[str, int] = {}

    def path(self, topic: str) -> Path:
        return topic_file(self.directory, topic)

    def list_parts(self) -> list[str]:
        return self._parts

    def part_fn(self, item_key: str) -> int:
        return self._index[item_key]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _TopicFilePartition:
        self.directory.mkdir(parents=True, exist_ok=True)
        rounds = self.rounds
        fed_back = rounds is not None and rounds.fed_back(for_part)
        if for_part != EVENTS and not fed_back:
            rounds = None
        return _TopicFilePartition(
            for_part,
            self.path(for_part),
            resume_state,
            self._ends,
            rounds,
            compress=for_part in self.compressed,
            fed_back=fed_back,
        )

    def end(self, topic: str) -> int | None:
        """Bytes of the topic's file this run vouches for (None: not opened by this run)."""
        return self._ends.get(topic)

    def written(self) -> "WrittenFiles":
        """A reader of what this sink has written (one per reader: it keeps files open)."""
        return WrittenFiles(self)


class WrittenFiles:
    """The plain (not gzip) topic files of a sink, read by topic and byte offset."""

    def __init__(self, sink: TopicFileSink) -> None:
        self._sink = sink
        self._tails: dict[str, LineTail] = {}

    def topics(self) -> list[str]:
        sink = self._sink
        return [t for t in sink.list_parts() if t not in sink.compressed]

    def read(self, topic: str, offset: int) -> tuple[list[bytes], int]:
        tail = self._tails.get(topic)
        if tail is None:
            tail = self._tails[topic] = LineTail(self._sink.path(topic))
        tail.offset = offset
        end = self._sink.end(topic)
        return ([] if end is None else tail.read(end)), tail.offset
