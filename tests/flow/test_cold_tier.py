"""The cold tier in the embedded flow: customers idle for an hour of event time, or seen
longest ago when the hot set is full, leave memory and come back, and nothing anyone
reads changes."""

import gc
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from flows.dataflow.clock import EventClock
from flows.dataflow.cold_tier import ColdTier, Wake, open_cold_tier
from flows.dataflow.customer import CustomerLogic
from flows.dataflow.run_stores import Place, close_stores, shapes_beside
from flows.runtime.settings import ColdSettings, SettingsError
from operators.customer_step import CustomerStep
from schemas.event import Event
from schemas.journey import JourneyTransition
from state.rocks_customer_store import RocksCustomerStore
from tests.flow_helpers import ENTRY_POINTS, EntryPoint, every_output, run_embedded, simulated
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
    # Each batch's customers were read from the tier together, ahead of their step.
    ahead = REGISTRY.get_sample_value("wayfinder_cold_store_takes_read_ahead")
    # (one changed in an epoch made durable between is looked up alone: a few at most)
    assert ahead is not None and ahead >= 0.9 * returned


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


def test_a_wake_goes_by_the_watermark_the_tier_asked_at(tmp_path: Path) -> None:
    """A service's watermark follows the wall clock only while nothing is in flight, and
    a wake is: the record that brings it may be stamped with a watermark behind the one
    the tier found a deadline due (or a customer idle) at. The customer's logic goes by
    the tier's, so a deadline is fired when it is handed over (else the customer would
    leave again, still due, and come back, over and over, with nothing done)."""
    step = CustomerStep(default_playbook())
    clock = EventClock()
    store = RocksCustomerStore(tmp_path / "tier")
    tier = ColdTier(store, 3600.0, clock=clock, first_epoch=1, timers=True, look_every=0.0)
    purchase = ev("device_purchased", "store", customer="cust-K1", touchpoint="store_high_street")
    bought = purchase.ts.timestamp()
    key = step.pseudonym_of("cust-K1")
    logic = CustomerLogic(step, None, timers=True, clock=clock, ledger=None, cold=tier)
    clock.advance(bought)
    logic.on_batch([("cust-K1", purchase, (bought, bought, 0.0, 1))])
    logic.notify_at()
    due = step.next_deadline(logic._ctx)
    assert due is not None
    clock.advance(bought + 3600.0)
    (idle,) = tier.wakes()
    behind = bought + 60.0  # (the stamp: before the customer was idle, or anything due)
    _outputs, left = logic.on_batch([("", idle, (behind, behind, 0.0, 1))])
    assert left and store.get(key) is not None  # idle as the tier saw it
    clock.advance(due)
    (woken,) = tier.wakes()
    assert woken.kind == "due" and woken.at >= due
    back = CustomerLogic(step, None, timers=True, clock=clock, ledger=None, cold=tier)
    outputs, _discard = back.on_batch([("", woken, (behind, behind, 0.0, 2))])
    assert [o.kind for o in outputs if type(o) is JourneyTransition] == ["stalled"]
    assert step.next_deadline(back._ctx) != due
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


def test_a_resume_that_would_not_find_the_tiers_customers_is_refused(tmp_path: Path) -> None:
    """bytewax routes a customer to a worker by the count of workers: a tier kept by one
    shape of cluster holds customers another shape looks for elsewhere, and a run with
    the tier off looks nowhere. Each process of a cluster has a folder of its own, named
    after the shape; a resume by another shape, or with the tier off, is refused in one
    sentence while the tier holds anyone at the epoch it resumes from. Once nobody is
    in it (a bounded run brought everyone back), the new shape removes it."""
    recovery, base = tmp_path / "recovery", tmp_path / "tier"
    alone = ColdSettings(after=3600.0, directory=base)
    run_embedded(
        ENTRY_POINTS["run_main"],
        simulated(20, 2.0, 3),
        tmp_path / "out",
        recovery=recovery,
        cold=alone,
    )
    close_stores()
    kept = RocksCustomerStore(base)  # a customer cold at the snapshot resumed from
    kept.put("cust-cold", b"\x80", epoch=1, due=None)
    kept.close()

    def resume(settings: ColdSettings, place: Place | None = None) -> ColdTier | None:
        return open_cold_tier(
            settings, recovery=recovery, clock=EventClock(), timers=True, place=place
        )

    with pytest.raises(SettingsError, match=r"\(1 kept by a process alone\)"):
        resume(alone, Place(0, 2, 1))
    with pytest.raises(SettingsError, match="with the cold tier off"):
        resume(ColdSettings(after=None, directory=base))
    tier = resume(alone)  # the shape that kept it
    assert tier is not None and tier.store.get("cust-cold") == b"\x80"
    tier.store.gone("cust-cold", epoch=1)  # (as if the run had brought them back)
    close_stores()
    # The processes of the new shape start at once: each counts what the old tier holds
    # while others have it open (no lock), and only the first removes it.
    other = RocksCustomerStore(base)
    for process in (1, 0):
        tier = resume(alone, Place(process, 2, 1))
        assert tier is not None and isinstance(tier.store, RocksCustomerStore)
        assert tier.store.path == tmp_path / f"tier.p{process}of2x1"
        if process == 1:
            assert base.exists()
            other.close()
    close_stores()
    assert not base.exists()
    assert sorted(shapes_beside(base)) == ["2x1"]


def test_a_resume_that_would_look_for_the_tier_elsewhere_is_refused(tmp_path: Path) -> None:
    """Where a run keeps its tier is said beside the recovery folder: a resume that looks
    elsewhere (WAYFINDER_COLD_DIR changed, or unset) is refused in one sentence while the
    tier still holds customers where it was; the tier moved there whole is found."""
    recovery, kept_at, elsewhere = tmp_path / "recovery", tmp_path / "tier", tmp_path / "other"
    run_embedded(
        ENTRY_POINTS["run_main"],
        simulated(20, 2.0, 3),
        tmp_path / "out",
        recovery=recovery,
        cold=ColdSettings(after=3600.0, directory=kept_at),
    )
    close_stores()
    held = RocksCustomerStore(kept_at)  # a customer cold at the snapshot resumed from
    held.put("cust-cold", b"\x80", epoch=1, due=None)
    held.close()

    def resume(settings: ColdSettings) -> ColdTier | None:
        return open_cold_tier(settings, recovery=recovery, clock=EventClock(), timers=True)

    for settings in (
        ColdSettings(after=3600.0, directory=elsewhere),
        ColdSettings(after=3600.0),  # (beside the recovery folder)
        ColdSettings(after=None),
    ):
        with pytest.raises(SettingsError, match=rf"is at {kept_at} \(1 customer held there\)"):
            resume(settings)
    assert not elsewhere.exists()
    kept_at.rename(elsewhere)  # moved whole: found where it is now
    tier = resume(ColdSettings(after=3600.0, directory=elsewhere))
    assert tier is not None and tier.store.get("cust-cold") == b"\x80"
    close_stores()
    assert (tmp_path / "recovery.cold-dir").read_text() == str(elsewhere.resolve())
