"""One object for each thread that asks, kept by the thread's id.

Not a `threading.local`: bytewax lets go of a worker thread's Python state between some
of its steps, and a thread's locals go with it (a short run of two workers made 44
zstd compressors and 16 shares of the state gauges where two of each were due). A thread
that ends leaves its object to the next that gets its id, never to two threads at once.
"""

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    """`get()`: this thread's object, made by `make` at its first call."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._by_thread: dict[int, T] = {}

    def get(self) -> T:
        thread = threading.get_ident()
        found = self._by_thread.get(thread)
        if found is None:
            found = self._by_thread[thread] = self._make()  # (only this thread writes it)
        return found

    def every(self) -> list[T]:
        """Every thread's object so far."""
        return list(self._by_thread.values())
