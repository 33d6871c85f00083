"""A crashed run's snapshots of epochs it never finished are dropped before the next
run: bytewax would otherwise read one at a later resume, in place of the newer run's
(it keeps each key's latest row before the resume epoch, whichever run wrote it)."""

import pickle
import sqlite3
from contextlib import closing
from pathlib import Path

from bytewax.recovery import init_db_dir

from flows.runtime.recovery_store import drop_abandoned, holds_snapshots, resumed_snapshots

STEP = "wayfinder.customer"


def _store(tmp_path: Path) -> Path:
    folder = tmp_path / "recovery"
    folder.mkdir()
    init_db_dir(folder, 1)
    return folder


def _run(
    folder: Path, ex: int, resume: int, fronts: dict[int, int], snaps: dict[int, bytes]
) -> None:
    """What execution `ex`, resumed from epoch `resume`, wrote: how far each worker got
    (`fronts`) and key k's snapshots by epoch, as bytewax writes them."""
    with closing(sqlite3.connect(folder / "part-0.sqlite3")) as db, db:
        db.execute(
            "INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (?, 2, ?)", (ex, resume)
        )
        for worker, frontier in fronts.items():
            db.execute(
                "INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (?, ?, ?)",
                (ex, worker, frontier),
            )
        for epoch, state in snaps.items():
            db.execute(
                "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
                "VALUES (?, ?, ?, ?)",
                (STEP, "k", epoch, pickle.dumps(state)),
            )


def test_a_resume_after_two_crashes_reads_the_run_that_resumed_not_the_one_that_crashed(
    tmp_path,
):
    folder = _store(tmp_path)
    # The first run made k's key at epoch 3 and again (k's next event) at epoch 7, but
    # its workers had finished epoch 5 at most when it crashed.
    _run(folder, 0, 1, {0: 5, 1: 8}, {3: b"first", 7: b"crashed"})
    assert resumed_snapshots(folder, "customer") == [b"first"]
    assert drop_abandoned(folder) == 1  # epoch 7: the second run runs it again
    # The second run resumed at 5 and cut its epochs elsewhere: k's event fell in 6.
    _run(folder, 1, 5, {0: 9, 1: 9}, {6: b"resumed"})
    assert drop_abandoned(folder) == 0
    assert resumed_snapshots(folder, "customer") == [b"resumed"]


def test_a_worker_that_said_nothing_holds_the_resume_at_its_execution_s_start(tmp_path):
    folder = _store(tmp_path)
    _run(folder, 0, 1, {0: 4, 1: 4}, {2: b"before"})
    # The next run's first worker got to epoch 9; the second never wrote its progress.
    _run(folder, 1, 4, {0: 9}, {6: b"unfinished"})
    assert holds_snapshots(folder)
    assert drop_abandoned(folder) == 1  # a resume starts at 4 again
    assert resumed_snapshots(folder, "customer") == [b"before"]


def test_a_store_no_run_has_snapshotted_in_is_left_alone(tmp_path):
    folder = _store(tmp_path)
    assert not holds_snapshots(folder)
    assert drop_abandoned(folder) == 0
