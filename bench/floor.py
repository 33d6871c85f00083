"""Stage 4: bytewax's floor on the same input: read → decode → keyed state → encode →
sink, no logic. What any flow on this engine pays before doing anything useful.

Run as `python -m bench.floor EVENTS_FILE`; prints one JSON line.
"""

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from flows.runtime.settings import BATCH_SIZE
from operators.identity import customer_key
from schemas.codec import BadInput, EventDecoder
from schemas.event import Event


class _Lines(StatefulSourcePartition[bytes, int]):
    def __init__(self, path: Path) -> None:
        self._lines: Iterator[bytes] = iter(path.read_bytes().splitlines())

    def next_batch(self) -> list[bytes]:
        batch = [line for _, line in zip(range(BATCH_SIZE), self._lines, strict=False)]
        if not batch:
            raise StopIteration
        return batch

    def snapshot(self) -> int:
        return 0


class _File(FixedPartitionedSource[bytes, int]):
    def __init__(self, path: Path) -> None:
        self._path = path

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Lines:
        return _Lines(self._path)


class _Count(StatelessSinkPartition[bytes]):
    written = 0

    def write_batch(self, items: list[bytes]) -> None:
        _Count.written += len(items)


class _Counted(DynamicSink[bytes]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count()


class _Seen(msgspec.Struct, array_like=True):
    events: int
    last_ts: float


def _decoded(decoder: EventDecoder, raw: bytes) -> Event | None:
    try:
        return decoder.decode(raw)
    except BadInput:
        return None


def _fold(seen: _Seen | None, event: Event) -> tuple[_Seen, _Seen]:
    seen = seen or _Seen(0, 0.0)
    seen.events += 1
    seen.last_ts = event.ts.timestamp()
    return seen, seen


def floor_flow(path: Path) -> Dataflow:
    decoder, encoder = EventDecoder(), msgspec.msgpack.Encoder()
    flow = Dataflow("engine_floor")
    raw = op.input("read", flow, _File(path))
    events = op.filter_map("decode", raw, lambda r: _decoded(decoder, r))
    keyed = op.key_on("key", events, customer_key)
    state = op.stateful_map("fold", keyed, _fold)
    encoded = op.map("encode", state, lambda kv: encoder.encode(kv[1]))
    op.output("sink", encoded, _Counted())
    return flow


def main() -> int:
    path = Path(sys.argv[1])
    flow = floor_flow(path)
    started = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - started
    records = len(path.read_bytes().splitlines())
    said = {"records": records, "written": _Count.written, "seconds": seconds}
    print(msgspec.json.encode(said).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
