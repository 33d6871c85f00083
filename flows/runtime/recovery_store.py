"""Erasure in bytewax's recovery store: no erased customer left in its files.

bytewax keeps each key's snapshots in SQLite partitions (`snaps`: step, state key,
epoch, bytes). When a customer is erased the customer step keeps a tombstone under
its key (later dropped: a deletion marker); the older snapshots stay as rows until
garbage collection (longer with a backup interval), and deleted rows stay as bytes
in freed pages and in the write-ahead log. Other steps' older snapshots may hold the
customer too (the input's records held for a round, examples waiting to be learned).

`scrub` drops every snapshot from before the latest erasure that a later one
replaces, of every step (a resume never reads them; an archived backup could, which
is what an erasure must prevent), with SQLite's secure deletion on, then checkpoints
the write-ahead log and rewrites the file: nothing of the erased customer is left,
not a row, not a freed page. What stays is each key's latest snapshot, and the
tombstone names nobody.

It needs the store to itself: `wayfinder run` scrubs before it resumes and after it
ends; a Kafka deployment runs `wayfinder scrub-recovery DIR` while the flow is
stopped (between a stop and a restart, as a deployment does anyway).

`drop_abandoned` drops what a crashed run snapshotted at or after the epoch the next
run resumes from. bytewax keeps those rows, and a resume reads each key's latest row
before its epoch, whichever run wrote it: the resumed run cuts its epochs elsewhere,
so a key it changed once before such an epoch and not since would come back, at a
later resume, as the crashed run had it (a customer's key made twice: the vault holds
the second, the state the first, and what is sealed under it never opens again).
"""

import fcntl
import os
import pickle
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

from state.context import is_tombstone_snapshot

#: The latest erasure a resume can see: a deletion marker or an erased customer's
#: tombstone, before the epoch a resume starts from.
_LAST_ERASURE = """
SELECT MAX(snap_epoch) FROM snaps
WHERE snap_epoch < :resume AND (ser_change IS NULL OR erased(ser_change))
"""

#: Every snapshot from before that erasure that a later one (still before the resume
#: epoch) replaces: of the erased customer, and of every other step whose state may
#: have held their records then (the input's held records, waiting examples).
_DROP = """
DELETE FROM snaps
WHERE snap_epoch < :erased
  AND EXISTS (
    SELECT 1 FROM snaps AS later
    WHERE later.step_id = snaps.step_id
      AND later.state_key = snaps.state_key
      AND later.snap_epoch > snaps.snap_epoch
      AND later.snap_epoch < :resume
  )
"""


class UnusableRecoveryFolder(Exception):
    """A recovery folder that no run can resume from (said before bytewax tries)."""


#: The folders this process holds, by path: their lock files, open for its life.
_HELD: dict[Path, int] = {}


def hold(directory: Path, process: int | None = None) -> None:
    """Hold a recovery folder for this process's life. Two runs snapshotting into one
    folder (a service started twice, a restart that overlaps the old process) would
    each resume from the other's snapshots: the second is refused in one sentence.
    The lock is a file beside the folder (one inside would make a new folder look
    like one to resume from); the system drops it when the process ends, however.
    `process`: this process's id in a cluster, whose processes share the folder (each
    holds its own part of it)."""
    directory = directory.resolve()
    if directory in _HELD:
        return
    suffix = ".lock" if process is None else f".process-{process}.lock"
    lock = directory.with_name(directory.name + suffix)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UnusableRecoveryFolder(
            f"{directory} is in use by another run (process {holder}): stop it first, "
            "or give this run a folder of its own"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[directory] = fd


def earlier_start(directory: Path, now: float) -> float | None:
    """When a run began in this folder before any snapshot was taken in it (None: none
    did, and `now` is recorded as this one's start). A run that crashed before its
    first snapshot may have published from then on, and the run after it replays that
    input from its start. The time is a file beside the folder, which the first process
    of a cluster to start writes; `forget_start` drops it once snapshots say more (the
    run resumes from them, or has taken a few)."""
    mark = directory.with_name(directory.name + ".started")
    try:
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return float(mark.read_text())
        except (OSError, ValueError):  # being written by another process: it started now
            return None
    with os.fdopen(fd, "w") as out:
        out.write(repr(now))
    return None


def kept_at(directory: Path, what: str, folder: Path | None) -> None:
    """Say beside a recovery folder where the runs resuming from it keep `what` (a cold
    tier, a key vault; None: nowhere), so that a resume looking elsewhere is seen
    (`kept_before`). Every process of a cluster says the same: each replaces the file
    whole."""
    record = directory.with_name(f"{directory.name}.{what}")
    written = record.with_name(f"{record.name}.{os.getpid()}.{threading.get_ident()}")
    written.write_text("" if folder is None else str(folder.resolve()))
    os.replace(written, record)


def kept_before(directory: Path, what: str) -> Path | None:
    """Where the runs before kept `what` (`kept_at`); None: nowhere, or never said."""
    try:
        said = directory.with_name(f"{directory.name}.{what}").read_text().strip()
    except FileNotFoundError:
        return None
    return Path(said) if said else None


def forget_start(directory: Path) -> None:
    """The folder holds snapshots, which say since when a resumed run may have published."""
    directory.with_name(directory.name + ".started").unlink(missing_ok=True)


def release(directory: Path) -> None:
    """Let go of a folder this process held (its run has ended)."""
    fd = _HELD.pop(directory.resolve(), None)
    if fd is not None:
        os.close(fd)  # (the lock goes with it)


def check(directory: Path) -> None:
    """Refuse, in one sentence, a folder that holds files but not a recovery store
    bytewax can open: a partition that is not an SQLite file (damaged, truncated,
    something else under its name), or no partition at all."""
    parts = sorted(directory.glob("part-*.sqlite3"))
    if not parts:
        raise UnusableRecoveryFolder(
            f"{directory} holds no recovery partition (part-*.sqlite3): "
            "give a new or empty folder, or the one the run before wrote"
        )
    for part in parts:
        if not _is_store(part):
            raise UnusableRecoveryFolder(
                f"{part} is not a bytewax recovery partition (damaged, or another file): "
                "restore the folder from a backup, or start from a new one (the run "
                "then starts where WAYFINDER_KAFKA_START says, or from the start of its input)"
            )


def scrub(directory: Path) -> int:
    """Drop the snapshots of erased keys from every partition of a recovery folder and
    rewrite the files without freed pages; returns how many snapshots were dropped."""
    parts = _stores(directory)
    resume = _resume_epoch(parts)
    erased = None if resume is None else _last_erasure(parts, resume)
    if erased is None:
        return 0
    return _delete(parts, _DROP, {"resume": resume, "erased": erased}, rewrite=True)


def drop_abandoned(directory: Path) -> int:
    """Drop the snapshots of epochs the run that resumes from this folder runs again (a
    crashed run's, from at or after the resume epoch); returns how many. Called before
    the run starts: in a cluster every process calls it before connecting, and no
    process snapshots anything before all have connected."""
    parts = _stores(directory)
    resume = _resume_epoch(parts)
    if resume is None:
        return 0
    return _delete(parts, "DELETE FROM snaps WHERE snap_epoch >= :resume", {"resume": resume})


def _delete(
    parts: list[Path], statement: str, params: dict[str, int | None], *, rewrite: bool = False
) -> int:
    """Delete rows from each partition with SQLite's secure deletion on (`rewrite`: and
    rewrite the file, so no freed page keeps old bytes); returns how many."""
    dropped = 0
    for part in parts:
        db = sqlite3.connect(part, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA secure_delete = ON")
            dropped += db.execute(statement, params).rowcount
            if rewrite:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                db.execute("VACUUM")  # a new file
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    return dropped


def holds_snapshots(directory: Path) -> bool:
    """Whether a run would resume from this folder's snapshots: a run before took one
    (its workers said how far they had got)."""
    for part in _stores(directory):
        with closing(sqlite3.connect(part, timeout=30.0)) as db:
            if db.execute("SELECT 1 FROM fronts LIMIT 1").fetchone():
                return True
    return False


def resumed_snapshots(directory: Path, step: str) -> list[object]:
    """What one step's logics resume from in a run that starts from this folder: each
    key's latest snapshot before the resume epoch, as the step wrote it (none: nothing
    to resume). `step`: the step's name, without the flow's."""
    parts = _stores(directory)
    resume = _resume_epoch(parts)
    if resume is None:
        return []
    latest: dict[str, tuple[int, bytes | None]] = {}
    for part in parts:
        with closing(sqlite3.connect(part, timeout=30.0)) as db:
            rows = db.execute(
                "SELECT state_key, snap_epoch, ser_change FROM snaps "
                "WHERE step_id LIKE :step AND snap_epoch < :resume",
                {"step": f"%.{step}", "resume": resume},
            ).fetchall()
        for key, epoch, change in rows:
            if key not in latest or epoch > latest[key][0]:
                latest[key] = (epoch, change)
    # The store that bytewax and this flow wrote: each row pickled by bytewax.
    return [pickle.loads(change) for _epoch, change in latest.values() if change is not None]


def resume_epoch(directory: Path) -> int | None:
    """The epoch a run resuming from this folder would start from now (None: it holds no
    snapshots): every epoch before it is in the folder, complete."""
    return _resume_epoch(_stores(directory)) if directory.is_dir() else None


def _stores(directory: Path) -> list[Path]:
    """The folder's recovery partitions (files that are not are left alone)."""
    return [part for part in sorted(directory.glob("part-*.sqlite3")) if _is_store(part)]


def _is_store(part: Path) -> bool:
    """Whether a file is a bytewax recovery partition with its tables."""
    try:
        with closing(sqlite3.connect(part, timeout=30.0)) as db:
            names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError:  # not a database, or a damaged one
        return False
    return {"snaps", "fronts", "exs"} <= names


def _resume_epoch(parts: list[Path]) -> int | None:
    """The epoch a resume starts from, as bytewax computes it: the lowest frontier of the
    workers of the latest execution, a worker that wrote none counting at the epoch
    that execution resumed from (every snapshot before it is complete, and is all a
    resume reads)."""
    executions: dict[int, tuple[int, int]] = {}  # number: (workers, resume epoch)
    fronts: dict[tuple[int, int], int] = {}  # (execution, worker): frontier
    for part in parts:
        with closing(sqlite3.connect(part, timeout=30.0)) as db:
            for ex, workers, resume in db.execute(
                "SELECT ex_num, worker_count, resume_epoch FROM exs"
            ):
                executions[ex] = (workers, resume)
            for ex, worker, frontier in db.execute(
                "SELECT ex_num, worker_index, worker_frontier FROM fronts"
            ):
                fronts[ex, worker] = max(frontier, fronts.get((ex, worker), frontier))
    if not executions:
        return None
    latest = max(executions)
    workers, resume = executions[latest]
    return min(max(resume, fronts.get((latest, w), resume)) for w in range(workers))


def _last_erasure(parts: list[Path], resume: int) -> int | None:
    epochs: list[int] = []
    for part in parts:
        with closing(sqlite3.connect(part, timeout=30.0)) as db:
            db.create_function("erased", 1, _is_tombstone, deterministic=True)
            (epoch,) = db.execute(_LAST_ERASURE, {"resume": resume}).fetchone()
            if epoch is not None:
                epochs.append(epoch)
    return max(epochs) if epochs else None


def _is_tombstone(change: bytes) -> bool:
    """Whether a snapshot row holds an erased customer's tombstone (bytewax pickles what
    a step snapshots; the customer step snapshots bytes)."""
    state = pickle.loads(change)  # the store that bytewax and this flow wrote
    return isinstance(state, bytes) and is_tombstone_snapshot(state)
