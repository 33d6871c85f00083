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
"""

import gc

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
