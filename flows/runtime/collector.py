"""Python's garbage collector, set for a process that holds customers' state.

CPython collects its youngest generation every 700 allocations of containers and the
next one every tenth of those. A context decoded from the cold tier (or a snapshot)
makes a few hundred, so a process that takes customers back collected all the time, and
each middle collection walked thousands of objects: decoding a context while 100,000
others stay in memory took 50 µs on average (a full collection of 1.5 s among them)
against 20 µs with the youngest generation collected every 10,000
(`scripts/cold_tier_load` shows it in the flow). The other thresholds stay as they are:
a full collection still comes only once the long-lived objects have grown by a quarter.

Every 50,000, not 10,000: a young generation that large lets the objects that live for
a while (a batch's events and outputs, the events a customer's rollback keeps until the
epoch's snapshot) die before they are promoted, so the oldest generation grows more
slowly and full collections, each a pass over every customer's objects, come less
often. The embedded run of the benchmark's 100,000 customers spent 15.6 s of 145.5 in
the collector with 10,000 (ten full collections, 11.6 s), and 6.5 s of 135.8 with
50,000 (three, 1.6 s); with the hot set bounded (`scripts/cold_tier_load`, 400,000
customers, at most 100,000 in memory) the medians and p99s are the same either way.

A service (a flow that follows the wall clock) also collects its middle generation after
every second young collection, not every eleventh: a request waits for whatever the flow
is doing, and a middle collection walks every young survivor since the last one. At
5,000 events/s on Kafka (40 s) the longest middle collection took 157 and 201 ms with
the default, 53 ms so; the time in them all was the same (306 and 388 ms, 302 ms). A
replay keeps the default: collected less often, more of what it holds dies young.

While a run goes on (`survivors_frozen`), what survives a collection of the middle
generation is frozen (`gc.freeze`): no later collection walks it again. CPython 3.11's
full collection is not incremental: the flow stops while it walks everything tracked
(some ten objects a customer holds), and no request is answered meanwhile. At 5,000
events/s on Kafka (40 s, 43,000 customers by the end) a full collection took 350-370 ms
and decision requests waited p99 206-417 ms (four runs); with the survivors of full
collections frozen, these took 90-150 ms (each walked what came since the last one) and
the p99 was 107-112 ms; with those of middle collections frozen too, 86-106 ms (88 ms
in the bench's live stage, medians of three).
A frozen object is still freed when its last reference goes (a customer's objects hold
no cycle: `tests/flow/test_reference_cycles.py`); only a cycle among frozen objects
would wait. So everything is walked again once the frozen objects have doubled since the
last walk, at most every `WALK_SECONDS`: whatever waited is then collected, and a
service whose state stays the same size is never walked again.
"""

import atexit
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

#: Allocations between two collections of the youngest generation.
YOUNG = 50_000
#: A service's young collections between two of the middle generation.
SERVICE_MIDDLE = 1


def set_collector(*, service: bool = False) -> None:
    """Collect the youngest generation every `YOUNG` allocations (never more often), and a
    `service`'s middle generation every `SERVICE_MIDDLE` young collections."""
    young, middle, old = gc.get_threshold()
    if young == 0:  # collection turned off by whoever runs us: left so
        return
    gc.set_threshold(max(young, YOUNG), min(middle, SERVICE_MIDDLE) if service else middle, old)


#: The least time between two full collections that walk every object (frozen or not).
WALK_SECONDS = 600.0


class _Freezer:
    """A `gc.callbacks` entry: freezes what each middle or full collection leaves, and
    unfreezes everything before a full one when the frozen objects have doubled since
    the last walk and `WALK_SECONDS` have passed."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        gc.collect()  # (a walk of everything before the run: what is left is frozen)
        gc.freeze()
        self._walked = gc.get_freeze_count()  # objects frozen after the last walk
        self._walked_at = clock()
        self._walking = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            if generation == 2 and self._walk_due():
                gc.unfreeze()  # (this collection walks everything)
                self._walking = True
        elif generation > 0:
            gc.freeze()
            if self._walking:
                self._walked, self._walked_at = gc.get_freeze_count(), self._clock()
                self._walking = False

    def _walk_due(self) -> bool:
        return (
            gc.get_freeze_count() > 2 * self._walked
            and self._clock() - self._walked_at >= WALK_SECONDS
        )


@contextmanager
def survivors_frozen(clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """While inside, what survives a middle collection is frozen; unfrozen at the end, so
    that what a run let go is collected as ever. A process that froze objects itself
    (or turned collection off) is left as it is."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    freezer = _Freezer(clock)
    gc.callbacks.append(freezer)
    try:
        yield
    finally:
        gc.callbacks.remove(freezer)
        gc.unfreeze()


def survivors_frozen_until_exit() -> None:
    """`survivors_frozen` for the rest of a process that runs one flow and exits (a
    process of `python -m bytewax.run`, which runs the flow itself)."""
    stack = ExitStack()
    stack.enter_context(survivors_frozen())
    atexit.register(stack.close)
