"""Local-file output: one JSON-lines file per topic, for the embedded run.

Each topic is a sink partition that remembers its byte offset in the recovery
snapshot; a resumed run truncates back to it, so a file holds every output
exactly once, as the topic would. Bulky audit topics (decision inputs, learned
examples) are gzip files: one gzip member per batch, so the offset of a snapshot
is always between whole members and truncating there leaves a valid file.
"""

import gzip
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.loopback import LOOP_TOPIC, Loopback
from flows.world import Reactions


class _TopicFilePartition(StatefulSinkPartition[bytes, int]):
    def __init__(
        self,
        path: Path,
        resume_state: int | None,
        loop: Loopback | None = None,
        reactions: Reactions | None = None,
        compress: bool = False,
    ):
        self.path = path
        #: Packing runs beside the flow (zlib lets go of the GIL); one thread keeps the order.
        self._packer = ThreadPoolExecutor(1, thread_name_prefix="gzip") if compress else None
        self._packed: Future | None = None
        self._loop = loop
        self._reactions = reactions
        self._file = None
        if resume_state is None:
            path.unlink(missing_ok=True)
        elif path.exists():
            with path.open("r+b") as f:
                f.truncate(resume_state)
        self._offset = resume_state or 0

    def write_batch(self, values: list[bytes]) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        data = b"\n".join(values) + b"\n"
        if self._packer is not None:
            self._packed = self._packer.submit(_write_packed, self._file, data)
        else:
            self._file.write(data)
        if self._reactions is not None:
            for value in values:
                self._reactions.add(value)  # the simulated customer sees it
        if self._loop is not None:
            self._file.flush()  # the loopback input reads it back right away
            self._loop.written(len(values))

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
    topics in `compressed`)."""

    def __init__(
        self,
        directory: Path,
        topics: list[str],
        loop: Loopback | None = None,
        reactions: Reactions | None = None,
        compressed: frozenset[str] = frozenset(),
    ) -> None:
        self.directory = directory
        self.compressed = compressed
        self.loop = loop
        self.reactions = reactions
        self._parts = sorted(topics)
        self._index = {topic: i for i, topic in enumerate(self._parts)}

    def path(self, topic: str) -> Path:
        suffix = ".jsonl.gz" if topic in self.compressed else ".jsonl"
        return self.directory / f"{topic}{suffix}"

    def list_parts(self) -> list[str]:
        return self._parts

    def part_fn(self, item_key: str) -> int:
        return self._index[item_key]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _TopicFilePartition:
        self.directory.mkdir(parents=True, exist_ok=True)
        loop = self.loop if for_part == LOOP_TOPIC else None
        reactions = self.reactions if for_part.startswith("actions.") else None
        compress = for_part in self.compressed
        return _TopicFilePartition(self.path(for_part), resume_state, loop, reactions, compress)
