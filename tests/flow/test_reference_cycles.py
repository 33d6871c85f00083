"""A customer's objects hold no reference cycle, so each is freed as soon as the flow
lets it go. `flows.runtime.collector` freezes what survives a full collection while a
run goes on, and a frozen object in a cycle would wait for the next walk of everything
(`WALK_SECONDS` at least): this is what makes freezing safe for the state, which
is most of what a process holds."""

import gc
from collections import Counter
from pathlib import Path

from flows.runtime.settings import ColdSettings
from tests.flow_helpers import EntryPoint, run_embedded, simulated

#: Where the objects a customer is made of are defined: the flow's logic for a key, its
#: context, the events and outputs it holds. (A run's own objects, its dataflow and
#: playbook among them, are in cycles; there is one of each a run, unfrozen when it ends.)
CUSTOMER_MODULES = (
    "flows.dataflow.customer",
    "flows.dataflow.held_state",
    "state.context",
    "schemas.event",
    "schemas.action",
    "schemas.decision",
    "schemas.journey",
)


def test_customers_are_freed_by_reference_counting_alone(entry_point: EntryPoint, tmp_path: Path):
    """The closed loop (identity merges, erasures, actions and their outcomes), with the
    cold tier taking idle customers out of memory as it goes: with the cycle collector
    off, nothing of theirs is left for it to find once the run is over."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept to be looked at
    try:
        run = run_embedded(
            entry_point,
            simulated(300, 24.0, 11),
            tmp_path / "out",
            cold=ColdSettings(after=3600.0, directory=tmp_path / "tier"),
        )
        gc.collect()
        cyclic = Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if type(o).__module__ in CUSTOMER_MODULES
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert run.summary.events > 5_000 and run.summary.customers >= 300, "this proves nothing"
    assert not cyclic, sorted(cyclic.items())
