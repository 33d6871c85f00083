"""The seed rule: a valuable customer stuck on one transfer gets a priority agent."""

from operators.customer_step import CustomerStep
from operators.ids import action_id
from schemas.action import Action
from schemas.decision import Decision
from schemas.event import Consent
from tests.helpers import ev, stuck_transfer


def run(events):
    """Feed events through the customer step; return (context, actions, decisions)."""
    step = CustomerStep()
    ctx = None
    actions, decisions = [], []
    for event in events:
        ctx, outputs = step.on_event(ctx, event)
        actions += [o for o in outputs if isinstance(o, Action)]
        decisions += [o for o in outputs if isinstance(o, Decision)]
    return ctx, actions, decisions


def test_high_value_customer_after_web_and_ivr_is_routed_to_priority_agent_on_chat():
    events = stuck_transfer()
    _, actions, decisions = run(events)
    (action,) = actions
    chat = events[-1]
    assert action.action == "priority_agent"
    assert action.channel == "chat"
    assert action.customer_id == "cust-1"
    assert action.journey == "money_transfer"
    assert action.trigger_event_id == chat.event_id
    assert action.content["transfer_id"] == "tx-77"
    assert action.content["queue"] == "priority"
    assert action.created_at == chat.ts
    assert action.expires_at > action.created_at
    (decision,) = decisions
    assert decision.outcome == "sent"
    assert decision.action_id == action.action_id


def test_reason_names_the_journey_the_channels_tried_and_when():
    _, (action,), _ = run(stuck_transfer(web_at=10, ivr_at=30, chat_at=50))
    text = " ".join(action.reasons)
    assert "money transfer journey" in text
    assert "tx-77" in text
    assert "web at 12:10 UTC (40 min ago)" in text
    assert "IVR at 12:30 UTC (20 min ago)" in text
    assert "chat" in text and "priority agent" in text


def test_action_id_is_deterministic_from_customer_trigger_and_action():
    events = stuck_transfer()
    _, (first,), _ = run(events)
    _, (again,), _ = run(events)
    assert (
        first.action_id
        == again.action_id
        == action_id("cust-1", events[-1].event_id, "priority_agent")
    )


def test_near_miss_low_value_customer_gets_no_action_and_the_reason():
    _, actions, (decision,) = run(stuck_transfer(tier="medium"))
    assert actions == []
    assert decision.outcome == "no_action"
    (candidate,) = decision.candidates
    assert candidate.status == "ineligible"
    assert any("Value tier is medium" in r for r in candidate.reasons)


def test_near_miss_contacts_older_than_an_hour():
    # IVR at minute 5, chat at minute 70: IVR fell out of the 60-minute window.
    _, actions, (decision,) = run(stuck_transfer(web_at=40, ivr_at=5, chat_at=70))
    assert actions == []
    reasons = " ".join(decision.candidates[0].reasons)
    assert "IVR contact at 12:05 UTC (1 h 5 min ago), outside the 60-min window" in reasons


def test_near_miss_only_one_earlier_channel():
    _, actions, (decision,) = run(stuck_transfer(ivr_at=None))
    assert actions == []
    assert "no IVR contact about it" in " ".join(decision.candidates[0].reasons)


def test_contacts_about_different_transfers_do_not_add_up():
    events = stuck_transfer(ivr_at=None)
    events.insert(
        -1, ev("ivr_call", "ivr", minutes=30, touchpoint="ivr_payments", transfer_id="tx-other")
    )
    _, actions, _ = run(events)
    assert actions == []


def test_chat_without_transfer_history_is_audited_as_no_action():
    _, actions, (decision,) = run([ev("chat_started", "chat", touchpoint="chat_support")])
    assert actions == []
    assert decision.outcome == "no_action"
    assert "No contact about a money transfer" in decision.candidates[0].reasons[0]


def test_events_that_trigger_no_rule_make_no_decision():
    _, actions, decisions = run(stuck_transfer()[:-1])
    assert actions == [] and decisions == []


def test_revoked_service_consent_on_chat_suppresses_the_action():
    events = stuck_transfer()
    events.insert(
        1,
        ev(
            "consent",
            "web",
            minutes=-60,
            consent=Consent(granted=False, channel="chat", purpose="service"),
        ),
    )
    _, actions, (decision,) = run(events)
    assert actions == []
    assert decision.outcome == "suppressed"
    assert decision.candidates[0].status == "suppressed"
    assert "not agreed to service contact on chat" in decision.candidates[0].reasons[-1]


def test_out_of_order_ivr_event_still_counts():
    events = stuck_transfer()
    ivr = next(e for e in events if e.channel == "ivr")
    events.remove(ivr)
    events.insert(1, ivr)  # arrives before the failure and the web visit, from another partition
    _, actions, _ = run(events)
    assert len(actions) == 1


def test_redelivered_chat_event_is_not_decided_twice():
    events = stuck_transfer()
    _, actions, decisions = run([*events, events[-1]])
    assert len(actions) == 1 and len(decisions) == 1


def test_erase_drops_the_customer_context():
    ctx, _, _ = run([*stuck_transfer(), ev("erase", "web", minutes=60)])
    assert ctx is None


def test_decision_records_rules_version():
    _, _, (decision,) = run(stuck_transfer())
    assert decision.rules_version.startswith("rules-")
