"""The on-disk stores a run opens (the cold tier, the context view), closed when it ends.

RocksDB lets one process open a store once: a run that starts in a process where an
earlier run left its store open (a test, a resume in the same process) closes that
first. A store in a temporary folder has the folder removed once it is closed, never
before (RocksDB still writes there while it closes: what it holds in memory, what the
run's end lets go).

A process of a cluster keeps stores of its own (RocksDB has one writer), in folders
named after the folder set and where the process stands (`Place`): `cold` is
`cold.p0of2x1` and `cold.p1of2x1` on a cluster of two processes of one worker each.
"""

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import NamedTuple, Protocol

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


class Place(NamedTuple):
    """Where a process stands in a cluster. It holds the customers bytewax routes to its
    workers, which depends on the count of processes and of workers in each: what a
    store of one cluster's shape holds, another routes elsewhere."""

    process: int
    processes: int
    workers: int

    def shape(self) -> str:
        return f"{self.processes}x{self.workers}"


def own_folder(folder: Path, place: Place | None) -> Path:
    """The folder of this process's store of those set at `folder` (a process alone:
    `folder` itself)."""
    if place is None:
        return folder
    return folder.with_name(f"{folder.name}.p{place.process}of{place.shape()}")


def shape_of(place: Place | None) -> str:
    """A cluster's shape, processes x workers ("1": a process alone)."""
    return "1" if place is None else place.shape()


def drop_other_shapes(folder: Path, place: Place | None) -> None:
    """Remove the stores set at `folder` by clusters of another shape: no process of
    this run reads them, and what they hold of a customer it would never update."""
    for shape, kept in shapes_beside(folder).items():
        if shape != shape_of(place):
            for path in kept:
                before_opening(path)
                shutil.rmtree(path, ignore_errors=True)


def shapes_beside(folder: Path) -> dict[str, list[Path]]:
    """The processes' folders of the stores set at `folder`, by the shape of the cluster
    that kept them ("1": a process alone, `folder` itself). Only RocksDB stores count: a
    folder set but never opened by a run is nobody's."""
    found: dict[str, list[Path]] = {}
    if (folder / "CURRENT").is_file():
        found["1"] = [folder]
    pattern = re.compile(re.escape(folder.name) + r"\.p\d+of(\d+x\d+)")
    if folder.parent.is_dir():
        for path in sorted(folder.parent.iterdir()):
            named = pattern.fullmatch(path.name)
            if named is not None and (path / "CURRENT").is_file():
                found.setdefault(named.group(1), []).append(path)
    return found


def open_views(path: Path, place: Place | None = None) -> ContextViewStore:
    """The run's context view store set at `path` (this process's, in a cluster)."""
    drop_other_shapes(path, place)  # (an erasure here would not reach a copy there)
    path = own_folder(path, place)
    before_opening(path)
    views = ContextViewStore(path)
    opened(views)
    return views
