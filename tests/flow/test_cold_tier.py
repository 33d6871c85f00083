"""The cold tier in the embedded flow: customers idle for an hour of event time, or seen
longest ago when the hot set is full, leave memory and come back, and nothing anyone
reads changes."""

import gc
from pathlib import Path

from prometheus_client import REGISTRY

from flows.dataflow.clock import EventClock
from flows.dataflow.cold_tier import ColdTier, Wake, open_cold_tier
from flows.dataflow.customer import CustomerLogic
from flows.dataflow.run_stores import close_stores
from flows.runtime.settings import ColdSettings
from operators.customer_step import CustomerStep
from schemas.event import Event
from state.rocks_customer_store import RocksCustomerStore
from tests.flow_helpers import EntryPoint, every_output, run_embedded, simulated
from tests.helpers import default_playbook, ev

#: The flow tests' closed loop (some 10,000 records), a day of it: most customers are
#: idle for an hour somewhere in it.
CUSTOMERS, HOURS, SEED = 300, 24.0, 11


def _moves(way: str) -> float:
    return REGISTRY.get_sample_value("wayfinder_cold_tier_moves_total", {"way": way}) or 0.0


def _moved_changing_no_output(
    entry_point: EntryPoint, tmp_path: Path, tier: ColdSettings
) -> tuple[float, float]:
    """Runs the simulation with everyone in memory, then with `tier`: every output the
    same; returns how many left memory and came back."""
    hot = tmp_path / "hot"
    run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), hot, cold=ColdSettings(None))
    left, returned = _moves("left"), _moves("returned")
    cold = tmp_path / "cold"
    run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), cold, cold=tier)
    expected, found = every_output(hot), every_output(cold)
    assert all(expected[name] for name in expected)
    for name, lines in expected.items():
        assert found[name] == lines, name
    return _moves("left") - left, _moves("returned") - returned


def test_customers_who_leave_memory_and_come_back_change_no_output(
    entry_point: EntryPoint, tmp_path: Path
) -> None:
    tier = ColdSettings(after=3600.0, directory=tmp_path / "tier")
    left, returned = _moved_changing_no_output(entry_point, tmp_path, tier)
    assert left > CUSTOMERS / 2 and returned > CUSTOMERS / 2


def test_a_full_hot_set_sends_the_customers_seen_longest_ago_to_the_tier(tmp_path: Path) -> None:
    """With `most` customers in memory, the next one seen makes the one seen longest ago
    leave, idle or not; one seen again since the tier watched them stays (and is
    watched anew), and the next least recent goes instead."""
    step = CustomerStep(default_playbook())
    clock = EventClock()
    store = RocksCustomerStore(tmp_path / "tier")
    tier = ColdTier(store, 30 * 86400.0, clock=clock, first_epoch=1, most=2)
    logics: dict[str, CustomerLogic] = {}

    def deliver(customer: str, value: Event | Wake, at: float) -> bool:
        key = value.key if isinstance(value, Wake) else step.pseudonym_of(customer)
        logic = logics.get(key) or CustomerLogic(
            step, None, timers=False, clock=clock, ledger=None, cold=tier
        )
        _outputs, discard = logic.on_batch([(customer, value, (at, at, 0.0, 1))])
        if discard:
            logics.pop(key, None)
        else:
            logics[key] = logic
            logic.notify_at()
        return discard

    def visit(customer: str, minutes: float) -> None:
        event = ev("page_view", "web", minutes=minutes, customer=customer, touchpoint="phones")
        clock.advance(event.ts.timestamp())
        deliver(customer, event, event.ts.timestamp())

    def hand_over() -> list[str]:
        """The tier's wakes, delivered; the customers that left memory."""
        left = []
        for wake in tier.wakes():
            if deliver("", wake, clock.watermark):
                left.append(wake.key)
        return left

    visit("cust-A", 0)
    visit("cust-B", 1)
    assert hand_over() == []
    visit("cust-C", 2)
    assert hand_over() == [step.pseudonym_of("cust-A")]
    assert len(store) == 1 and len(logics) == 2
    visit("cust-B", 3)  # B is seen again: C is now the one seen longest ago
    visit("cust-A", 4)  # A comes back from the tier
    assert len(store) == 0
    assert hand_over() == []  # (B's entry was stale: B is watched anew)
    assert hand_over() == [step.pseudonym_of("cust-C")]
    assert sorted(logics) == sorted(step.pseudonym_of(c) for c in ("cust-A", "cust-B"))
    assert store.get(step.pseudonym_of("cust-C")) is not None
    store.close()


def test_a_hot_set_bounded_by_count_changes_no_output(
    entry_point: EntryPoint, tmp_path: Path
) -> None:
    """Idle time far off (a year): only the bound sends customers to the tier."""
    most = CUSTOMERS // 10
    tier = ColdSettings(after=365 * 86400.0, directory=tmp_path / "tier", most=most)
    left, returned = _moved_changing_no_output(entry_point, tmp_path, tier)
    assert left > CUSTOMERS and returned > CUSTOMERS


def test_a_temporary_tier_folder_is_removed_only_once_its_store_is_closed() -> None:
    """A run without a folder for the tier has a temporary one. The run's end closes the
    store after the flow (and its tier) is gone, and RocksDB still writes there then:
    the takes not written yet, what the end lets go."""
    tier = open_cold_tier(ColdSettings(after=60.0), recovery=None, clock=EventClock(), timers=False)
    assert tier is not None
    store = tier.store
    assert isinstance(store, RocksCustomerStore)
    folder = store.path
    store.put("a", b"a's context" * 100, epoch=1, due=None)
    assert store.take("a", epoch=2) is not None  # (written where the run ends)
    del tier
    gc.collect()
    assert folder.is_dir()
    close_stores(ended=True)
    assert not folder.exists()
