"""Redeliveries within the horizon are recognised, however many events came between; an
event too old to be checked is refused; what a customer remembers for it is bounded."""

import struct
from collections.abc import Sequence
from datetime import timedelta

import msgspec
import pytest

from flows.runtime.settings import SettingsError, redelivery_horizon_seconds
from operators.customer_step import CustomerStep
from schemas.codec import BadInput
from schemas.decision import Decision
from schemas.event import Event
from state.context import (
    DEFAULT_REDELIVERY_HORIZON,
    MAX_SEEN,
    TOO_OLD,
    CustomerContext,
    event_digest,
    fold,
    from_snapshot,
    new_context,
    recall,
    to_snapshot,
)
from state.key_vault import CustomerKey
from tests.helpers import Harness, default_playbook, ev, profile, request

DAY = 24 * 60.0  # minutes


def _but_keys(outputs: Sequence[object]) -> list[object]:
    return [o for o in outputs if not isinstance(o, CustomerKey)]


def _recalled(ctx: CustomerContext, event: Event) -> bytes | None:
    """What the context knows of the event under the default horizon (`recall`)."""
    return recall(ctx, event.event_id, event.ts.timestamp(), DEFAULT_REDELIVERY_HORIZON)


@pytest.mark.parametrize("between", [60, 500])
def test_a_redelivery_many_events_later_is_not_folded_again(between):
    """The issue's case: a request answered `no_action`, then enough help pages to open
    a support journey; redelivered after them, the request was answered again under
    the same decision id, differently. Now it adds nothing, and no id is published twice."""
    first = request(0, "r-1")
    stuck = ev("transfer_failed", "app", minutes=0.5, touchpoint="transfers", transfer_id="tx-1")
    events = [profile("low"), first, stuck]
    events += [
        ev("page_view", "web", minutes=1 + i * 0.1, touchpoint="help_network")
        for i in range(between)
    ]
    without = Harness().run(events)
    run = Harness().run([*events, first, stuck])
    # (each run makes the customer's key anew)
    assert _but_keys(run.replay.outputs) == _but_keys(without.replay.outputs)
    assert run.context().events == without.context().events == len(events)
    answers = [d for d in run.of(Decision) if d.trigger_id == first.event_id]
    assert len(answers) == 1
    ids = [d.decision_id for d in run.of(Decision)]
    assert len(ids) == len(set(ids))


def test_an_id_already_folded_is_a_redelivery_whatever_time_it_carries():
    step = CustomerStep(default_playbook())
    first = request(0, "r-1")
    ctx, outputs = step.on_event("cust-1", None, first)
    assert outputs
    again = msgspec.structs.replace(first, ts=first.ts + timedelta(hours=1))
    assert step.on_event("cust-1", ctx, again) == (ctx, [])


def test_an_event_older_than_the_horizon_is_refused_before_the_context_is_touched():
    step = CustomerStep(default_playbook())
    ctx, _ = step.on_event("cust-1", None, ev("page_view", "web", minutes=0, event_id="old"))
    ctx, _ = step.on_event("cust-1", ctx, ev("page_view", "web", minutes=8 * DAY))
    assert ctx is not None
    before = to_snapshot(ctx)
    for late in (
        ev("page_view", "web", minutes=60, event_id="new-but-late"),
        ev("page_view", "web", minutes=0, event_id="old"),  # its redelivery: forgotten now
    ):
        with pytest.raises(BadInput) as refused:
            step.on_event("cust-1", ctx, late)
        assert refused.value.reason == "stale"
        assert "redelivery horizon" in refused.value.detail
        assert to_snapshot(ctx) == before
    ctx, _ = step.on_event("cust-1", ctx, ev("page_view", "web", minutes=2 * DAY))  # within
    assert ctx is not None and ctx.events == 3


def test_an_identify_too_old_to_fold_still_links_its_device_for_an_erasure():
    """The device side of a late identify makes an alias all the same: the customer must
    list the device, or an erasure would not reach it."""
    step = CustomerStep(default_playbook())
    ctx, _ = step.on_event("cust-1", None, ev("page_view", "web", minutes=8 * DAY))
    ctx, outputs = step.on_event("cust-1", ctx, ev("identify", "web", minutes=0, anon="pad-1"))
    assert ctx is not None and outputs == []
    assert (ctx.events, ctx.anonymous_ids) == (1, ("pad-1",))


def test_the_horizon_is_a_setting():
    step = CustomerStep(default_playbook(), redelivery_horizon=3600.0)
    ctx, _ = step.on_event("cust-1", None, ev("page_view", "web", minutes=180))
    ctx, _ = step.on_event("cust-1", ctx, ev("page_view", "web", minutes=130))  # 50 min
    assert ctx is not None
    with pytest.raises(BadInput, match="3600 s"):
        step.on_event("cust-1", ctx, ev("page_view", "web", minutes=100))  # 80 min
    assert redelivery_horizon_seconds({}) == DEFAULT_REDELIVERY_HORIZON == 7 * 86400
    assert redelivery_horizon_seconds({"WAYFINDER_REDELIVERY_HORIZON": "36h"}) == 36 * 3600
    for wrong in ("soon", "0s", "30s", "400d"):
        with pytest.raises(SettingsError, match="WAYFINDER_REDELIVERY_HORIZON"):
            redelivery_horizon_seconds({"WAYFINDER_REDELIVERY_HORIZON": wrong})


def test_a_customer_with_100k_events_remembers_at_most_the_cap():
    """One event a second (all within the horizon): the oldest ids are forgotten past
    MAX_SEEN, and an event as old as they are is refused, never folded twice."""
    events = [ev("page_view", "web", minutes=i / 60, event_id=f"b{i}") for i in range(100_000)]
    ctx = new_context("cust-1", events[0], "p-cust-1")
    most = 0
    for event in events:
        fold(ctx, event)
        most = max(most, ctx.seen.count())
    assert most <= MAX_SEEN
    assert ctx.seen.count() >= MAX_SEEN * 7 // 8
    latest = events[-1]
    assert _recalled(ctx, latest) is None
    forgotten = events[100_000 - MAX_SEEN - 1]
    assert _recalled(ctx, forgotten) is not None
    assert _recalled(ctx, forgotten) == TOO_OLD
    assert len(to_snapshot(ctx)) < 12 * MAX_SEEN + 16 * 1024
    with pytest.raises(BadInput, match=f"the {MAX_SEEN} event ids"):
        CustomerStep(default_playbook()).on_event("cust-1", ctx, forgotten)


def test_ids_are_forgotten_as_the_customer_moves_on_past_the_horizon():
    events = [ev("page_view", "web", minutes=i * 60, event_id=f"h{i}") for i in range(30 * 24)]
    ctx = new_context("cust-1", events[0], "p-cust-1")
    for event in events:
        fold(ctx, event)
    # 7 days of hourly events (168), and at most one eighth of the horizon more.
    assert 168 <= ctx.seen.count() <= 168 + 21 + 1
    assert ctx.seen.floor == float("-inf")  # forgotten by time only: nothing refused early
    restored = from_snapshot(to_snapshot(ctx))
    assert restored.seen == ctx.seen
    assert (
        recall(
            restored, events[-100].event_id, events[-100].ts.timestamp(), DEFAULT_REDELIVERY_HORIZON
        )
        is None
    )
    assert from_snapshot(to_snapshot(ctx, copy=True)).seen.count() == 0


def test_an_alias_does_not_forward_a_redelivery_of_what_its_visitor_folded():
    """A device's event folded before it identified, redelivered after: the customer
    has the visitor's history already (merged), so it must not get the event again."""
    step = CustomerStep(default_playbook())
    key = "anon:laptop-1"
    browsed = ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones")
    visitor, _ = step.on_event(key, None, browsed)
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    alias, outputs = step.on_event(key, visitor, login)
    assert alias is not None and alias.alias_to == step.pseudonym_of("cust-1")
    assert not [o for o in outputs if isinstance(o, Event)]  # it answers the request
    assert alias.handed is not None and b"phones" in alias.handed.context  # ...with this
    assert step.on_event(key, alias, browsed) == (alias, [])
    later = ev("page_view", "web", minutes=2, customer=None, anon="laptop-1")
    _alias, (forward,) = step.on_event(key, alias, later)
    assert isinstance(forward, Event) and forward.to == step.pseudonym_of("cust-1")
    assert forward.forward is not None and forward.event_id == later.event_id
    assert to_snapshot(alias, copy=True).count(b"phones") == 0  # (a copy leaves it out)


def test_a_merge_redelivered_after_many_events_is_not_absorbed_again():
    step = CustomerStep(default_playbook())
    visitor, _ = step.on_event(
        "anon:laptop-1",
        None,
        ev("page_view", "web", customer=None, anon="laptop-1", touchpoint="phones"),
    )
    login = ev("identify", "web", minutes=1, anon="laptop-1")
    ctx, outputs = step.on_event("cust-1", None, login)
    (request,) = [o for o in outputs if isinstance(o, Event) and o.type == "handover_request"]
    alias, _ = step.on_event("anon:laptop-1", visitor, login)
    _alias, outputs = step.on_event("anon:laptop-1", alias, request)
    (merge,) = [o for o in outputs if isinstance(o, Event) and o.type == "profile_merge"]
    ctx, _ = step.on_event("cust-1", ctx, merge)
    for i in range(60):
        ctx, _ = step.on_event("cust-1", ctx, ev("page_view", "web", minutes=2 + i))
    assert ctx is not None
    events = ctx.events
    assert step.on_event("cust-1", ctx, merge) == (ctx, [])
    assert ctx.events == events


def test_the_digest_of_an_id_is_the_same_in_every_process():
    """Snapshots hold digests: a resumed process must compute the same ones (Python's
    own hash of a string changes with every process)."""
    assert event_digest("e-1").hex() == "317386494bf10d9f"
    assert len(event_digest("x" * 1000)) == 8


def test_ids_remembered_as_releases_before_kept_them_load_as_the_same_memory():
    """Snapshots made when a generation of ids was a map of digests (recovery, the cold
    tier) remember the same ids, and forget them when the same ones would be."""
    events = [ev("page_view", "web", minutes=i * 97, event_id=f"g{i}") for i in range(200)]
    ctx = new_context("cust-1", events[0], "p-cust-1")
    for event in events:
        fold(ctx, event)
    digests = [ctx.seen.digests[i : i + 8] for i in range(0, len(ctx.seen.digests), 8)]
    generations, at = [], 0
    for opened, until, count in struct.iter_unpack("<ddI", ctx.seen.marks):
        generations.append([opened, until, {bytes(d): None for d in digests[at : at + count]}])
        at += count
    assert len(generations) > 3 and at == len(digests) == ctx.seen.count()
    fields = list(msgspec.structs.astuple(ctx))
    fields[CustomerContext.__struct_fields__.index("seen")] = [generations, ctx.seen.floor]
    restored = from_snapshot(msgspec.msgpack.encode(fields))
    assert restored.seen == ctx.seen and restored.seen.generations == ()
    later = ev("page_view", "web", minutes=200 * 97, event_id="g-later")
    fold(ctx, later)
    fold(restored, later)
    assert restored.seen == ctx.seen
    for event in events[-60:]:
        assert _recalled(restored, event) is None


def test_bytes_across_two_remembered_ids_are_neither_of_them():
    ctx = new_context("cust-1", ev("page_view", "web", event_id="a"), "p-cust-1")
    for i in range(3):
        fold(ctx, ev("page_view", "web", minutes=i, event_id=f"x{i}"))
    ids = bytes(ctx.seen.digests)
    for shift in range(1, 8):
        across = ids[shift : shift + 8]
        assert across not in ctx.seen
    assert all(ids[i : i + 8] in ctx.seen for i in range(0, len(ids), 8))


def test_the_ids_looked_up_in_a_set_are_the_ids_the_bytes_hold():
    """Past a few ids, a customer in memory looks in a set of them: as they are
    remembered and forgotten, by time and by the cap, it holds what the bytes do."""
    ctx = new_context("cust-1", ev("page_view", "web", event_id="first"), "p-cust-1")
    every: list[bytes] = []
    for i in range(6000):  # (a minute apart: past the cap; then half an hour: past the horizon)
        minutes = i if i < 5000 else 5000 + (i - 5000) * 30
        event = ev("page_view", "web", minutes=minutes, event_id=f"s{i}")
        fold(ctx, event)
        every.append(event_digest(event.event_id))
        if i % 97 == 0:
            held = {
                bytes(ctx.seen.digests[at : at + 8]) for at in range(0, ctx.seen.count() * 8, 8)
            }
            assert len(held) > 32 or i < 100
            assert {d for d in every if d in ctx.seen} == held
    assert ctx.seen.floor > float("-inf")  # (forgotten by the cap)
    assert ctx.seen.count() < 400  # (and by time)
