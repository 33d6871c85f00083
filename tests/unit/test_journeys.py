"""Journeys: entered, progressed, stalled, resumed, completed, abandoned; bounded state."""

from datetime import timedelta

from operators.customer_step import CustomerStep
from operators.journeys import JourneyTracker
from state.context import MAX_FINISHED_JOURNEYS, JourneyInstance, Touch, new_context
from tests.helpers import T0, Harness, default_playbook, ev, instance_token


def purchase(minutes: float = 0, **kw):
    return ev("device_purchased", "store", minutes=minutes, touchpoint="store_high_street", **kw)


def activated(minutes: float, **kw):
    return ev("device_activated", "app", minutes=minutes, touchpoint="activation", **kw)


def test_stall_fires_in_event_time_without_another_event_from_the_customer():
    run = Harness().run([purchase()], until_minutes=48 * 60 + 1)
    (stalled,) = run.transitions("device_activation", "stalled")
    assert stalled.at == T0 + timedelta(hours=48)
    assert stalled.duration_seconds == 48 * 3600


def test_no_stall_before_the_deadline():
    run = Harness().run([purchase()], until_minutes=48 * 60 - 1)
    assert run.transitions("device_activation", "stalled") == []


def test_abandonment_after_the_stall_ends_the_journey_and_its_timer():
    run = Harness().run([purchase()], until_minutes=15 * 24 * 60)
    kinds = [t.kind for t in run.transitions("device_activation")]
    assert kinds == ["entered", "stalled", "abandoned"]
    ctx = run.context()
    assert ctx.journeys == [] and ctx.finished[-1].outcome == "abandoned"
    assert CustomerStep(default_playbook()).next_deadline(ctx) is None


def test_completed_journey_is_summarised_and_holds_no_timer():
    run = Harness().run([purchase(), activated(60)])
    kinds = [t.kind for t in run.transitions("device_activation")]
    assert kinds == ["entered", "progressed", "completed"]
    (completed,) = run.transitions("device_activation", "completed")
    assert completed.duration_seconds == 3600
    assert completed.contact_points == ["store_high_street", "activation"]
    assert completed.channels == ["store", "app"]
    ctx = run.context()
    assert ctx.journeys == []
    assert ctx.finished[-1].journey == "device_activation"
    assert CustomerStep(default_playbook()).next_deadline(ctx) is None


def test_late_event_from_another_device_moves_the_milestone_time_back():
    on_laptop = ev("page_view", "web", minutes=60, touchpoint="activation")
    on_phone_earlier = ev("page_view", "app", minutes=30, touchpoint="activation")
    run = Harness().run([purchase(0), on_laptop, on_phone_earlier])
    assert len(run.transitions("device_activation", "progressed")) == 1
    (inst,) = run.context().journeys
    assert inst.milestones["activation_started"] == (T0 + timedelta(minutes=30)).timestamp()
    assert [(t.ts, t.channel) for t in inst.path] == [
        (T0.timestamp(), "store"),
        (on_phone_earlier.ts.timestamp(), "app"),
        (on_laptop.ts.timestamp(), "web"),
    ]


def test_concurrent_instances_of_a_keyed_journey_stay_apart():
    events = [
        ev("transfer_failed", "app", minutes=0, touchpoint="transfers", transfer_id="t1"),
        ev("transfer_failed", "app", minutes=1, touchpoint="transfers", transfer_id="t2"),
        ev("transfer_completed", "app", minutes=2, touchpoint="transfers", transfer_id="t1"),
    ]
    run = Harness().run(events)
    entered = run.transitions("money_transfer", "entered")
    assert sorted(t.instance for t in entered if t.instance) == sorted(
        instance_token(t) for t in ("t1", "t2")
    )
    assert len(entered) == 2
    (completed,) = run.transitions("money_transfer", "completed")
    assert completed.instance == instance_token("t1")
    assert [j.key for j in run.context().journeys] == ["t2"]


def test_several_journeys_run_at_once_for_one_customer():
    events = [
        purchase(0),
        ev("page_view", "web", minutes=5, touchpoint="help_network"),
        ev("page_view", "web", minutes=6, touchpoint="phones"),
    ]
    run = Harness().run(events)
    open_now = sorted(j.journey for j in run.context().journeys)
    assert open_now == ["device_activation", "network_fault", "phone_upgrade"]


def test_finished_journeys_are_bounded():
    events = []
    for i in range(MAX_FINISHED_JOURNEYS + 5):
        events += [purchase(i * 10), activated(i * 10 + 1)]
    run = Harness().run(events)
    assert len(run.context().finished) == MAX_FINISHED_JOURNEYS
    assert len(run.transitions("device_activation", "completed")) == MAX_FINISHED_JOURNEYS + 5


def test_a_merge_keeps_one_step_for_an_event_both_sides_folded():
    """The customer and the visitor both hold the step of one event (a touch of a
    release before also holds its id): the merged journey has it once, in time order."""
    t = T0.timestamp()
    shared = Touch(t + 60, "web", "activation")
    ours = JourneyInstance("device_activation", "", t, t + 60, "e0")
    ours.path = [Touch(t, "store", "store_high_street"), shared]
    theirs = JourneyInstance("device_activation", "", t + 30, t + 90, "e1")
    theirs.path = [
        Touch(t + 30, "app", "activation"),
        Touch(t + 60, "web", "activation", "e-shared"),  # (the same step, as kept before)
        Touch(t + 90, "web", "activation"),
    ]
    ctx = new_context("cust-1", purchase(), "p-cust-1")
    visitor = new_context("anon:1", purchase(), "p-anon-1")
    ctx.journeys, visitor.journeys = [ours], [theirs]
    JourneyTracker(default_playbook(), str).absorb(ctx, visitor, "login", t + 120)
    (merged,) = ctx.journeys
    assert [(s.ts - t, s.channel) for s in merged.path] == [
        (0, "store"),
        (30, "app"),
        (60, "web"),
        (90, "web"),
    ]
