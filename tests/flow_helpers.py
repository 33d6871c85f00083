"""Run the embedded flow in this process, through bytewax's testing entry points.

As bytewax's own test suite does (its `pytests/conftest.py`), a flow test takes the
`entry_point` fixture (tests/conftest.py) and runs once on `run_main` (one worker, in
this thread) and once on `cluster_main(flow, [], 0, worker_count_per_proc=2)` (two
worker threads exchanging data). `run_embedded` wires the embedded flow over any
`Records` as `wayfinder run` does, writes the files the CLI writes after the flow
that the tests read (map files and models.json; not summary.json nor report.html),
and summarises the flow's counters over the run.

Prometheus counters are process-global: a run's figures are deltas over the run
(`EmbeddedRun.summary`), never absolute values.
"""

import gzip
import io
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import msgspec
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main
from rich.console import Console

from flows.dataflow.flow import Challenger, embedded_flow
from flows.dataflow.run_stores import close_stores
from flows.dataflow.sources import Records
from flows.lab.simulator import SimulationConfig
from flows.lab.traffic import SimulatedTraffic
from flows.lab.world import World
from flows.runtime.run_files import contact_map, prepare_out, write_end_files
from flows.runtime.runner import RunSummary, run_with_progress
from flows.runtime.settings import ColdSettings, state_key
from operators.models import ModelSet
from operators.playbook import CompiledPlaybook
from operators.rerun import open_basis
from schemas.decision import DecisionInput
from schemas.event import Event
from state.key_vault import VaultReader
from tests.helpers import default_playbook


class EntryPoint(Protocol):
    """How a test runs a flow to its end: bytewax's `run_main`, or `cluster_main` wrapped."""

    def __call__(
        self,
        flow: Dataflow,
        *,
        epoch_interval: timedelta | None = None,
        recovery_config: RecoveryConfig | None = None,
    ) -> None: ...


def _run_main(
    flow: Dataflow,
    *,
    epoch_interval: timedelta | None = None,
    recovery_config: RecoveryConfig | None = None,
) -> None:
    run_main(flow, epoch_interval=epoch_interval, recovery_config=recovery_config)


def cluster_main_threads(workers: int) -> EntryPoint:
    """`cluster_main` of a one-process cluster with `workers` worker threads."""

    def entry(
        flow: Dataflow,
        *,
        epoch_interval: timedelta | None = None,
        recovery_config: RecoveryConfig | None = None,
    ) -> None:
        cluster_main(
            flow,
            [],
            0,
            epoch_interval=epoch_interval,
            recovery_config=recovery_config,
            worker_count_per_proc=workers,
        )

    return entry


#: The entry points a flow test runs on, by the names bytewax's own suite gives them.
ENTRY_POINTS: dict[str, EntryPoint] = {
    "run_main": _run_main,
    "cluster_main-2thread": cluster_main_threads(2),
}

#: Topic files whose lines are the same, sorted, whatever the shape of the run
#: (analytics holds window snapshots as of arrival; its final map is compared instead).
DETERMINISTIC_TOPICS = ("decisions", "journeys", "audiences", "events", "dlq")


@dataclass
class EmbeddedRun:
    """An embedded run's output folder, its models and its counters (deltas)."""

    out: Path
    models: ModelSet
    summary: RunSummary

    def lines(self, name: str) -> list[bytes]:
        """The lines of a file of the run (`decisions.jsonl`; gzip files unpacked)."""
        return file_lines(self.out / name)

    def models_json(self) -> dict[str, Any]:
        records: dict[str, Any] = json.loads((self.out / "models.json").read_text())
        return records


def file_lines(path: Path) -> list[bytes]:
    """The lines of a run's file, none if it is not there; gzip files are unpacked."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.splitlines()


def comparable_outputs(out: Path) -> dict[str, list[bytes]]:
    """What must be byte-identical between two runs of the same input, whatever their
    shape: every deterministic topic and every action topic (sorted lines; their order
    may differ with workers), the models' records and the final contact-point map."""
    files = [out / f"{topic}.jsonl" for topic in DETERMINISTIC_TOPICS]
    files += sorted(out.glob("actions.*.jsonl"))
    compared = {path.name: sorted(file_lines(path)) for path in files}
    if "events.jsonl" in compared:
        compared["events.jsonl"] = comparable_loop(compared["events.jsonl"])
    for name in ("models.json", "contact_map.json", "contact_map_edges.csv"):
        compared[name] = file_lines(out / name)
    return compared


def every_output(out: Path) -> dict[str, list[bytes]]:
    """`comparable_outputs`, with the example log and the decision inputs (opened: each
    run makes its customers' keys anew, so the sealed bytes differ)."""
    compared = comparable_outputs(out)
    compared["models.examples"] = sorted(file_lines(out / "models.examples.jsonl.gz"))
    inputs = file_lines(out / "decisions.inputs.jsonl.gz")
    compared["decisions.inputs, opened"] = opened_inputs(inputs, out / "keys")
    return compared


def opened_inputs(lines: list[bytes], vault: Path) -> list[bytes]:
    """Decision inputs with their basis opened by the customers' keys in `vault`, sorted:
    what must be the same between two runs (each makes its customers' keys anew, so
    the sealed bytes differ). An input the vault cannot open is an error."""
    reader = VaultReader(vault)
    opened = []
    try:
        for line in lines:
            recorded = msgspec.json.decode(line, type=DecisionInput)
            basis = open_basis(recorded, reader.secret(recorded.customer))
            plain = msgspec.structs.replace(recorded, basis=msgspec.msgpack.encode(basis))
            opened.append(msgspec.json.encode(plain))
    finally:
        reader.close()
    return sorted(opened)


def comparable_loop(lines: list[bytes]) -> list[bytes]:
    """The loop's records without what each run makes anew, sorted: a login's request
    without the customer's public handover key, the device's merge without what is
    sealed to the customer, a forward without its event (sealed under the device's
    key), and so none of them with its signature. What they carried shows in the
    merged journeys, audiences and decisions, which are compared as written."""
    return sorted(_comparable_loop_record(line) for line in lines)


def _comparable_loop_record(line: bytes) -> bytes:
    event = msgspec.json.decode(line, type=Event)
    replace = msgspec.structs.replace
    if event.handover is not None:
        event = replace(event, handover=replace(event.handover, public_key=b""))
    elif event.merge is not None:
        event = replace(event, merge=replace(event.merge, sealed_to=b"", context=b""))
    elif event.forward is not None:
        event = replace(event, forward=replace(event.forward, event=b""))
    else:
        return line
    return msgspec.json.encode(replace(event, signature=None))


def simulated(customers: int, hours: float, seed: int, *, reactions: bool = True) -> Records:
    """The lab's simulator as `wayfinder run --customers --hours --seed` feeds it; with
    `reactions`, its customers react to the actions written (the closed loop)."""
    config = SimulationConfig(customers=customers, hours=hours, seed=seed)
    return SimulatedTraffic(config, World(config.seed, state_key) if reactions else None)


def run_embedded(
    entry_point: EntryPoint,
    records: Records,
    out: Path,
    *,
    playbook: CompiledPlaybook | None = None,
    challenger: Challenger | None = None,
    decision_inputs: bool = True,
    recovery: Path | None = None,
    snapshot_interval: float = 0.05,
    backup_interval: float = 0.0,
    cold: ColdSettings | None = None,
) -> EmbeddedRun:
    """Run the embedded flow over `records` into `out` to its end, on `entry_point`.

    With `recovery`, snapshot to that folder every `snapshot_interval` seconds (it is
    initialised when it has no partitions yet, and resumed from when it holds snapshots).
    `cold`: the cold tier's settings (None: the environment's).
    """
    playbook = playbook or default_playbook()
    resuming = recovery is not None and recovery.is_dir() and any(recovery.iterdir())
    prepare_out(out, playbook.channels, overwrite=False, resuming=resuming)
    models = ModelSet(playbook)
    flow, _sink = embedded_flow(
        records,
        out,
        playbook=playbook,
        models=models,
        challenger=challenger,
        decision_inputs=decision_inputs,
        cold=cold,
        recovery=recovery,
    )
    config, interval = None, None
    if recovery is not None:
        if not any(recovery.glob("*.sqlite3")):
            recovery.mkdir(parents=True, exist_ok=True)
            init_db_dir(recovery, 1)
        config = RecoveryConfig(str(recovery), timedelta(seconds=backup_interval))
        interval = timedelta(seconds=snapshot_interval)

    def execute() -> None:
        try:
            entry_point(flow, epoch_interval=interval, recovery_config=config)
        except BaseException:
            close_stores()
            raise
        close_stores(ended=True, recovery=recovery)

    summary = run_with_progress(
        execute, console=Console(file=io.StringIO()), title="test run", progress=False
    )
    write_end_files(out, models, contact_map(out))
    return EmbeddedRun(out, models, summary)
