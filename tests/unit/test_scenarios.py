"""The eight field scenarios on the pure cores, as a marketer would tell them.

Each story is built with tests.helpers, so it reads as the customer lived it. The
same stories ship as files under scenarios/; the last tests check those files on
the cores (tests/e2e/test_scenario_files.py runs them through `wayfinder run`).
Edge cases found while writing them are pinned at the end.
"""

import json
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from flows.runtime.settings import state_key
from scenarios.check import TOPICS, Record, as_written, load_expected, problems
from schemas.action import Action
from schemas.audience import AudienceChange, Tombstone
from schemas.codec import EventDecoder
from schemas.decision import Candidate, Decision
from schemas.event import Consent, Event
from schemas.journey import IntentTransition, JourneyTransition
from state.key_vault import CustomerKey, InstanceName
from tests.helpers import T0, Harness, ev, instance_token, stuck_transfer

HOUR = 60.0
DAY = 24 * HOUR
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def customer(preferred: str, *, minutes: float = -120.0, who: str = "cust-1", **profile) -> Event:
    """A login carrying the profile: tier, time zone, preferred channel, profile properties."""
    return ev(
        "login",
        "app",
        minutes=minutes,
        customer=who,
        touchpoint="login",
        value_tier="medium",
        timezone="Europe/London",
        preferred_channel=preferred,
        **profile,
    )


def consent(granted: bool, *, channel: str | None = None, purpose: str | None = None, **kw):
    return ev(
        "consent", "app", consent=Consent(granted=granted, channel=channel, purpose=purpose), **kw
    )


def visit(touchpoint: str, channel: str = "web", *, minutes: float, **kw) -> Event:
    return ev("page_view", channel, minutes=minutes, touchpoint=touchpoint, **kw)


def with_partner(event: Event, partner_id: str) -> Event:
    return msgspec.structs.replace(event, partner_id=partner_id)


def reasons(item: Action | Candidate) -> str:
    return " ".join(item.reasons)


def candidate(run: Harness, action: str, trigger_id: str | None = None) -> Candidate:
    """The one audited candidate for `action` (on `trigger_id` if given)."""
    (found,) = [
        c
        for d in run.decisions(action)
        if trigger_id is None or d.trigger_id == trigger_id
        for c in d.candidates
        if c.action == action
    ]
    return found


# ---------------------------------------------------------------- 1. money transfer trouble
def test_stuck_high_value_transfer_routes_the_chat_to_a_priority_agent_with_the_story():
    """Web help, then IVR, then chat within the hour: the agent reads why in one line."""
    run = Harness().run(stuck_transfer(web_at=10, ivr_at=30, chat_at=50))
    milestones = [t.milestone for t in run.transitions("money_transfer", "progressed")]
    assert milestones == ["self_help", "called", "chatted"]
    (action,) = run.actions("priority_agent")
    assert (action.channel, action.journey) == ("chat", "money_transfer")
    text = reasons(action)
    assert "money transfer journey (the transfer in its content)" in text
    assert "Tried web at 12:10 UTC (40 min ago) and IVR at 12:30 UTC (20 min ago)" in text
    assert "within the last 1 h" in text


def test_same_path_for_a_medium_value_customer_is_audited_not_routed():
    run = Harness().run(stuck_transfer(tier="medium"))
    assert run.actions("priority_agent") == []
    assert "Value tier is medium" in reasons(candidate(run, "priority_agent"))


# ---------------------------------------------------------------- 2. device activation
def purchase(minutes: float = 0.0, **kw) -> Event:
    return ev(
        "device_purchased",
        "store",
        minutes=minutes,
        touchpoint="store_high_street",
        product="phone",
        device_id="imei-1",
        **kw,
    )


def test_stalled_activation_helps_on_preferred_consented_channel():
    """Nothing for 48 h after the purchase: the help goes where the customer likes it."""
    run = Harness().run([customer("sms"), purchase()], until_minutes=48 * HOUR + 1)
    (stalled,) = run.transitions("device_activation", "stalled")
    assert stalled.at == T0 + timedelta(hours=48)
    (action,) = run.actions("activation_help")
    assert action.channel == "sms"
    assert action.trigger_event_id == stalled.transition_id
    assert "The device activation journey stalled" in reasons(action)
    assert "the customer's preferred channel" in reasons(action)


def test_revoked_preferred_channel_sends_activation_help_elsewhere_and_says_why():
    """Preference only counts where there is consent: STOP on SMS moves the help on."""
    revoke = consent(False, channel="sms", purpose="service", minutes=-60)
    run = Harness().run([customer("sms"), revoke, purchase()], until_minutes=48 * HOUR + 1)
    (action,) = run.actions("activation_help")
    assert action.channel in {"email", "push", "app"}
    assert "SMS: no service consent" in reasons(action)


def test_activation_within_48_hours_neither_stalls_nor_helps():
    activated = ev("device_activated", "app", minutes=20 * HOUR, touchpoint="activation")
    run = Harness().run([customer("sms"), purchase(), activated], until_minutes=72 * HOUR)
    assert [t.kind for t in run.transitions("device_activation")][-1] == "completed"
    assert run.transitions("device_activation", "stalled") == []
    assert run.actions("activation_help") == []


# ---------------------------------------------------------------- 3. support suppresses sales
def test_open_support_journey_suppresses_the_upsell_until_the_fault_is_resolved():
    """A customer fighting a network fault is not sold earbuds; once it is fixed, they may be."""
    during = visit("accessories", "app", minutes=30)
    after = visit("accessories", "app", minutes=90)
    events = [
        customer("app"),
        consent(True, purpose="marketing", minutes=-100),
        visit("help_network", minutes=0),
        ev("chat_started", "chat", minutes=10, touchpoint="chat_support"),
        during,
        ev("chat_ended", "chat", minutes=60, touchpoint="chat_support", resolved=True),
        after,
    ]
    run = Harness().run(events)
    suppressed = candidate(run, "accessories_upsell", during.event_id)
    assert suppressed.status == "suppressed"
    assert "open network fault journey (support) suppresses sales actions" in reasons(suppressed)
    assert [t.kind for t in run.transitions("network_fault")][-1] == "completed"
    (action,) = run.actions("accessories_upsell")
    assert action.trigger_event_id == after.event_id


def test_unresolved_chat_end_keeps_the_upsell_suppressed():
    late = visit("accessories", "app", minutes=90)
    events = [
        customer("app"),
        consent(True, purpose="marketing", minutes=-100),
        visit("help_network", minutes=0),
        ev("chat_ended", "chat", minutes=60, touchpoint="chat_support", resolved=False),
        late,
    ]
    run = Harness().run(events)
    assert run.transitions("network_fault", "completed") == []
    assert candidate(run, "accessories_upsell", late.event_id).status == "suppressed"
    assert run.actions("accessories_upsell") == []


def test_activation_completed_during_a_fault_is_not_upsold_and_fault_resolved_lifts_it():
    """Both upsell triggers meet the same suppression; `fault_resolved` is a goal too."""
    after = visit("accessories", "app", minutes=8 * HOUR)
    events = [
        customer("email"),
        consent(True, purpose="marketing", minutes=-100),
        purchase(0),
        ev("fault_reported", "call_centre", minutes=30, touchpoint="cc_tech", case_id="nf-1"),
        ev("device_activated", "app", minutes=60, touchpoint="activation"),
        ev("fault_resolved", "call_centre", minutes=6 * HOUR, touchpoint="cc_tech", case_id="nf-1"),
        after,
    ]
    run = Harness().run(events)
    (completed,) = run.transitions("device_activation", "completed")
    on_completion = candidate(run, "accessories_upsell", completed.transition_id)
    assert on_completion.status == "suppressed"
    assert "suppresses sales actions" in reasons(on_completion)
    (action,) = run.actions("accessories_upsell")
    assert (action.trigger_event_id, action.channel) == (after.event_id, "email")


def test_resolved_fault_without_marketing_consent_sends_no_upsell():
    late = visit("accessories", "app", minutes=90)
    events = [
        customer("app"),
        visit("help_network", minutes=0),
        ev("fault_resolved", "web", minutes=60, touchpoint="help_network"),
        late,
    ]
    run = Harness().run(events)
    assert run.actions("accessories_upsell") == []
    assert "no marketing consent" in reasons(candidate(run, "accessories_upsell", late.event_id))


# ---------------------------------------------------------------- 4. paper bill to e-bill
def bill_view(minutes: float, **kw) -> Event:
    return ev("bill_viewed", "web", minutes=minutes, touchpoint="bill_online", bill_id="b-1", **kw)


def test_paper_bill_customer_reading_bills_online_gets_an_ebill_nudge_off_the_revoked_channel():
    """Second online view of a paper bill: into the audience, nudged where still allowed."""
    events = [
        customer("email", paper_bill=True),
        consent(False, channel="email", minutes=-100),
        bill_view(0),
        bill_view(DAY),
    ]
    run = Harness().run(events)
    (entered,) = [c for c in run.of(AudienceChange) if c.segment == "paper_bill_online_viewers"]
    assert entered.change == "entered"
    assert entered.trigger_event_id == events[-1].event_id
    assert entered.reasons == ["visited bill_online 2 times", "paper_bill is true"]
    (action,) = run.actions("ebill_nudge")
    assert action.channel != "email"
    assert "Entered segment paper bill online viewers" in reasons(action)
    assert "email: no service consent" in reasons(action)


@pytest.mark.parametrize(
    ("paper_bill", "views"), [(True, 1), (False, 2)], ids=["one-view", "already-e-bill"]
)
def test_one_online_view_or_no_paper_bill_is_no_audience(paper_bill, views):
    events = [
        customer("email", paper_bill=paper_bill),
        *[bill_view(i * HOUR) for i in range(views)],
    ]
    run = Harness().run(events)
    assert all(c.segment != "paper_bill_online_viewers" for c in run.of(AudienceChange))
    assert run.actions("ebill_nudge") == []


# ---------------------------------------------------------------- 5. partner car purchase
def configured(minutes: float = 0.0) -> Event:
    return ev("configurator_used", "web", minutes=minutes, touchpoint="configurator", model="ev-1")


def test_configurator_passes_a_test_drive_lead_and_the_booking_dealer_leads_the_journey():
    booked = with_partner(
        ev("test_drive_booked", "partner", minutes=DAY, touchpoint="dealer_booking"), "dealer-014"
    )
    run = Harness().run([customer("email"), configured(), booked])
    (entered,) = run.transitions("car_purchase", "entered")
    assert entered.partner_id is None
    (lead,) = run.actions("dealer_test_drive")
    assert (lead.channel, lead.journey) == ("partner", "car_purchase")
    assert "Passed to the partner network" in reasons(lead)
    (test_drive,) = [
        t for t in run.transitions("car_purchase", "progressed") if t.milestone == "test_drive"
    ]
    assert test_drive.partner_id == "dealer-014"
    assert run.context().journeys[0].owner == "dealer-014"


def test_partner_led_car_journey_suppresses_the_direct_finance_offer_despite_consent():
    """Co-selling: one owner per journey, so the direct team stands back."""
    calculator = visit("finance_calculator", minutes=2 * DAY)
    events = [
        customer("email"),
        consent(True, purpose="marketing", minutes=-100),
        configured(),
        with_partner(
            ev("test_drive_booked", "partner", minutes=DAY, touchpoint="dealer_booking"),
            "dealer-014",
        ),
        calculator,
    ]
    run = Harness().run(events)
    assert run.actions("finance_offer") == []
    offer = candidate(run, "finance_offer", calculator.event_id)
    assert offer.status == "suppressed"
    assert "partner dealer-014 leads this car purchase journey" in reasons(offer)


def test_finance_offer_goes_out_while_no_partner_leads():
    """The contrast that shows the partner, not the consent, made the difference above."""
    events = [
        customer("email"),
        consent(True, purpose="marketing", minutes=-100),
        configured(),
        visit("finance_calculator", minutes=HOUR),
    ]
    (action,) = Harness().run(events).actions("finance_offer")
    assert action.channel == "email"


# ---------------------------------------------------------------- 6. anonymous, then known
def laptop(type_: str, touchpoint: str, minutes: float) -> Event:
    return ev(type_, "web", minutes=minutes, customer=None, anon="laptop-1", touchpoint=touchpoint)


def two_devices() -> list[Event]:
    """Laptop browses anonymously; phone logs in and browses; later the laptop logs in."""
    return [
        laptop("page_view", "phones", 0),
        laptop("page_view", "phone_detail", 4),
        ev("identify", "app", minutes=12 * HOUR, anon="phone-1", touchpoint="login"),
        visit("phones", "app", minutes=12 * HOUR + 2, anon="phone-1"),
        ev("identify", "web", minutes=16 * HOUR, anon="laptop-1", touchpoint="login"),
    ]


def test_anonymous_laptop_and_phone_login_make_one_journey_not_two():
    run = Harness().run(two_devices())
    entered = run.transitions("phone_upgrade", "entered")
    merged = run.transitions("phone_upgrade", "merged")
    assert sorted(t.customer for t in entered) == sorted(
        state_key(k) for k in ("anon:laptop-1", "cust-1")
    )
    (merge,) = merged
    assert (merge.customer, merge.merged_into) == (state_key("anon:laptop-1"), state_key("cust-1"))
    assert len(entered) - len(merged) == 1
    (journey,) = [j for j in run.context().journeys if j.journey == "phone_upgrade"]
    assert {t.touchpoint for t in journey.path} >= {"phones", "phone_detail"}
    assert {t.channel for t in journey.path} == {"web", "app"}
    assert "compared" in journey.milestones  # reached on the laptop, before the login
    assert run.context("anon:laptop-1").alias_to == state_key("cust-1")


def test_anonymous_event_from_an_identified_device_is_attributed_to_the_customer():
    cart = laptop("add_to_cart", "cart", 20 * HOUR)
    run = Harness().run([*two_devices(), cart])
    (forward,) = [e for e in run.of(Event) if e.event_id == cart.event_id]
    assert (forward.type, forward.to) == ("forward", state_key("cust-1"))
    assert forward.customer_id is None and forward.anonymous_id is None  # sealed inside
    (in_cart,) = [
        t for t in run.transitions("phone_upgrade", "progressed") if t.milestone == "in_cart"
    ]
    assert in_cart.customer == state_key("cust-1")
    assert {"phones", "phone_detail", "cart"} <= set(in_cart.contact_points)
    assert in_cart.channels == ["web", "app"]
    assert not [t for t in run.transitions(customer="anon:laptop-1") if t.milestone == "in_cart"]


# ---------------------------------------------------------------- 7. loops and resumption
def test_customer_returning_days_later_on_another_channel_resumes_not_reenters():
    """The phone journey stalls after 3 days; a store visit on day 4 picks it up again."""
    events = [
        visit("phones", minutes=0),
        visit("phone_detail", minutes=6),
        ev("add_to_cart", "store", minutes=4 * DAY, touchpoint="store_high_street"),
    ]
    run = Harness().run(events)
    kinds = [t.kind for t in run.transitions("phone_upgrade")]
    assert kinds == ["entered", "progressed", "stalled", "resumed", "progressed"]
    (resumed,) = run.transitions("phone_upgrade", "resumed")
    assert resumed.trigger_event_id == events[-1].event_id
    assert resumed.channels == ["web", "store"]


def test_stage_is_the_furthest_milestone_even_one_reached_elsewhere():
    """In the cart in the store, then comparing again on the web: the stage stays in_cart."""
    events = [
        visit("phones", minutes=0),
        visit("phone_detail", minutes=6),
        ev("add_to_cart", "store", minutes=4 * DAY, touchpoint="store_high_street"),
        visit("phone_detail", minutes=4 * DAY + 8 * HOUR),
    ]
    run = Harness().run(events, until_minutes=8 * DAY)
    last = run.transitions("phone_upgrade")[-1]
    assert (last.kind, last.stage) == ("stalled", "in_cart")


def test_loop_back_to_an_earlier_contact_point_counts_a_loop_not_a_new_journey():
    events = [
        visit("phones", minutes=0),
        visit("phone_detail", minutes=6),
        visit("phones", minutes=20),
        visit("phone_detail", minutes=25),
    ]
    run = Harness().run(events, until_minutes=4 * DAY)
    assert len(run.transitions("phone_upgrade", "entered")) == 1
    (stalled,) = run.transitions("phone_upgrade", "stalled")
    assert stalled.loops == 2
    assert stalled.contact_points == ["phones", "phone_detail"]


def test_transfer_trouble_stalls_after_an_hour_and_resumes_on_the_ivr_days_later():
    """The keyed money-transfer journey resumes by its transfer id, before abandonment."""
    events = [
        ev("transfer_failed", "app", minutes=0, touchpoint="transfers", transfer_id="t-1"),
        ev("ivr_call", "ivr", minutes=2 * DAY, touchpoint="ivr_payments", transfer_id="t-1"),
    ]
    run = Harness().run(events, until_minutes=2 * DAY + 5)
    kinds = [t.kind for t in run.transitions("money_transfer")]
    assert kinds == ["entered", "stalled", "resumed", "progressed"]
    (stalled,) = run.transitions("money_transfer", "stalled")
    assert stalled.at == T0 + timedelta(hours=1)
    assert {t.instance for t in run.transitions("money_transfer")} == {instance_token("t-1")}


# ---------------------------------------------------------------- 8. proactive support
def failed(minutes: float, transfer: str = "t-1") -> Event:
    return ev(
        "transfer_failed", "app", minutes=minutes, touchpoint="transfers", transfer_id=transfer
    )


def test_second_transfer_failure_opens_a_support_case_before_the_customer_asks():
    first, second = failed(0), failed(4)
    run = Harness().run([customer("app"), first, second])
    assert "1 failure(s) in this journey; acts from 2" in reasons(
        candidate(run, "open_support_case", first.event_id)
    )
    (action,) = run.actions("open_support_case")
    assert (action.trigger_event_id, action.channel) == (second.event_id, "app")
    assert "2 failures in this journey" in reasons(action)


def test_angry_chat_during_transfer_trouble_opens_a_support_case():
    angry = ev("chat_message", "chat", minutes=4, touchpoint="chat_support", transfer_id="t-1")
    angry = msgspec.structs.replace(angry, text="This is ridiculous, your app is useless. Furious.")
    run = Harness().run([customer("email"), failed(0), angry])
    (action,) = run.actions("open_support_case")
    assert (action.trigger_event_id, action.channel) == (angry.event_id, "email")
    assert "What the customer says is negative" in reasons(action)


def test_calm_question_during_transfer_trouble_opens_no_case():
    calm = msgspec.structs.replace(
        ev("chat_message", "chat", minutes=4, touchpoint="chat_support"),
        text="Could you tell me when the transfer will arrive?",
    )
    run = Harness().run([customer("email"), failed(0), calm])
    assert run.actions("open_support_case") == []
    assert candidate(run, "open_support_case", calm.event_id).status == "ineligible"


# ---------------------------------------------------------------- edge cases found on the way
def test_stalled_journey_picked_up_on_another_device_reports_resumed():
    """Scenario 7 across devices: back days later, anonymously, then logging in."""
    events = [
        visit("phones", minutes=0),
        ev("page_view", "web", minutes=4 * DAY, customer=None, anon="tab-1", touchpoint="phones"),
        ev("identify", "web", minutes=4 * DAY + 5, anon="tab-1"),
    ]
    run = Harness().run(events)
    assert [j.status for j in run.context().journeys] == ["open"]
    assert run.transitions("phone_upgrade", "resumed", "cust-1") != []


def test_identified_visitor_leaves_its_audiences():
    """Scenario 6: the cookie is no longer a phone shopper of its own once it is the customer."""
    changes = Harness().run(two_devices()).of(AudienceChange)
    visitor = [(c.segment, c.change) for c in changes if c.customer == state_key("anon:laptop-1")]
    assert visitor == [("phone_shoppers", "entered"), ("phone_shoppers", "exited")]


def test_resolved_transfer_chat_leaves_the_network_fault_open():
    """Scenario 3 next to scenario 1: solving the transfer does not fix the network."""
    events = [
        visit("help_network", minutes=0),
        failed(5, "trf-1"),
        ev(
            "chat_ended",
            "chat",
            minutes=20,
            touchpoint="chat_support",
            transfer_id="trf-1",
            resolved=True,
        ),
    ]
    run = Harness().run(events)
    assert run.transitions("network_fault", "completed") == []


def test_car_lead_is_not_passed_to_a_partner_met_on_another_journey():
    """Scenario 5: the test-drive lead must not go to the customer's phone reseller."""
    reseller = with_partner(visit("reseller", "partner", minutes=0), "reseller-9")
    run = Harness().run([customer("email"), reseller, configured(HOUR)])
    (lead,) = run.actions("dealer_test_drive")
    assert lead.partner_id != "reseller-9"


def test_late_store_event_from_before_the_deadline_never_resumes_before_the_stall():
    """Scenario 7 with a store that reports late: a journey cannot resume before it stalled."""
    events = [
        visit("phones", minutes=0),
        visit("home", minutes=4 * DAY, customer="cust-2"),  # event time moves on
        ev("add_to_cart", "store", minutes=2 * DAY, touchpoint="store_high_street"),
    ]
    run = Harness().run(events)
    stalled = run.transitions("phone_upgrade", "stalled", "cust-1")
    resumed = run.transitions("phone_upgrade", "resumed", "cust-1")
    assert all(r.at >= s.at for s in stalled for r in resumed)
    assert len(resumed) == len(stalled)


# ---------------------------------------------------------------- the shipped files
_TOPIC_OF = {
    JourneyTransition: "journeys",
    IntentTransition: "journeys",
    Action: "actions",
    Decision: "decisions",
    AudienceChange: "audiences",
    Tombstone: "audiences",
    Event: "events",
}
_FIELDS = {
    "journeys": set(JourneyTransition.__struct_fields__),
    "actions": set(Action.__struct_fields__),
    "decisions": set(Decision.__struct_fields__) | set(Candidate.__struct_fields__),
    "audiences": set(AudienceChange.__struct_fields__),
    "events": set(Event.__struct_fields__),
}
FOLDERS = sorted(p.parent for p in SCENARIOS.glob("*/expected.json"))


def core_outputs(folder: Path) -> dict[str, list[Record]]:
    """The scenario's events through the cores, run to the file's last event time."""
    decoder = EventDecoder()
    raw = (folder / "events.jsonl").read_bytes().splitlines()
    events = [decoder.decode(line) for line in raw if line.strip()]
    replay = Harness().replay
    replay.run(events, until=max(e.ts.timestamp() for e in events))
    outputs: dict[str, list[Record]] = {topic: [] for topic in TOPICS}
    for output in replay.outputs:
        if isinstance(output, CustomerKey | InstanceName):
            continue  # for the key vault, not a topic
        outputs[_TOPIC_OF[type(output)]].append(json.loads(msgspec.json.encode(output)))
    return outputs


def test_every_scenario_is_shipped():
    assert [p.name[:2] for p in FOLDERS] == [f"{n:02d}" for n in range(1, 9)]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_scenario_file_holds_on_the_cores(folder):
    """The files a user runs by hand say what the cores do (the CLI is checked in e2e)."""
    assert problems(load_expected(folder), core_outputs(folder)) == []


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_expected_items_name_real_fields(folder):
    """A misspelt field would make a forbidden item pass for nothing."""
    expected = load_expected(folder)
    assert expected["required"]
    for item in [*expected["required"], *expected.get("forbidden", [])]:
        fields = set(as_written(item)) - {"topic", "count", "reasons_contain", "why"}
        assert fields <= _FIELDS[item["topic"]], item
