"""Every decision request is answered, an erased customer's too: with nothing to do,
decided from nothing of theirs, under ids of its own."""

from collections.abc import Sequence

from operators.customer_step import CustomerStep
from operators.decide import NO_ACTION
from schemas.action import Action
from schemas.decision import Decision
from tests.helpers import default_playbook, ev, request
from tests.unit.test_login_handover import login_and_answer


def replies(outputs: Sequence[object]) -> tuple[list[Action], list[Decision]]:
    return (
        [o for o in outputs if isinstance(o, Action)],
        [o for o in outputs if isinstance(o, Decision)],
    )


def test_a_request_held_for_a_logins_answer_is_answered_when_the_customer_is_erased():
    step = CustomerStep(default_playbook())
    ctx, _login, _answer = login_and_answer(step)
    step.on_event("cust-1", ctx, request(2, "req-held", "app"))
    assert [e.type for e in ctx.held] == ["decision_request"]  # waits for the answer
    _tombstone, outputs = step.on_event("cust-1", ctx, ev("erase", "web", minutes=3))
    (reply,), (decision,) = replies(outputs)
    assert reply.request_id == decision.request_id == "req-held"
    assert reply.customer == decision.customer == ""  # names nobody
    assert reply.action == NO_ACTION and reply.channel == "app"
    assert "erased" in reply.reasons[0]
    assert decision.outcome == "no_action" and decision.candidates == []
    assert decision.action_id == reply.action_id


def test_a_request_for_an_erased_customer_is_answered_under_ids_of_its_own():
    step = CustomerStep(default_playbook())
    early = request(1, "req-1", "app")
    ctx, outputs = step.on_event("cust-1", None, early)
    (answered,), _ = replies(outputs)
    assert answered.action == NO_ACTION  # nothing to offer on a bare request
    tombstone, _ = step.on_event("cust-1", ctx, ev("erase", "web", minutes=2))
    assert tombstone is not None
    # Delivered again after the erasure, and a late request from before it:
    for event in (early, request(1.5, "req-2", "app")):
        after, outputs = step.on_event("cust-1", tombstone, event)
        assert after is tombstone  # nothing of theirs starts again
        (reply,), (decision,) = replies(outputs)
        assert reply.request_id == event.request_id and "erased" in reply.reasons[0]
        assert reply.customer == decision.customer == ""
        assert reply.action_id != answered.action_id  # the first answer keeps its ids
        assert decision.decision_id != answered.decision_id
