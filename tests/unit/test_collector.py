import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.runtime.collector import (
    SERVICE_MIDDLE,
    WALK_SECONDS,
    YOUNG,
    set_collector,
    survivors_frozen,
)


@pytest.fixture
def thresholds():
    kept = gc.get_threshold()
    yield
    gc.set_threshold(*kept)


def test_the_youngest_generation_is_collected_less_often_the_others_as_they_were(thresholds):
    gc.set_threshold(700, 10, 10)
    set_collector()
    assert gc.get_threshold() == (YOUNG, 10, 10)


def test_a_collector_set_to_collect_less_often_or_turned_off_is_left_so(thresholds):
    gc.set_threshold(YOUNG * 2, 5, 5)
    set_collector()
    assert gc.get_threshold() == (YOUNG * 2, 5, 5)
    gc.set_threshold(0)
    set_collector()
    assert gc.get_threshold()[0] == 0


def test_a_service_collects_its_middle_generation_after_every_second_young_collection(
    thresholds,
):
    gc.set_threshold(700, 10, 10)
    set_collector(service=True)
    assert gc.get_threshold() == (YOUNG, SERVICE_MIDDLE, 10)
    gc.set_threshold(0)
    set_collector(service=True)
    assert gc.get_threshold()[0] == 0


class _Node:
    """An object in a cycle with itself: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _generation_of(thing: object) -> int | None:
    """The generation the collector keeps `thing` in; None once it is frozen.

    Asked of the object, not of `gc.get_freeze_count()`: other threads of a test
    process (pytest-xdist's, those an earlier test left closing a consumer) free frozen
    objects whenever they like, and the count drops with each."""
    for generation in range(3):
        if any(kept is thing for kept in gc.get_objects(generation)):
            return generation
    return None


@contextmanager
def _collected_only_when_asked() -> Iterator[None]:
    """No collection but those a test asks for (the callbacks still run on each)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_what_survives_a_middle_collection_while_a_run_goes_on_is_frozen_then_unfrozen():
    before: list[list[int]] = [[]]
    with survivors_frozen(), _collected_only_when_asked():
        assert gc.get_freeze_count() > 0
        assert _generation_of(before) is None  # (what was there: walked, then frozen)
        kept: list[list[int]] = [[] for _ in range(1000)]
        gc.collect(0)  # a young collection: nothing more frozen
        assert _generation_of(kept[0]) == 1
        gc.collect(1)
        assert _generation_of(kept[0]) is None
    assert gc.get_freeze_count() == 0
    assert _generation_of(kept[0]) == 2


def _frozen_cycle() -> weakref.ref[_Node]:
    """A cycle frozen, then let go: only a walk of everything frees it."""
    node = _Node()
    gc.collect(1)
    return weakref.ref(node)


def test_a_cycle_that_was_frozen_is_collected_once_the_frozen_doubled_and_a_walk_is_due():
    clock = _Clock()
    with survivors_frozen(clock):
        gone = _frozen_cycle()
        clock.now = WALK_SECONDS
        gc.collect()
        assert gone() is not None  # due, but the frozen have not doubled
        grown: list[list[int]] = [[] for _ in range(2 * gc.get_freeze_count())]
        gc.collect(1)
        gc.collect()
        assert gone() is None  # doubled and due: everything walked
        later = _frozen_cycle()
        grown += [[] for _ in range(2 * gc.get_freeze_count())]
        gc.collect(1)
        clock.now = WALK_SECONDS * 1.5
        gc.collect()
        assert later() is not None  # doubled, but walked less than WALK_SECONDS ago
        clock.now = WALK_SECONDS * 2
        gc.collect()
        assert later() is None
    assert gc.get_freeze_count() == 0


def test_a_process_that_freezes_objects_itself_is_left_as_it_is():
    before: list[list[int]] = [[]]
    gc.collect()
    gc.freeze()
    try:
        callbacks = list(gc.callbacks)
        with survivors_frozen(), _collected_only_when_asked():
            assert gc.callbacks == callbacks
            inside: list[list[int]] = [[] for _ in range(1000)]
            gc.collect()
            assert _generation_of(inside[0]) == 2  # walked, not frozen
        assert _generation_of(before) is None  # still frozen
    finally:
        gc.unfreeze()


def test_a_process_that_runs_one_flow_freezes_survivors_until_it_exits():
    said = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc; from flows.runtime.collector import survivors_frozen_until_exit as f; "
            "f(); print(gc.get_freeze_count() > 0, len(gc.callbacks))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert said.stdout.split() == ["True", "1"]
