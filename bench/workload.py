"""The benchmark's one workload: the simulator's realistic mix of channels, journeys,
identifies, outcomes, decision requests and a little bad input (0.3%), seeded.

Written once to a JSON-lines file that every stage reads (the in-process flow, the
Kafka producer, the peers), so each stage sees the same records in the same order.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec

from flows.lab.simulator import SimulationConfig, simulate


@dataclass(frozen=True)
class Workload:
    """A generated events file and what it holds."""

    path: Path
    customers: int
    hours: float
    seed: int
    records: int

    def read(self) -> list[bytes]:
        return self.path.read_bytes().splitlines()


def generate(folder: Path, customers: int, hours: float, seed: int) -> Workload:
    """The workload for these parameters, read from `folder` when generated before."""
    path = folder / f"events-c{customers}-h{hours:g}-s{seed}.jsonl"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return Workload(path=path, **msgspec.json.decode(meta.read_bytes()))
    folder.mkdir(parents=True, exist_ok=True)
    config = SimulationConfig(customers=customers, hours=hours, seed=seed)
    records = 0
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for _ts, raw in simulate(config):
            out.write(raw + b"\n")
            records += 1
    partial.rename(path)
    workload = Workload(path=path, customers=customers, hours=hours, seed=seed, records=records)
    fields = {k: v for k, v in asdict(workload).items() if k != "path"}
    meta.write_bytes(msgspec.json.encode(fields))
    return workload
