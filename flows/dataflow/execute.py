"""Run a flow in this process: bytewax's own runner, with recovery when asked."""

from datetime import timedelta

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from flows.runtime.recovery_store import scrub
from flows.runtime.runner import RecoveryOptions


def execute(flow: Dataflow, *, workers: int = 1, recovery: RecoveryOptions | None = None) -> None:
    """Run `flow` to its end on `workers` threads; with `recovery`, snapshot to its folder
    and resume from it when it holds an earlier run's snapshots (erased customers are
    scrubbed from it before and after)."""
    if recovery is None:
        cli_main(flow, workers_per_process=workers)
        return
    if recovery.resumes:
        scrub(recovery.directory)  # an earlier run's erasures, before anything reads them
    else:
        recovery.directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(recovery.directory, recovery.partitions)
    cli_main(
        flow,
        workers_per_process=workers,
        epoch_interval=timedelta(seconds=recovery.snapshot_interval),
        recovery_config=RecoveryConfig(
            recovery.directory, timedelta(seconds=recovery.backup_interval)
        ),
    )
    scrub(recovery.directory)
