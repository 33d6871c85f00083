"""Run a flow in this process: bytewax's own runner, with recovery when asked."""

import shutil
from datetime import timedelta
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from flows.dataflow.run_stores import close_stores
from flows.runtime import metrics
from flows.runtime.collector import survivors_frozen
from flows.runtime.recovery_store import (
    check,
    drop_abandoned,
    hold,
    holds_snapshots,
    release,
    scrub,
)
from flows.runtime.runner import EPOCH_SECONDS, RecoveryOptions


def execute(
    flow: Dataflow,
    *,
    workers: int = 1,
    recovery: RecoveryOptions | None = None,
    epoch_seconds: float = EPOCH_SECONDS,
) -> None:
    """Run `flow` to its end on `workers` threads, in epochs of `epoch_seconds`; with
    `recovery`, snapshot to its folder where each ends and resume from it when it holds
    an earlier run's snapshots (erased customers are scrubbed from it before and after)."""
    epochs = timedelta(seconds=epoch_seconds)
    if recovery is None:
        try:
            with survivors_frozen():
                cli_main(flow, workers_per_process=workers, epoch_interval=epochs)
        except BaseException:
            close_stores()
            raise
        close_stores(ended=True)
        return
    hold(recovery.directory)  # no second run snapshots into it meanwhile
    try:
        if recovery.resumes:
            check(recovery.directory)  # one sentence, not bytewax's panic
            drop_abandoned(recovery.directory)  # a crashed run's epochs, run again now
            scrub(recovery.directory)  # an earlier run's erasures, before anything reads them
            if holds_snapshots(recovery.directory):
                metrics.RESUMES.inc()
        else:
            _init_recovery(recovery.directory, recovery.partitions)
        with survivors_frozen():
            cli_main(
                flow,
                workers_per_process=workers,
                epoch_interval=epochs,
                recovery_config=RecoveryConfig(
                    recovery.directory, timedelta(seconds=recovery.backup_interval)
                ),
            )
        scrub(recovery.directory)
        close_stores(ended=True, recovery=recovery.directory)
    finally:
        close_stores()
        release(recovery.directory)


def _init_recovery(directory: Path, partitions: int) -> None:
    """Create the recovery partitions beside the folder, then move them in at once: a
    process killed while creating them leaves no half-made store to resume from."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    making = directory.with_name(directory.name + ".init")
    shutil.rmtree(making, ignore_errors=True)
    making.mkdir()
    init_db_dir(making, partitions)
    making.replace(directory)  # (over an empty folder, if the user made one)
