"""Local-file output: one JSON-lines file per topic, for the embedded run.

Each topic is a sink partition that remembers its byte offset in the recovery
snapshot; a resumed run truncates back to it, so a file holds every output
exactly once, as the topic would.
"""

from pathlib import Path

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
    ):
        self.path = path
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
        self._file.write(b"\n".join(values) + b"\n")
        if self._reactions is not None:
            for value in values:
                self._reactions.add(value)  # the simulated customer sees it
        if self._loop is not None:
            self._file.flush()  # the loopback input reads it back right away
            self._loop.written(len(values))

    def snapshot(self) -> int:
        if self._file is not None:
            self._file.flush()
            self._offset = self._file.tell()
        return self._offset

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class TopicFileSink(FixedPartitionedSink[bytes, int]):
    """Writes `(topic, line)` items to `<directory>/<topic>.jsonl`."""

    def __init__(
        self,
        directory: Path,
        topics: list[str],
        loop: Loopback | None = None,
        reactions: Reactions | None = None,
    ) -> None:
        self.directory = directory
        self.loop = loop
        self.reactions = reactions
        self._parts = sorted(topics)
        self._index = {topic: i for i, topic in enumerate(self._parts)}

    def path(self, topic: str) -> Path:
        return self.directory / f"{topic}.jsonl"

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
        return _TopicFilePartition(self.path(for_part), resume_state, loop, reactions)
