"""Folding events into the customer context."""

from datetime import timedelta

from schemas.event import Consent
from state.context import (
    MAX_RECENT,
    consent_allows,
    fold,
    from_snapshot,
    is_duplicate,
    new_context,
    to_snapshot,
)
from tests.helpers import T0, ev, profile


def folded(*events):
    ctx = new_context("cust-1", events[0])
    for event in events:
        fold(ctx, event)
    return ctx


def test_fold_counts_channels_and_keeps_last_seen():
    ctx = folded(
        ev("page_view", "web", minutes=0, touchpoint="home"),
        ev("page_view", "web", minutes=5, touchpoint="help_transfers"),
        ev("ivr_call", "ivr", minutes=9, touchpoint="ivr_payments"),
    )
    assert ctx.events == 3
    assert ctx.channels["web"].count == 2
    assert ctx.channels["web"].last_seen == (T0 + timedelta(minutes=5)).timestamp()
    assert ctx.touchpoints == {"home": 1, "help_transfers": 1, "ivr_payments": 1}
    assert ctx.last_seen == (T0 + timedelta(minutes=9)).timestamp()


def test_profile_properties_set_value_tier_time_zone_and_preference():
    ctx = folded(profile("high"))
    assert ctx.value_tier == "high"
    assert ctx.lifetime_value == 12000.0
    assert ctx.timezone == "Europe/London"
    assert ctx.preferred_channel == "app"


def test_identity_keys_collect_anonymous_devices():
    ctx = folded(
        ev("page_view", "web", customer=None, anon="laptop-1"),
        ev("identify", "web", anon="laptop-1", minutes=1),
        ev("app_open", "app", anon="phone-9", minutes=2),
    )
    assert ctx.known
    assert ctx.anonymous_ids == ["laptop-1", "phone-9"]


def test_out_of_order_event_lands_in_time_order_and_last_seen_does_not_go_back():
    ctx = folded(
        ev("page_view", "web", minutes=10, event_id="late-web"),
        ev("ivr_call", "ivr", minutes=2, event_id="early-ivr"),
    )
    assert [i.event_id for i in ctx.recent] == ["early-ivr", "late-web"]
    assert ctx.last_seen == (T0 + timedelta(minutes=10)).timestamp()
    assert ctx.first_seen == (T0 + timedelta(minutes=2)).timestamp()


def test_recent_history_is_bounded_oldest_dropped():
    events = [ev("page_view", "web", minutes=i, event_id=f"e{i}") for i in range(MAX_RECENT + 10)]
    ctx = folded(*events)
    assert len(ctx.recent) == MAX_RECENT
    assert ctx.recent[0].event_id == "e10"
    assert ctx.events == MAX_RECENT + 10


def test_interactions_remember_the_matter_they_are_about():
    ctx = folded(ev("ivr_call", "ivr", transfer_id="tx-9", touchpoint="ivr_payments"))
    assert ctx.recent[0].ref == "transfer_id=tx-9"


def test_redelivered_event_is_recognised_as_duplicate():
    first = ev("page_view", "web", event_id="same")
    ctx = folded(first)
    assert is_duplicate(ctx, first)
    assert not is_duplicate(ctx, ev("page_view", "web", event_id="other"))


def test_marketing_needs_opt_in_and_service_holds_until_revoked():
    ctx = folded(ev("page_view", "web"))
    assert not consent_allows(ctx, "email", "marketing")
    assert consent_allows(ctx, "chat", "service")
    fold(ctx, ev("consent", "web", consent=Consent(granted=True, purpose="marketing")))
    fold(ctx, ev("consent", "web", consent=Consent(granted=False, channel="sms")))
    assert consent_allows(ctx, "email", "marketing")
    assert not consent_allows(ctx, "sms", "marketing")  # channel revocation beats purpose grant
    assert not consent_allows(ctx, "sms", "service")
    fold(
        ctx, ev("consent", "web", consent=Consent(granted=False, channel="chat", purpose="service"))
    )
    assert not consent_allows(ctx, "chat", "service")


def test_snapshot_round_trips_the_whole_context():
    ctx = folded(profile("high"), ev("ivr_call", "ivr", transfer_id="tx-1"))
    assert from_snapshot(to_snapshot(ctx)) == ctx
