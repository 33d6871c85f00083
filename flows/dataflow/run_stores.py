"""The on-disk stores a run opens (the cold tier, the context view), closed when it ends.

RocksDB lets one process open a store once: a run that starts in a process where an
earlier run left its store open (a test, a resume in the same process) closes that
first. A store in a temporary folder has the folder removed once it is closed, never
before (RocksDB still writes there while it closes: what it holds in memory, what the
run's end lets go).
"""

from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Protocol

from flows.runtime.recovery_store import resume_epoch
from state.context_view import ContextViewStore


class Store(Protocol):
    path: Path

    def close(self) -> None: ...


#: The stores open now, by folder, with what each does when its run ends well (given
#: the epoch every snapshot before which is durable), and its temporary folder.
_OPEN: dict[Path, tuple[Store, Callable[[int], None] | None, TemporaryDirectory[str] | None]] = {}
#: An epoch after any a run has.
_EVERY_EPOCH = 1 << 62


def opened(
    store: Store,
    *,
    on_end: Callable[[int], None] | None = None,
    folder: TemporaryDirectory[str] | None = None,
) -> None:
    """A run opened `store` (an earlier one at its folder must be closed first:
    `before_opening`); `folder`: its temporary folder, removed once it is closed."""
    _OPEN[store.path.resolve()] = (store, on_end, folder)


def before_opening(path: Path) -> None:
    """Close the store an earlier run of this process left open at `path`."""
    held = _OPEN.pop(path.resolve(), None)
    if held is not None:
        _close(held[0], held[2])


def close_stores(*, ended: bool = False, recovery: Path | None = None) -> None:
    """Close the stores of the runs this process made. `ended`: the run ended well, so
    every epoch it had is in its `recovery` folder (or, without one, nothing goes
    back): each store first lets go of what no resume can need."""
    durable = None
    if ended:
        durable = (resume_epoch(recovery) if recovery is not None else None) or _EVERY_EPOCH
    while _OPEN:
        _path, (store, on_end, folder) = _OPEN.popitem()
        if durable is not None and on_end is not None:
            on_end(durable)
        _close(store, folder)


def _close(store: Store, folder: TemporaryDirectory[str] | None) -> None:
    store.close()
    if folder is not None:
        folder.cleanup()


def open_views(path: Path) -> ContextViewStore:
    """The run's context view store at `path`."""
    before_opening(path)
    views = ContextViewStore(path)
    opened(views)
    return views
