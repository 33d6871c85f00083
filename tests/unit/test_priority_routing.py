"""Scenario 1: a valuable customer stuck on one transfer across channels gets a priority agent."""

from flows.runtime.settings import state_key
from operators.ids import action_id
from schemas.event import Consent
from tests.helpers import Harness, ev, instance_token, stuck_transfer


def test_high_value_customer_after_web_and_ivr_is_routed_to_priority_agent_on_chat():
    events = stuck_transfer()
    run = Harness().run(events)
    (action,) = run.actions("priority_agent")
    chat = events[-1]
    assert action.channel == "chat"
    assert action.customer == state_key("cust-1")
    assert action.journey == "money_transfer"
    assert action.trigger_event_id == chat.event_id
    assert action.content["transfer_id"] == instance_token("tx-77")  # (its token)
    assert action.content["queue"] == "priority"
    assert action.created_at == chat.ts
    assert action.expires_at > action.created_at
    (decision,) = run.decisions("priority_agent")
    assert decision.outcome == "sent"
    assert decision.action_id == action.action_id
    assert decision.playbook_version.startswith("2026.11-default@")


def test_reason_names_the_journey_the_channels_tried_and_when():
    run = Harness().run(stuck_transfer(web_at=10, ivr_at=30, chat_at=50))
    (action,) = run.actions("priority_agent")
    text = " ".join(action.reasons)
    assert "money transfer journey (the transfer in its content)" in text
    assert "web at 12:10 UTC (40 min ago)" in text
    assert "IVR at 12:30 UTC (20 min ago)" in text
    assert "within the last 1 h" in text
    assert "chat started on chat" in text and "priority agent on chat" in text


def test_action_id_is_deterministic_from_customer_trigger_and_action():
    events = stuck_transfer()
    (first,) = Harness().run(events).actions("priority_agent")
    (again,) = Harness().run(events).actions("priority_agent")
    assert (
        first.action_id
        == again.action_id
        == action_id("cust-1", events[-1].event_id, "priority_agent", events[-1].ts.timestamp())
    )


def test_near_miss_low_value_customer_gets_no_action_and_the_reason():
    run = Harness().run(stuck_transfer(tier="medium"))
    assert run.actions("priority_agent") == []
    (decision,) = run.decisions("priority_agent")
    assert decision.outcome == "no_action"
    (candidate,) = [c for c in decision.candidates if c.action == "priority_agent"]
    assert candidate.status == "ineligible"
    assert any("Value tier is medium" in r for r in candidate.reasons)


def test_near_miss_contacts_older_than_an_hour():
    # IVR at minute 5, chat at minute 70: IVR fell out of the one-hour window.
    run = Harness().run(stuck_transfer(web_at=40, ivr_at=5, chat_at=70))
    assert run.actions("priority_agent") == []
    (decision,) = run.decisions("priority_agent")
    reasons = " ".join(decision.candidates[0].reasons)
    assert "Last IVR contact at 12:05 UTC (1 h 5 min ago), outside the 1 h window" in reasons


def test_near_miss_only_one_earlier_channel():
    run = Harness().run(stuck_transfer(ivr_at=None))
    assert run.actions("priority_agent") == []
    (decision,) = run.decisions("priority_agent")
    assert "No IVR contact in this journey" in " ".join(decision.candidates[0].reasons)


def test_contacts_about_different_transfers_do_not_add_up():
    events = stuck_transfer(ivr_at=None)
    other = ev("ivr_call", "ivr", minutes=30, touchpoint="ivr_payments", transfer_id="tx-other")
    events.insert(-1, other)
    chat = events[-1]
    events[-1] = ev(
        "chat_started", "chat", minutes=50, touchpoint="chat_support", transfer_id="tx-77"
    )
    assert chat.type == "chat_started"
    assert Harness().run(events).actions("priority_agent") == []


def test_chat_without_a_transfer_journey_decides_nothing():
    run = Harness().run([ev("chat_started", "chat", touchpoint="chat_support")])
    assert run.actions() == [] and run.decisions("priority_agent") == []


def test_revoked_service_consent_on_chat_suppresses_the_action():
    events = stuck_transfer()
    revoke = Consent(granted=False, channel="chat", purpose="service")
    events.insert(1, ev("consent", "web", minutes=-60, consent=revoke))
    run = Harness().run(events)
    assert run.actions("priority_agent") == []
    (decision,) = run.decisions("priority_agent")
    assert decision.outcome == "suppressed"
    assert "no service consent on chat" in decision.candidates[0].reasons[-1]


def test_out_of_order_ivr_event_still_counts():
    events = stuck_transfer()
    ivr = next(e for e in events if e.channel == "ivr")
    events.remove(ivr)
    events.insert(2, ivr)  # arrives before the web visit, from another partition
    assert len(Harness().run(events).actions("priority_agent")) == 1


def test_redelivered_chat_event_is_not_decided_twice():
    events = stuck_transfer()
    run = Harness().run([*events, events[-1]])
    assert len(run.actions("priority_agent")) == 1
    assert len(run.decisions("priority_agent")) == 1


def test_erase_drops_the_customer_context():
    run = Harness().run([*stuck_transfer(), ev("erase", "web", minutes=60)])
    assert "cust-1" not in run.replay.contexts
