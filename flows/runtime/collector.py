"""Python's garbage collector, set for a process that holds customers' state.

CPython collects its youngest generation every 700 allocations of containers and the
next one every tenth of those. A context decoded from the cold tier (or a snapshot)
makes a few hundred, so a process that takes customers back collected all the time, and
each middle collection walked thousands of objects: decoding a context while 100,000
others stay in memory took 50 µs on average (a full collection of 1.5 s among them)
against 20 µs with the youngest generation collected every 10,000
(`scripts/cold_tier_load` shows it in the flow). The other thresholds stay as they are:
a full collection still comes only once the long-lived objects have grown by a quarter.
"""

import gc

#: Allocations between two collections of the youngest generation.
YOUNG = 10_000


def set_collector() -> None:
    """Collect the youngest generation every `YOUNG` allocations (never more often)."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG:  # (0: collection turned off by whoever runs us; left so)
        gc.set_threshold(YOUNG, middle, old)
