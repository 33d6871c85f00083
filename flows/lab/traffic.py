"""The simulator as the input of an embedded run, with the closed loop.

The dataflow takes any partitioned `Records`; this one replays the simulator's
partitions and, with a `World`, lets the simulated customers react to the actions
the run writes: each partition reads the action topics back by offset (as a
consumer would), keeps its own customers' reactions until their event time comes,
and snapshots both, so a resumed run neither loses nor repeats one.
"""

import heapq
from itertools import islice
from typing import NamedTuple

import msgspec

from flows.dataflow.sources import RawRecord, WrittenTopics
from flows.lab.population import customer_id, directory
from flows.lab.simulator import SimulationConfig, simulate_partition
from flows.lab.world import World
from flows.runtime.settings import BATCH_SIZE, state_key
from schemas.action import Action
from schemas.codec import encode

#: A reaction waiting for its time: (event time, event id, wire bytes). The id breaks
#: ties, so the order never depends on the order in which actions were read.
Pending = tuple[float, str, bytes]

#: Output topics the simulated customers read: what they are sent.
ACTION_TOPICS = "actions."


class SimulatedTraffic:
    """The simulator's partitions as an embedded input; with a world, the closed loop."""

    def __init__(self, config: SimulationConfig, world: World | None = None) -> None:
        self.config = config
        self.world = world
        self.feedback: tuple[str, ...] = (ACTION_TOPICS,) if world is not None else ()
        #: Who each action is for (the flow names customers by their state key).
        self.directory = directory(config.customers, state_key) if world is not None else {}

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self.config.partitions)]

    def span(self) -> tuple[float, float]:
        """Event-time span of the simulation, for progress."""
        start = self.config.start.timestamp()
        return start, start + self.config.hours * 3600

    def open_part(
        self, part: str, resume_state: object | None, written: WrittenTopics
    ) -> "_TrafficPartition":
        state = resume_state if isinstance(resume_state, TrafficState) else None
        return _TrafficPartition(self.config, int(part), state, self.world, written, self.directory)


class TrafficState(NamedTuple):
    """Where a simulator partition is: records handed over, action topics read (byte
    offsets) and reactions not yet due."""

    position: int
    read: dict[str, int]
    pending: list[Pending]


class _TrafficPartition:
    def __init__(
        self,
        config: SimulationConfig,
        partition: int,
        state: TrafficState | None,
        world: World | None,
        written: WrittenTopics,
        customers: dict[str, int],
    ) -> None:
        self._source = f"simulator/{partition}"
        self._customers = customers
        self._partition = partition
        self._config = config
        self._world = world
        self._written = written
        state = state or TrafficState(0, {}, [])
        self._position = state.position
        self._read = dict(state.read)
        self._pending = list(state.pending)
        heapq.heapify(self._pending)
        self._decoder = msgspec.json.Decoder(Action)
        self._reached = config.start.timestamp()
        # The simulator is deterministic: resuming is replaying and skipping.
        self._records = islice(simulate_partition(config, partition), self._position, None)

    def next_batch(self) -> list[RawRecord]:
        self._take_reactions()
        batch: list[RawRecord] = []
        position = self._position
        pending = self._pending
        for _ in range(BATCH_SIZE):
            upcoming = next(self._records, None)
            until = upcoming[0] if upcoming else float("inf")
            while pending and pending[0][0] <= until:
                at, _id, raw = heapq.heappop(pending)
                batch.append(RawRecord(raw, "world", -1))
                self._reached = at
            if upcoming is None:
                break
            self._reached, raw = upcoming
            batch.append(RawRecord(raw, self._source, position))
            position += 1
        if not batch:
            raise StopIteration
        self._position = position
        return batch

    def _take_reactions(self) -> None:
        """Read the actions written since the last batch; queue this partition's
        customers' reactions to them."""
        world = self._world
        if world is None:
            return
        for topic in self._written.topics():
            if not topic.startswith(ACTION_TOPICS):
                continue
            lines, self._read[topic] = self._written.read(topic, self._read.get(topic, 0))
            for raw in lines:
                action = self._decoder.decode(raw)
                index = self._customers.get(action.customer)
                if index is None or self._config.partition_of(index) != self._partition:
                    continue
                for event in world.react(action, customer_id(index)):
                    at = event.ts.timestamp()
                    heapq.heappush(self._pending, (at, event.event_id, encode(event)))

    def snapshot(self) -> TrafficState:
        return TrafficState(self._position, dict(self._read), list(self._pending))

    def close(self) -> None:
        pass

    def event_time(self) -> float:
        return self._reached
