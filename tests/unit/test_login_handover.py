"""A login's hand-over: the customer asks the device for its context, sealed to the
customer's handover key, waits for the answer, then folds what waited, so a merge
lands at the same point of the stream however long it took."""

from collections.abc import Sequence

import msgspec
import pytest

from operators.customer_step import MAX_HELD, MERGE_WAIT, CustomerStep
from operators.identity import LoopSeal
from operators.sealing import SECRET_BYTES, HandoverKeys
from schemas.codec import BadInput
from schemas.event import Event
from state.context import DEFAULT_REDELIVERY_HORIZON, CustomerContext, from_snapshot, to_snapshot
from tests.helpers import default_playbook, ev

DEVICE = "anon:laptop-1"
#: An empty context sealed: HPKE's encapsulated key (32 bytes) and AES-GCM's tag (16).
SEALED_NOTHING = 48
#: A device's key for its forwards, and no context, sealed.
SEALED_KEY = SEALED_NOTHING + SECRET_BYTES


def login_and_answer(
    step: CustomerStep, *, browsed: bool = True
) -> tuple[CustomerContext, Event, Event]:
    """The customer has folded a login from the laptop; the laptop's answer to the
    customer's request (its merge, or that it has nothing) is on its way."""
    visitor = None
    if browsed:
        browse = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
        visitor, _ = step.on_event(DEVICE, None, browse)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    request = only(outputs, "handover_request")
    alias, outputs = step.on_event(DEVICE, visitor, login)
    assert alias is not None and not [o for o in outputs if isinstance(o, Event)]
    _alias, outputs = step.on_event(DEVICE, alias, request)
    answer = only(outputs, "profile_merge")
    assert ctx is not None and ctx.awaiting == answer.event_id
    return ctx, login, answer


def asked_twice(step: CustomerStep) -> tuple[CustomerContext, Event, Event]:
    """The laptop browsed; the customer's login asked it for its context, the run
    crashed before its snapshot, and the resumed login asked again, under the same id,
    with a new handover key; the laptop answered both. The resumed customer, and the
    answers sealed to the lost key and to the new one."""
    browse = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
    visitor, _ = step.on_event(DEVICE, None, browse)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    _crashed, outputs = step.on_event("cust-1", None, login)
    first = only(outputs, "handover_request")
    ctx, outputs = step.on_event("cust-1", None, login)  # resumed: the state before the login
    second = only(outputs, "handover_request")
    assert ctx is not None and first.event_id == second.event_id and first != second
    alias, _ = step.on_event(DEVICE, visitor, login)
    assert alias is not None
    alias, outputs = step.on_event(DEVICE, alias, first)
    stale = only(outputs, "profile_merge")
    _alias, outputs = step.on_event(DEVICE, alias, second)
    return ctx, stale, only(outputs, "profile_merge")


def keeps(alias: CustomerContext) -> bool:
    """Whether a device keeps what it handed over (a call, as `waiting`)."""
    return alias.handed is not None


def only(outputs: Sequence[object], kind: str) -> Event:
    (event,) = [o for o in outputs if isinstance(o, Event) and o.type == kind]
    return event


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
    assert after is ctx and ctx.awaiting is None and list(ctx.held) == []
    assert ctx.events == 1 + 1 + 3  # the login, the laptop's page view, what waited
    assert any(getattr(o, "kind", None) == "merged" for o in outputs)


def test_a_device_with_nothing_to_hand_over_answers_all_the_same():
    step = CustomerStep(default_playbook())
    ctx, _login, answer = login_and_answer(step, browsed=False)
    assert answer.merge is not None and len(answer.merge.context) == SEALED_KEY
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
    # Not by the watermark: the answer comes behind whatever backlog the topic holds.
    assert step.next_deadline(ctx) is None
    assert step.on_time(ctx, login.ts.timestamp() + 10 * MERGE_WAIT) == []
    assert waiting(ctx)
    step.on_event("cust-1", ctx, ev("page_view", "app", minutes=1 + MERGE_WAIT / 60 + 1))
    assert not waiting(ctx) and ctx.events == 3


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


def test_the_context_crosses_the_topic_sealed_to_the_customer_alone():
    """The merge carries nothing of the visitor in clear; another customer's key (or
    none: the customer erased) does not open it; the customer's does."""
    step = CustomerStep(default_playbook())
    ctx, _login, answer = login_and_answer(step)
    assert answer.merge is not None and answer.merge.context
    wire = msgspec.json.encode(answer)
    assert b"phones" not in wire and b"phones" not in answer.merge.context
    stranger, _ = step.on_event("cust-2", None, ev("page_view", "app", customer="cust-2"))
    assert stranger is not None
    stolen = msgspec.structs.replace(answer, to=step.pseudonym_of("cust-2"))
    with pytest.raises(BadInput):  # re-addressed: its signature no longer holds
        step.on_event("cust-2", stranger, stolen)
    after, outputs = step.on_event("cust-1", ctx, answer)
    assert after is ctx and "phones" in ctx.touchpoints
    assert any(getattr(o, "kind", None) == "merged" for o in outputs)


def test_a_login_keeps_its_handover_pair_for_the_answer_and_an_erasure_drops_it():
    """The pair a login's request derived opens its answer (not derived twice); the
    customer's erasure drops it with the key, whatever else is kept."""
    kept = HandoverKeys()
    step = CustomerStep(default_playbook(), handover_keys=kept)
    ctx, _login, answer = login_and_answer(step)
    assert len(kept) == 1
    after, _ = step.on_event("cust-1", ctx, answer)
    assert after is ctx and "phones" in ctx.touchpoints and len(kept) == 1
    other, _ = step.on_event(
        "cust-2", None, ev("identify", "web", customer="cust-2", anon="phone-2")
    )
    assert other is not None and len(kept) == 2
    step.on_event("cust-1", ctx, ev("erase", "web", minutes=5))
    assert len(kept) == 1  # cust-2's, not the erased customer's
    assert kept.public(other.secret) == HandoverKeys().public(other.secret)


def test_a_customer_resumed_with_a_new_key_asks_again_and_the_old_answer_is_dropped():
    """A customer's key made after the last snapshot is lost with a crash: the replayed
    login asks again, under the same id, with a new handover key; the device answers
    both requests; the answer sealed to the lost key is dropped, the new one absorbed."""
    step = CustomerStep(default_playbook())
    ctx, stale, fresh = asked_twice(step)
    assert stale.event_id == fresh.event_id == ctx.awaiting
    assert step.on_event("cust-1", ctx, stale) == (ctx, [])
    assert ctx.awaiting == fresh.event_id and ctx.held == ()
    step.on_event("cust-1", ctx, fresh)
    assert not waiting(ctx) and ctx.touchpoints.get("phones") == 1
    assert step.on_event("cust-1", ctx, stale) == (ctx, [])
    assert step.on_event("cust-1", ctx, fresh) == (ctx, [])  # a redelivery
    assert ctx.touchpoints.get("phones") == 1


def test_a_late_answer_under_a_lost_key_does_not_wait_in_place_of_the_one_that_opens():
    """A customer's wait for the laptop ended unanswered (MAX_HELD), then a login from
    the phone started another. The laptop's answers, to the request asked under a key
    lost in a crash and to the one asked again, come during the second wait under one
    id, after the second wait began: the first never opens, so it must not wait in place
    of the second."""
    step = CustomerStep(default_playbook())
    ctx, stale, fresh = asked_twice(step)
    for i in range(MAX_HELD + 1):  # the wait ends unanswered
        step.on_event("cust-1", ctx, ev("page_view", "app", minutes=2 + i, touchpoint="plans"))
    assert not waiting(ctx)
    phone_login = ev("identify", "app", minutes=3 + MAX_HELD, anon="phone-1")
    _ctx, outputs = step.on_event("cust-1", ctx, phone_login)
    phone_request = only(outputs, "handover_request")
    assert waiting(ctx)
    assert step.on_event("cust-1", ctx, stale) == (ctx, [])
    assert step.on_event("cust-1", ctx, fresh) == (ctx, [])
    assert [e.event_id for e in ctx.held] == [fresh.event_id]
    phone, _ = step.on_event("anon:phone-1", None, phone_login)
    _phone, outputs = step.on_event("anon:phone-1", phone, phone_request)
    step.on_event("cust-1", ctx, only(outputs, "profile_merge"))
    assert not waiting(ctx) and ctx.touchpoints.get("phones") == 1  # the laptop's history


def test_a_request_before_its_login_does_what_the_login_would():
    """A resumed run may read the customer's request before the device's own copy of
    the login: the device hands over then, and the login after it changes nothing."""
    step = CustomerStep(default_playbook())
    browse = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
    visitor, _ = step.on_event(DEVICE, None, browse)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    alias, outputs = step.on_event(DEVICE, visitor, only(outputs, "handover_request"))
    answer = only(outputs, "profile_merge")
    assert alias is not None and alias.alias_to == step.pseudonym_of("cust-1")
    assert step.on_event(DEVICE, alias, login) == (alias, [])
    assert ctx is not None and ctx.awaiting == answer.event_id
    step.on_event("cust-1", ctx, answer)
    assert ctx.touchpoints.get("phones") == 1


def test_a_forged_request_is_refused_and_an_erased_device_hands_over_nothing():
    step = CustomerStep(default_playbook(), seal=LoopSeal(b"the-deployment-secret"))
    browse = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
    visitor, _ = step.on_event(DEVICE, None, browse)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    _ctx, outputs = step.on_event("cust-1", None, login)
    request = only(outputs, "handover_request")
    assert request.handover is not None
    forged = msgspec.structs.replace(
        request,
        handover=msgspec.structs.replace(request.handover, public_key=b"\x09" * 32),
    )
    with pytest.raises(BadInput) as refused:
        step.on_event(DEVICE, visitor, forged)
    assert refused.value.reason == "forged"
    erased, _ = step.on_event(DEVICE, visitor, ev("erase", "web", customer=None, anon="laptop-1"))
    _erased, outputs = step.on_event(DEVICE, erased, request)
    answer = only(outputs, "profile_merge")
    assert answer.merge is not None and len(answer.merge.context) == SEALED_NOTHING


def test_a_device_keeps_what_it_handed_over_for_the_horizon_of_its_own_events():
    """Not by the watermark (a request asked again after a crash comes behind whatever
    backlog the topic holds): until its own events pass the redelivery horizon."""
    step = CustomerStep(default_playbook())
    browse = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
    visitor, _ = step.on_event(DEVICE, None, browse)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    alias, _ = step.on_event(DEVICE, visitor, login)
    assert alias is not None and keeps(alias) and step.next_deadline(alias) is None
    horizon = DEFAULT_REDELIVERY_HORIZON / 60
    step.on_event(
        DEVICE, alias, ev("page_view", "web", minutes=horizon, customer=None, anon="laptop-1")
    )
    assert keeps(alias)
    step.on_event(
        DEVICE, alias, ev("page_view", "web", minutes=horizon + 2, customer=None, anon="laptop-1")
    )
    assert not keeps(alias)


def test_a_request_before_anything_of_the_device_makes_an_alias_its_login_then_names():
    """A device's state may get the customer's request before any record of its own (a
    resumed run's order): it becomes the customer's alias with nothing to hand over
    but its key, and its login, when it comes, gives the state its key."""
    step = CustomerStep(default_playbook())
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    request = only(outputs, "handover_request")
    alias, outputs = step.on_event("", None, request)
    answer = only(outputs, "profile_merge")
    assert alias is not None and (alias.key, alias.pseudonym) == ("", request.to)
    assert answer.merge is not None and len(answer.merge.context) == SEALED_KEY
    assert step.on_event(DEVICE, alias, login) == (alias, [])
    assert alias.key == DEVICE
    assert ctx is not None
    step.on_event("cust-1", ctx, answer)
    _alias, outputs = step.on_event(DEVICE, alias, laptop_page(2))
    step.on_event("cust-1", ctx, only(outputs, "forward"))
    assert ctx.touchpoints.get("deals") == 1


def laptop_page(minutes: float, touchpoint: str = "deals") -> Event:
    return ev(
        "page_view", "web", minutes=minutes, customer=None, anon="laptop-1", touchpoint=touchpoint
    )


def linked(step: CustomerStep) -> tuple[CustomerContext, CustomerContext]:
    """The laptop browsed, then the customer logged in from it; the merge has come
    round: the customer, and the laptop's alias."""
    visitor, _ = step.on_event(DEVICE, None, laptop_page(0, "phones"))
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    alias, _ = step.on_event(DEVICE, visitor, login)
    alias, outputs = step.on_event(DEVICE, alias, only(outputs, "handover_request"))
    assert ctx is not None and alias is not None
    step.on_event("cust-1", ctx, only(outputs, "profile_merge"))
    assert not waiting(ctx) and ctx.touchpoints.get("phones") == 1
    return ctx, alias


def test_a_device_forwards_its_events_sealed_and_addressed_by_pseudonym():
    """After a login, a device's events go to the customer sealed under the key the
    device handed over with its merge: the record names neither the customer nor the
    device, and says nothing of the event in clear."""
    step = CustomerStep(default_playbook())
    ctx, alias = linked(step)
    page = laptop_page(2, "secret-deals")
    _alias, outputs = step.on_event(DEVICE, alias, page)
    forward = only(outputs, "forward")
    wire = msgspec.json.encode(forward)
    for clear in (b"cust-1", b"laptop-1", b"secret-deals", b"page_view"):
        assert clear not in wire
    assert (forward.to, forward.event_id) == (ctx.pseudonym, page.event_id)
    after, _ = step.on_event("cust-1", ctx, forward)
    assert after is ctx and ctx.touchpoints.get("secret-deals") == 1
    assert step.on_event("cust-1", ctx, forward) == (ctx, [])  # a redelivery: once
    assert ctx.touchpoints.get("secret-deals") == 1


def test_a_forward_no_key_of_the_customer_opens_waits_and_a_forged_one_is_refused():
    """A forward sealed under a device key lost in a crash (the device made a new one
    at its replayed login) opens under no key the customer holds: it waits, and the
    replayed copy under the new key is folded in its place (and a copy that comes after
    it is dropped). A forward Wayfinder did not sign, or one re-addressed to another
    customer, is refused."""
    step = CustomerStep(default_playbook(), seal=LoopSeal(b"the-deployment-secret"))
    ctx, alias = linked(step)
    lost = msgspec.structs.replace(alias, forward_key=b"\x07" * SECRET_BYTES)
    page = laptop_page(2)
    _lost, outputs = step.on_event(DEVICE, lost, page)
    unopenable = only(outputs, "forward")
    assert step.on_event("cust-1", ctx, unopenable) == (ctx, [])
    assert "deals" not in ctx.touchpoints and list(ctx.unopened) == [unopenable]
    _alias, outputs = step.on_event(DEVICE, alias, page)
    step.on_event("cust-1", ctx, only(outputs, "forward"))
    assert ctx.touchpoints.get("deals") == 1 and not ctx.unopened
    assert step.on_event("cust-1", ctx, unopenable) == (ctx, []) and not ctx.unopened
    forged = msgspec.structs.replace(unopenable, signature="0" * 64)
    with pytest.raises(BadInput) as refused:
        step.on_event("cust-1", ctx, forged)
    assert refused.value.reason == "forged"
    stranger, _ = step.on_event("cust-2", None, ev("page_view", "app", customer="cust-2"))
    moved = msgspec.structs.replace(unopenable, to=step.pseudonym_of("cust-2"))
    with pytest.raises(BadInput):
        step.on_event("cust-2", stranger, moved)


def test_a_devices_events_that_come_round_before_its_key_wait_for_the_merge():
    """A device forwards as soon as its login is folded; when the loop lags behind the
    input (a cluster reading a backlog), its events can reach the customer after the
    customer stopped waiting for the device's answer and before that answer: they wait
    for the key the answer hands over, and are folded when it comes."""
    step = CustomerStep(default_playbook())
    visitor, _ = step.on_event(DEVICE, None, laptop_page(0, "phones"))
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    request = only(outputs, "handover_request")
    alias, _ = step.on_event(DEVICE, visitor, login)
    assert ctx is not None and alias is not None
    _alias, outputs = step.on_event(DEVICE, alias, laptop_page(2))
    forward = only(outputs, "forward")
    later = ev("page_view", "app", minutes=MERGE_WAIT / 60 + 5)  # the wait is over
    ctx, _ = step.on_event("cust-1", ctx, later)
    assert ctx is not None and not waiting(ctx)
    assert step.on_event("cust-1", ctx, forward) == (ctx, [])
    assert list(ctx.unopened) == [forward] and "deals" not in ctx.touchpoints
    assert not from_snapshot(to_snapshot(ctx, copy=True)).unopened  # never in a copy
    _alias, outputs = step.on_event(DEVICE, alias, request)
    step.on_event("cust-1", ctx, only(outputs, "profile_merge"))
    assert ctx.touchpoints.get("deals") == 1 and ctx.touchpoints.get("phones") == 1
    assert not ctx.unopened


def test_an_erased_customers_devices_are_erased_by_records_that_name_nobody():
    step = CustomerStep(default_playbook())
    ctx, alias = linked(step)
    _tomb, outputs = step.on_event("cust-1", ctx, ev("erase", "web", minutes=5))
    (device_erase,) = [o for o in outputs if isinstance(o, Event)]
    assert device_erase.type == "erase" and device_erase.to == step.pseudonym_of(DEVICE)
    assert b"laptop-1" not in msgspec.json.encode(device_erase)
    assert b"cust-1" not in msgspec.json.encode(device_erase)
    gone, outputs = step.on_event(DEVICE, alias, device_erase)
    assert gone is not None and gone.erased_at is not None and not gone.key
    forged = msgspec.structs.replace(device_erase, signature="1" * 64)
    with pytest.raises(BadInput):
        step.on_event("", None, forged)


def test_a_device_resumed_from_before_its_login_seals_under_a_key_its_customer_learns():
    """A crash took the device back to before the login, while the customer kept the
    merge it had absorbed: the replayed login makes the device a new key, and it answers
    the request again under the merge's id. That copy is a redelivery, but its key is
    kept, so the device's later forwards still open."""
    step = CustomerStep(default_playbook())
    visitor, _ = step.on_event(DEVICE, None, laptop_page(0, "phones"))
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    request = only(outputs, "handover_request")
    assert visitor is not None
    before = to_snapshot(visitor)  # the device's state at the snapshot resumed from
    alias, _ = step.on_event(DEVICE, from_snapshot(before), login)
    first, outputs = step.on_event(DEVICE, alias, request)
    assert ctx is not None and first is not None
    step.on_event("cust-1", ctx, only(outputs, "profile_merge"))
    # The crash: the device is back to before the login, which it folds again.
    replayed, _ = step.on_event(DEVICE, from_snapshot(before), login)
    replayed, outputs = step.on_event(DEVICE, replayed, request)
    again = only(outputs, "profile_merge")
    assert replayed is not None and replayed.forward_key != first.forward_key
    assert step.on_event("cust-1", ctx, again) == (ctx, [])  # a redelivery...
    _replayed, outputs = step.on_event(DEVICE, replayed, laptop_page(2))
    step.on_event("cust-1", ctx, only(outputs, "forward"))
    assert ctx.touchpoints.get("deals") == 1  # ...whose key opens what the device sends now
