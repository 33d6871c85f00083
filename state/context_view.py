"""The context view: each customer's context, readable by other processes while the flow
runs, in a RocksDB store of its own.

The flow writes a customer's view where an epoch ends, if it changed (never per event);
a reader opens the store as a RocksDB secondary instance, which follows the flow's
writes without a lock on it (`ContextViewReader`). Entries are keyed by the customer's
pseudonym; their value is the view (msgpack), which holds the id: deleting one is a
delete, a flush and a compaction of its range down to the last level (no file keeps
it), as the key vault does. Uncompressed, for that to be checkable by a search.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import msgspec
from rocksdict import AccessType

from schemas.context_view import ContextView, DecisionView, JourneyView
from schemas.decision import Decision
from state.context import CustomerContext, is_tombstone
from state.rocks_open import open_rocks
from state.rocks_purge import purge, searchable_options

#: Decisions a view keeps, latest first.
DECISIONS_KEPT = 5

#: The latest erasure's entry (a pseudonym: it names nobody), for readers to catch up.
_ERASED = b"\x00erased"
_ENCODE = msgspec.msgpack.Encoder()
_DECODE = msgspec.msgpack.Decoder(ContextView)


def view_of(
    ctx: CustomerContext,
    decisions: Iterable[DecisionView],
    *,
    watermark: float,
    written_at: float,
) -> ContextView | None:
    """The view of a context (None: a tombstone, which names nobody)."""
    if is_tombstone(ctx) or not ctx.pseudonym:
        return None
    return ContextView(
        customer=ctx.pseudonym,
        id=ctx.key,
        known=ctx.known,
        first_seen=ctx.first_seen,
        last_seen=ctx.last_seen,
        events=ctx.events,
        devices=list(ctx.anonymous_ids),
        value_tier=ctx.value_tier,
        preferred_channel=ctx.preferred_channel,
        consent=dict(ctx.consent),
        segments=list(ctx.segments),
        intent=ctx.intent,
        journeys=[
            JourneyView(j.journey, j.status, j.stage, j.started_at, j.last_at) for j in ctx.journeys
        ],
        decisions=list(decisions)[:DECISIONS_KEPT],
        watermark=watermark,
        written_at=written_at,
    )


def decision_view(decision: Decision) -> DecisionView:
    """What a view says of a decision: the action sent (or the best held back) and why."""
    chosen = next((c for c in decision.candidates if c.status == "sent"), None)
    if chosen is None and decision.candidates:
        chosen = max(decision.candidates, key=lambda c: c.score)
    return DecisionView(
        at=decision.created_at.timestamp(),
        outcome=decision.outcome,
        action=chosen.action if chosen is not None else None,
        channel=chosen.channel if chosen is not None else None,
        reasons=list(chosen.reasons) if chosen is not None else [],
        trigger=decision.trigger_type,
    )


class ContextViewStore:
    """The flow's side: views written and erased (its workers share one)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = open_rocks(path, searchable_options())
        self._lock = threading.Lock()

    def write(self, view: ContextView) -> None:
        self._db[view.customer.encode()] = _ENCODE.encode(view)

    def get(self, customer: str) -> ContextView | None:
        found = self._db.get(customer.encode())
        return None if found is None else _DECODE.decode(found)

    def erase(self, customer: str) -> None:
        """Delete a customer's view, and every byte of it from the files."""
        name = customer.encode()
        with self._lock:
            self._db.delete(name)
            purge(self._db, [(name, name + b"\x00")])
            # A write after it: a secondary reader catches up on the log it follows,
            # and drops what it had read of the customer only at its next entry.
            self._db[_ERASED] = name

    def close(self) -> None:
        self._db.close()


class ContextViewReader:
    """Another process's side: a RocksDB secondary instance of the flow's store, which
    catches up with the flow's writes at each read, and never blocks it."""

    def __init__(self, path: Path) -> None:
        self._own = tempfile.TemporaryDirectory(prefix="wayfinder-view-")
        self._db = open_rocks(path, searchable_options(), AccessType.secondary(self._own.name))

    def view(self, customer: str) -> ContextView | None:
        self._db.try_catch_up_with_primary()
        found = self._db.get(customer.encode())
        return None if found is None else _DECODE.decode(found)

    def close(self) -> None:
        self._db.close()
        self._own.cleanup()
