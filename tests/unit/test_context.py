"""Folding events into the customer context."""

from datetime import timedelta

import msgspec
import pytest

from schemas.event import Consent, Event
from state.context import (
    DEFAULT_REDELIVERY_HORIZON,
    MAX_RECENT,
    CustomerContext,
    Interaction,
    JourneyInstance,
    RecentInteractions,
    absorb_visitor,
    consent_allows,
    event_digest,
    fold,
    from_snapshot,
    is_tombstone,
    is_tombstone_snapshot,
    new_context,
    recall,
    to_snapshot,
    tombstone,
)
from tests.helpers import T0, ev, profile


def _recalled(ctx: CustomerContext, event: Event) -> bytes | None:
    """What the context knows of the event under the default horizon (`recall`)."""
    return recall(ctx, event.event_id, event.ts.timestamp(), DEFAULT_REDELIVERY_HORIZON)


def folded(*events):
    ctx = new_context("cust-1", events[0], "p-cust-1")
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
    assert ctx.anonymous_ids == ("laptop-1", "phone-9")


def test_out_of_order_event_lands_in_time_order_and_last_seen_does_not_go_back():
    ctx = folded(
        ev("page_view", "web", minutes=10, event_id="late-web"),
        ev("ivr_call", "ivr", minutes=2, event_id="early-ivr"),
    )
    assert ctx.interactions.digests() == [event_digest("early-ivr"), event_digest("late-web")]
    touchpoints, kinds = ctx.interactions.last_of(2)
    assert [ctx.interactions.words[k] for k in kinds] == ["ivr_call", "page_view"]
    assert touchpoints == b"\0\0"
    assert ctx.last_seen == (T0 + timedelta(minutes=10)).timestamp()
    assert ctx.first_seen == (T0 + timedelta(minutes=2)).timestamp()


def test_recent_history_is_bounded_oldest_dropped():
    events = [ev("page_view", "web", minutes=i, event_id=f"e{i}") for i in range(MAX_RECENT + 10)]
    ctx = folded(*events)
    assert len(ctx.interactions) == MAX_RECENT
    assert ctx.interactions.digests()[0] == event_digest("e10")
    assert ctx.events == MAX_RECENT + 10


def test_interactions_remember_the_matter_they_are_about():
    ctx = folded(ev("ivr_call", "ivr", transfer_id="tx-9", touchpoint="ivr_payments"))
    assert ctx.interactions.entries()[0][2:] == (
        "ivr_call",
        "ivr",
        "ivr_payments",
        None,
        "transfer_id=tx-9",
    )


def test_redelivered_event_is_recognised_as_duplicate():
    first = ev("page_view", "web", event_id="same")
    ctx = folded(first)
    assert _recalled(ctx, first) is None
    assert _recalled(ctx, ev("page_view", "web", event_id="other")) is not None


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


def test_every_anonymous_id_is_kept_however_many_so_an_erasure_reaches_them_all():
    events = [ev("identify", "web", minutes=i, anon=f"dev-{i}") for i in range(40)]
    ctx = folded(*events)
    assert ctx.anonymous_ids == tuple(f"dev-{i}" for i in range(40))
    visitor = folded(ev("page_view", "web", customer=None, anon="dev-0"))
    visitor.key = "anon:dev-99"
    absorb_visitor(ctx, visitor)
    assert ctx.anonymous_ids[-1] == "dev-99" and len(ctx.anonymous_ids) == 41


def test_a_tombstone_keeps_when_and_nothing_else():
    held = to_snapshot(tombstone(T0.timestamp()))
    ctx = from_snapshot(held)
    assert is_tombstone(ctx) and ctx.erased_at == T0.timestamp()
    assert (ctx.key, ctx.events, ctx.anonymous_ids, len(ctx.interactions)) == ("", 0, (), 0)
    assert len(held) < 460
    assert not is_tombstone(folded(ev("page_view", "web")))


def _before(*events: Event) -> list[Interaction]:
    """The events' interactions as contexts held them before `RecentInteractions`."""
    interactions = [
        Interaction(
            e.event_id,
            e.ts.timestamp(),
            e.type,
            e.channel,
            e.touchpoint,
            e.partner_id,
            next((f"{k}={e.properties[k]}" for k in ("transfer_id",) if k in e.properties), None),
        )
        for e in events
    ]
    return sorted(interactions, key=lambda i: i.ts)[-MAX_RECENT:]


def _array_form(ctx: CustomerContext, *events: Event) -> list[object]:
    """The context as releases before `interactions` snapshotted it: its fields in order,
    the events' interactions a list of their own, and no `interactions`."""
    fields = list(msgspec.structs.astuple(ctx))
    fields[list(ctx.__struct_fields__).index("recent")] = _before(*events)
    return fields[:-1]


def _map_form(ctx: CustomerContext, *events: Event) -> dict[str, object]:
    """The context as releases before the array form snapshotted it: a map of its
    fields' names, and its journeys' too (and interactions as a list)."""
    fields = {name: getattr(ctx, name) for name in ctx.__struct_fields__}
    fields["journeys"] = [
        {name: getattr(inst, name) for name in inst.__struct_fields__} for inst in ctx.journeys
    ]
    fields["recent"] = _before(*events)
    del fields["interactions"]
    return fields


def test_a_snapshot_is_an_array_half_the_size_of_a_map_of_names():
    ctx = folded(profile("high"), ev("ivr_call", "ivr", transfer_id="tx-1"))
    ctx.journeys.append(JourneyInstance("billing", "", T0.timestamp(), T0.timestamp(), "e1"))
    held = to_snapshot(ctx)
    assert held[:1] == b"\xdc" and b"first_seen" not in held and b"entry_event_id" not in held
    assert len(held) < len(msgspec.msgpack.encode(_map_form(ctx))) * 0.75


def test_a_snapshot_of_the_map_form_before_still_loads_whole():
    events = (profile("high"), ev("ivr_call", "ivr", transfer_id="tx-1", anon="dev-1"))
    ctx = folded(*events)
    ctx.journeys.append(
        JourneyInstance("billing", "k", T0.timestamp(), T0.timestamp(), "e1", stage="paid")
    )
    ctx.secret, ctx.pseudonym = b"s" * 32, "p-1"
    restored = from_snapshot(msgspec.msgpack.encode(_map_form(ctx, *events)))
    assert restored.interactions.entries() == ctx.interactions.entries()
    assert msgspec.structs.replace(restored, interactions=ctx.interactions) == ctx
    erased = tombstone(T0.timestamp())
    assert is_tombstone_snapshot(msgspec.msgpack.encode(_map_form(erased)))
    assert is_tombstone_snapshot(to_snapshot(erased))
    assert not is_tombstone_snapshot(to_snapshot(ctx))
    # a release that adds a field (last) knows the tombstones of this one, and the other way
    later = msgspec.msgpack.encode([*msgspec.structs.astuple(erased), "added"])
    assert is_tombstone_snapshot(later)
    fewer = msgspec.msgpack.encode(list(msgspec.structs.astuple(ctx))[:-1])
    assert from_snapshot(fewer).interactions == RecentInteractions()
    assert from_snapshot(fewer).key == ctx.key


def test_interactions_held_as_a_list_before_load_as_the_same_log():
    """Snapshots (recovery, the cold tier, recorded decisions) made before interactions
    were columns of bytes: the same log, whatever order or number they came in."""
    events = [
        ev("page_view", "web", minutes=i, event_id=f"e{i}", touchpoint=f"tp{i % 3}")
        for i in range(MAX_RECENT + 5)
    ]
    events += [ev("ivr_call", "ivr", minutes=7, event_id="late", transfer_id="tx-1")]
    ctx = folded(*events)
    for before in (_array_form(ctx, *events), _map_form(ctx, *events)):
        restored = from_snapshot(msgspec.msgpack.encode(before))
        # (the same interactions; its words may be listed in another order)
        assert restored.interactions.entries() == ctx.interactions.entries()
        assert restored.recent == ()
        assert msgspec.structs.replace(restored, interactions=ctx.interactions) == ctx


def test_a_log_of_many_words_forgets_those_no_interaction_names():
    log = RecentInteractions()
    for i in range(400):  # (a code is a byte: every word is new here)
        log.add(float(i), event_digest(f"e{i}"), f"type-{i}", "web", f"tp-{i}", None, None)
    assert len(log) == MAX_RECENT and len(log.words) < 255
    assert [[log.words[i] for i in codes] for codes in log.last_of(2)] == [
        ["tp-398", "tp-399"],
        ["type-398", "type-399"],
    ]
    assert log.entries()[0][2:5] == (f"type-{400 - MAX_RECENT}", "web", f"tp-{400 - MAX_RECENT}")


def test_a_snapshot_of_an_earlier_version_still_loads():
    """Contexts snapshotted before the redelivery memory and the customer's key existed
    resume with an empty memory and no key (one is made when first needed)."""
    first = ev("page_view", "web", event_id="x1")
    ctx = folded(first)
    fields = _map_form(ctx, first)
    del fields["seen"], fields["erased_at"], fields["secret"]
    del fields["alias_to"], fields["forward_key"], fields["device_keys"]
    restored = from_snapshot(msgspec.msgpack.encode(fields))
    assert restored.seen.count() == 0 and restored.erased_at is None and restored.secret == b""
    assert restored.interactions.entries() == ctx.interactions.entries()


def test_customers_share_one_object_per_word_folded_or_decoded():
    """A million customers in memory keep their channels, contact points and profile
    words as one string each, not one per customer: decoding makes a new string every
    time, so the fold and the snapshot decoder make them one."""
    raw = msgspec.json.encode(profile("high"))
    first, second = (msgspec.json.decode(raw, type=Event) for _ in range(2))
    ctxs = [folded(first), folded(second)]
    ctxs.append(from_snapshot(to_snapshot(ctxs[0])))
    words = [(c.value_tier, c.timezone, c.preferred_channel, *c.channels) for c in ctxs]
    assert all(w == words[0] for w in words)
    for word in zip(*words, strict=True):
        assert len({id(w) for w in word}) == 1, word
    logged = [c.interactions.words for c in ctxs]
    assert logged[0] == logged[2]
    assert all(a is b for a, b in zip(logged[0], logged[2], strict=True))


def test_what_one_customer_states_never_reaches_another_through_the_shared_empty_mapping():
    """Customers without consent, attributes or contact points share one empty mapping
    (memory): a customer's first statement gets a dict of its own, the shared one stays
    empty and refuses writes, decoded or folded alike."""
    quiet = new_context("cust-1", ev("page_view", "web"), "p-1")
    talker = new_context("cust-2", ev("page_view", "web", customer="cust-2"), "p-2")
    assert quiet.consent is talker.consent and not quiet.consent
    granted = Consent(channel="email", purpose="marketing", granted=True)
    fold(talker, ev("consent", "web", customer="cust-2", consent=granted))
    fold(talker, ev("page_view", "web", customer="cust-2", touchpoint="home"))
    assert talker.consent == {"email/marketing": True} and talker.touchpoints == {"home": 1}
    assert not quiet.consent and not quiet.touchpoints and not quiet.attributes
    decoded = from_snapshot(to_snapshot(quiet))
    assert decoded.consent is quiet.consent and decoded.device_keys is quiet.device_keys
    absorb_visitor(decoded, talker)
    assert decoded.consent == {"email/marketing": True} and not quiet.consent
    with pytest.raises(TypeError):
        quiet.consent["*/*"] = True  # type: ignore[index]


def test_contexts_without_interactions_share_one_empty_log_that_nobody_writes():
    """A device's state after its handover, or a tombstone, holds no interaction: they
    share one empty log (memory), and the first interaction folded gets a log of its own."""
    quiet = from_snapshot(to_snapshot(tombstone(1.0)))
    other = from_snapshot(to_snapshot(tombstone(2.0)))
    assert quiet.interactions is other.interactions and not len(quiet.interactions)
    fold(quiet, ev("page_view", "web", touchpoint="home"))
    assert len(quiet.interactions) == 1 and not len(other.interactions)
    with pytest.raises(TypeError):
        other.interactions.add(0.0, b"\x00" * 8, "page_view", "web")
