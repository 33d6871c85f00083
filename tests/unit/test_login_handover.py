"""A login's hand-over: the customer waits for the device's answer, then folds what
waited, so a merge lands at the same point of the stream however long it took."""

from operators.customer_step import MAX_HELD, MERGE_WAIT, CustomerStep
from schemas.event import Event
from state.context import CustomerContext
from tests.helpers import default_playbook, ev

DEVICE = "anon:laptop-1"


def login_and_answer(
    step: CustomerStep, *, browsed: bool = True
) -> tuple[CustomerContext, Event, Event]:
    """The customer has folded a login from the laptop; the laptop's answer (its merge,
    or that it has nothing) is on its way."""
    visitor = None
    if browsed:
        browse = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
        visitor, _ = step.on_event(DEVICE, None, browse)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    _alias, outputs = step.on_event(DEVICE, visitor, login)
    (answer,) = [o for o in outputs if isinstance(o, Event) and o.type == "profile_merge"]
    ctx, _ = step.on_event("cust-1", None, login)
    assert ctx is not None and ctx.awaiting == answer.event_id
    return ctx, login, answer


def waiting(ctx: CustomerContext) -> bool:
    """Whether the customer waits for an answer (a call, so a type checker does not
    take an earlier assert for the state after the step changed it)."""
    return ctx.awaiting is not None


def test_what_arrives_before_the_answer_waits_and_is_folded_after_it():
    step = CustomerStep(default_playbook())
    ctx, _login, answer = login_and_answer(step)
    later = [ev("page_view", "app", minutes=2 + i, touchpoint="plans") for i in range(3)]
    for event in later:
        ctx_after, outputs = step.on_event("cust-1", ctx, event)
        assert ctx_after is ctx and outputs == []
    assert len(ctx.held) == 3 and ctx.events == 1
    after, outputs = step.on_event("cust-1", ctx, answer)
    assert after is ctx and ctx.awaiting is None and ctx.held == []
    assert ctx.events == 1 + 1 + 3  # the login, the laptop's page view, what waited
    assert any(getattr(o, "kind", None) == "merged" for o in outputs)


def test_a_device_with_nothing_to_hand_over_answers_all_the_same():
    step = CustomerStep(default_playbook())
    ctx, _login, answer = login_and_answer(step, browsed=False)
    assert answer.merge is not None and answer.merge.context == b""
    step.on_event("cust-1", ctx, ev("page_view", "app", minutes=2))
    assert step.on_event("cust-1", ctx, answer) == (ctx, [])
    assert ctx.awaiting is None and ctx.events == 2
    assert step.on_event("cust-1", ctx, answer) == (ctx, [])  # again: nothing


def test_the_wait_is_bounded_by_time_and_by_what_it_holds():
    step = CustomerStep(default_playbook())
    ctx, _login, _answer = login_and_answer(step)
    for i in range(MAX_HELD):
        step.on_event("cust-1", ctx, ev("page_view", "app", minutes=2 + i))
    assert len(ctx.held) == MAX_HELD
    step.on_event("cust-1", ctx, ev("page_view", "app", minutes=2 + MAX_HELD))
    assert ctx.awaiting is None and ctx.events == 1 + MAX_HELD + 1

    ctx, login, _answer = login_and_answer(step)
    step.on_event("cust-1", ctx, ev("page_view", "app", minutes=2))
    assert step.next_deadline(ctx) == login.ts.timestamp() + MERGE_WAIT
    assert step.on_time(ctx, login.ts.timestamp() + MERGE_WAIT - 1) == []
    assert waiting(ctx)
    step.on_time(ctx, login.ts.timestamp() + MERGE_WAIT)
    assert not waiting(ctx) and ctx.events == 2


def test_a_redelivery_of_what_waits_neither_waits_twice_nor_ends_the_wait():
    """A run resumed after a crash sends a device's forwards again: the copies of what
    already waits are dropped, so they do not bring the wait to MAX_HELD before the
    answer comes (the uninterrupted run folded the merge first)."""
    step = CustomerStep(default_playbook())
    ctx, _login, answer = login_and_answer(step)
    waits = [ev("page_view", "app", minutes=2 + i, touchpoint="plans") for i in range(40)]
    for event in waits:
        step.on_event("cust-1", ctx, event)
    for event in waits:  # every one again
        assert step.on_event("cust-1", ctx, event) == (ctx, [])
    assert waiting(ctx) and [e.event_id for e in ctx.held] == [e.event_id for e in waits]
    _after, outputs = step.on_event("cust-1", ctx, answer)
    assert any(getattr(o, "kind", None) == "merged" for o in outputs)
    assert ctx.events == 1 + 1 + len(waits)  # the login, the laptop's page view, each once


def test_an_answer_that_came_first_is_not_waited_for():
    step = CustomerStep(default_playbook())
    ctx, login, answer = login_and_answer(step)
    step.on_event("cust-1", ctx, answer)
    again, _ = step.on_event("cust-1", ctx, login)  # a redelivered login: nothing to wait for
    assert again is ctx and ctx.awaiting is None
