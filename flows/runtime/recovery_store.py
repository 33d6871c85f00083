"""Erasure in bytewax's recovery store: no erased customer left in its files.

bytewax keeps each key's snapshots in SQLite partitions (`snaps`: step, state key,
epoch, bytes). When a customer is erased the customer step discards its key, and
bytewax writes a deletion marker (no bytes) at that epoch; the older snapshots stay
as rows until garbage collection (longer with a backup interval), and deleted rows
stay as bytes in freed pages and in the write-ahead log. `scrub` drops every older
snapshot of a key whose latest snapshot is a deletion marker the store has committed
(a resume can never need it), with SQLite's secure deletion on, then checkpoints the
write-ahead log and rewrites the file, so nothing of the erased customer is left in
it: not a row, not a freed page.

It needs the store to itself: `wayfinder run` scrubs before it resumes and after it
ends; a Kafka deployment runs `wayfinder scrub-recovery DIR` while the flow is
stopped (between a stop and a restart, as a deployment does anyway).
"""

import pickle
import sqlite3
from contextlib import closing
from pathlib import Path

from state.context import is_tombstone_snapshot

#: Older snapshots of keys whose latest snapshot, before the epoch a resume starts
#: from, is a deletion marker or an erased customer's tombstone.
_DROP = """
DELETE FROM snaps
WHERE ser_change IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM snaps AS gone
    WHERE gone.step_id = snaps.step_id
      AND gone.state_key = snaps.state_key
      AND (gone.ser_change IS NULL OR erased(gone.ser_change))
      AND gone.snap_epoch > snaps.snap_epoch
      AND gone.snap_epoch < :resume
      AND NOT EXISTS (
        SELECT 1 FROM snaps AS later
        WHERE later.step_id = gone.step_id
          AND later.state_key = gone.state_key
          AND later.snap_epoch > gone.snap_epoch
      )
  )
"""


def scrub(directory: Path) -> int:
    """Drop the snapshots of erased keys from every partition of a recovery folder and
    rewrite the files without freed pages; returns how many snapshots were dropped."""
    parts = sorted(directory.glob("part-*.sqlite3"))
    resume = _resume_epoch(parts)
    if resume is None:
        return 0
    dropped = 0
    for part in parts:
        db = sqlite3.connect(part, timeout=30.0, isolation_level=None)
        try:
            db.create_function("erased", 1, _is_tombstone, deterministic=True)
            db.execute("PRAGMA secure_delete = ON")
            dropped += db.execute(_DROP, {"resume": resume}).rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")  # a new file: no freed page keeps old bytes
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    return dropped


def _resume_epoch(parts: list[Path]) -> int | None:
    """The epoch a resume starts from: the lowest frontier of the workers of the latest
    execution (every snapshot before it is complete, and is all a resume reads)."""
    fronts: list[tuple[int, int]] = []
    for part in parts:
        with closing(sqlite3.connect(part, timeout=30.0)) as db:
            fronts += db.execute("SELECT ex_num, worker_frontier FROM fronts").fetchall()
    if not fronts:
        return None
    latest = max(ex for ex, _frontier in fronts)
    return min(frontier for ex, frontier in fronts if ex == latest)


def _is_tombstone(change: bytes) -> bool:
    """Whether a snapshot row holds an erased customer's tombstone (bytewax pickles what
    a step snapshots; the customer step snapshots bytes)."""
    state = pickle.loads(change)  # the store that bytewax and this flow wrote
    return isinstance(state, bytes) and is_tombstone_snapshot(state)
