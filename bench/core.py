"""Stage 1: the pure cores in a plain loop, the limit for our logic; and what a hot
customer costs in memory."""

import gc
import time
from dataclasses import dataclass

from bench.measure import resident_bytes
from flows.runtime.collector import set_collector, survivors_frozen
from flows.runtime.settings import load_default_playbook
from operators.replay import Replay
from schemas.codec import BadInput, EventDecoder, encode


@dataclass(frozen=True)
class CoreRun:
    seconds: float
    records: int
    customers: int
    #: Resident memory the run's state added (contexts and models), per customer held.
    bytes_per_customer: float

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds

    @property
    def us_per_event(self) -> float:
        return self.seconds / self.records * 1e6


def plain_loop(records: list[bytes]) -> CoreRun:
    """Every record from empty state: decode, then fold, journeys, segments, decisions
    (operators.replay: the identity loop included, each decision's input recorded as the
    flow records it), then encode every output, as the flow does; with the garbage
    collector set as the flow's process sets it (survivors frozen while it runs)."""
    set_collector()
    gc.collect()
    before = resident_bytes()
    decoder, replay = EventDecoder(), Replay(load_default_playbook(), record_inputs=True)
    with survivors_frozen():
        started = time.perf_counter()
        for raw in records:
            try:
                event = decoder.decode(raw)
            except BadInput:
                continue
            replay.feed(event)
            for output in replay.outputs:
                encode(output)
            replay.outputs.clear()
        seconds = time.perf_counter() - started
    gc.collect()
    held = len(replay.contexts)
    added = resident_bytes() - before
    return CoreRun(seconds, len(records), held, added / max(held, 1))
