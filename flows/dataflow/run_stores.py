"""The on-disk stores a run opens (the cold tier, the context view), closed when it ends.

RocksDB lets one process open a store once: a run that starts in a process where an
earlier run left its store open (a test, a resume in the same process) closes that
first.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flows.runtime.recovery_store import resume_epoch
from state.context_view import ContextViewStore


class Store(Protocol):
    path: Path

    def close(self) -> None: ...


#: The stores open now, by folder, with what each does when its run ends well (given
#: the epoch every snapshot before which is durable).
_OPEN: dict[Path, tuple[Store, Callable[[int], None] | None]] = {}
#: An epoch after any a run has.
_EVERY_EPOCH = 1 << 62


def opened(store: Store, *, on_end: Callable[[int], None] | None = None) -> None:
    """A run opened `store` (an earlier one at its folder must be closed first:
    `before_opening`)."""
    _OPEN[store.path.resolve()] = (store, on_end)


def before_opening(path: Path) -> None:
    """Close the store an earlier run of this process left open at `path`."""
    held = _OPEN.pop(path.resolve(), None)
    if held is not None:
        held[0].close()


def close_stores(*, ended: bool = False, recovery: Path | None = None) -> None:
    """Close the stores of the runs this process made. `ended`: the run ended well, so
    every epoch it had is in its `recovery` folder (or, without one, nothing goes
    back): each store first lets go of what no resume can need."""
    durable = None
    if ended:
        durable = (resume_epoch(recovery) if recovery is not None else None) or _EVERY_EPOCH
    while _OPEN:
        _path, (store, on_end) = _OPEN.popitem()
        if durable is not None and on_end is not None:
            on_end(durable)
        store.close()


def open_views(path: Path) -> ContextViewStore:
    """The run's context view store at `path`."""
    before_opening(path)
    views = ContextViewStore(path)
    opened(views)
    return views
