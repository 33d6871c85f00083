"""Contact policies and decision requests, on the cores."""

import tomllib
from datetime import timedelta

from flows.runtime.settings import DEFAULT_PLAYBOOK
from operators.playbook import compile_playbook
from operators.policies import ContactPolicies
from schemas.action import Action
from schemas.event import Consent, Event
from schemas.playbook import parse_playbook
from state.context import SentAction, record_sent
from tests.helpers import T0, Harness, StubPredictors, default_playbook, ev, profile, request


def playbook_with(**policies):
    raw = tomllib.loads(DEFAULT_PLAYBOOK.read_text())
    raw["policies"] = {**raw.get("policies", {}), **policies}
    return compile_playbook(parse_playbook(raw))


def caps_only(*caps: dict[str, object]):
    """The default playbook with just these frequency caps: no quiet hours, fatigue or
    holdout in the way."""
    return playbook_with(caps=list(caps), quiet_hours=None, fatigue=None, holdout_share=0.0)


def accessories_visits(times_minutes, customer="cust-1"):
    """Marketing-consented customer visiting the accessories shop at the given minutes."""
    events = [
        profile("medium", customer=customer),
        ev(
            "consent",
            "web",
            minutes=-100,
            customer=customer,
            consent=Consent(granted=True, purpose="marketing"),
        ),
    ]
    events += [
        ev("page_view", "web", minutes=m, customer=customer, touchpoint="accessories")
        for m in times_minutes
    ]
    return events


def upsell_statuses(run):
    return [
        c.status
        for d in run.decisions("accessories_upsell")
        for c in d.candidates
        if c.action == "accessories_upsell"
    ]


def test_frequency_cap_closes_a_channel_then_all_channels():
    pb = caps_only({"max": 1, "per": "7d", "channel": "*", "purposes": ["marketing"]})
    # One week apart is outside the cooldown (7d) only once; use days 0 and 8 and 8.5.
    minutes = [0, 8 * 1440, 8 * 1440 + 720]
    run = Harness(pb).run(accessories_visits(minutes))
    statuses = upsell_statuses(run)
    assert statuses[0] == "sent"
    assert statuses[1] == "sent"  # the first left the 7-day window
    decision = run.decisions("accessories_upsell")[2]
    reasons = " ".join(decision.candidates[0].reasons)
    assert decision.outcome == "suppressed"
    assert "cooldown" in reasons or "frequency cap of 1 marketing actions in all" in reasons


def test_frequency_cap_is_counted_from_the_customer_log_exactly():
    pb = caps_only({"max": 2, "per": "1d", "channel": "email", "purposes": ["marketing"]})
    policies = ContactPolicies(pb)
    run = Harness(pb).run(accessories_visits([0]))
    ctx = run.context()
    action = next(a for a in pb.actions if a.name == "accessories_upsell")
    now = (T0 + timedelta(minutes=10)).timestamp()
    ctx.preferred_channel = "email"
    ctx.actions = tuple(
        SentAction(f"a{i}", "finance_offer", "email", "marketing", now) for i in range(2)
    )
    placement, why = policies.place(ctx, action, now, "web", None, None)
    assert why is None and placement is not None and placement.channel != "email"
    assert "frequency cap of 2 marketing actions on email per 1 d reached" in placement.how


def test_a_busy_week_of_service_actions_keeps_the_marketing_cap_closed():
    pb = caps_only({"max": 1, "per": "7d", "channel": "*", "purposes": ["marketing"]})
    policies = ContactPolicies(pb)
    ctx = Harness(pb).run(accessories_visits([0])).context()
    none_sent: tuple[SentAction, ...] = ()
    ctx.actions = none_sent
    start = (T0 + timedelta(minutes=10)).timestamp()
    record_sent(ctx, SentAction("m", "finance_offer", "email", "marketing", start), policies.memory)
    for i in range(100):  # far more service messages than the log once held
        at = start + 3600 + i * 2400
        record_sent(
            ctx, SentAction(f"s{i}", "service_status", "app", "service", at), policies.memory
        )
    upsell = next(a for a in pb.actions if a.name == "accessories_upsell")
    placement, why = policies.place(ctx, upsell, start + 4 * 86400, "web", None, None)
    assert placement is None and why is not None
    assert why.policy == "frequency_cap"
    assert "frequency cap of 1 marketing actions in all" in why.reason
    # Once no policy needs it, the marketing send is forgotten: its 14-day cooldown
    # outlasts the 7-day cap and the 3-day attribution window.
    assert policies.memory["finance_offer"] == 14 * 86400
    later = start + 15 * 86400
    record_sent(
        ctx, SentAction("s-late", "service_status", "app", "service", later), policies.memory
    )
    assert [s.action_id for s in ctx.actions] == ["s-late"]
    placement, why = policies.place(ctx, upsell, later, "web", None, None)
    assert why is None and placement is not None


def test_quiet_hours_hold_marketing_but_not_service():
    pb = playbook_with(
        quiet_hours={"start": "21:00", "end": "08:00", "purposes": ["marketing"]},
        caps=[],
        fatigue=None,
        holdout_share=0.0,
    )
    # T0 is 12:00 UTC; the customer is in London; 11 h later is 23:00 there.
    run = Harness(pb).run(accessories_visits([11 * 60]))
    (decision,) = run.decisions("accessories_upsell")
    assert decision.outcome == "suppressed"
    assert decision.candidates[0].policy == "quiet_hours"
    assert "quiet hours 21:00-08:00 in Europe/London (it is 23:00 there)" in " ".join(
        decision.candidates[0].reasons
    )
    policies = ContactPolicies(pb)
    service = next(a for a in pb.actions if a.name == "activation_help")
    ctx = run.context()
    placement, why = policies.place(ctx, service, ctx.last_seen, "web", None, None)
    assert why is None and placement is not None


def test_fatigue_pauses_marketing_after_ignored_actions():
    pb = playbook_with(
        fatigue={"ignored": 2, "within": "14d", "pause": "14d"},
        caps=[],
        quiet_hours=None,
        holdout_share=0.0,
    )
    ctx = Harness(pb).run(accessories_visits([0])).context()
    start = ctx.last_seen
    ctx.actions = tuple(
        SentAction(f"x{i}", "finance_offer", "email", "marketing", start + i * 7200)
        for i in range(2)
    )
    action = next(a for a in pb.actions if a.name == "accessories_upsell")
    placement, why = ContactPolicies(pb).place(ctx, action, start + 6 * 3600, "web", None, None)
    assert placement is None and why is not None
    assert why.policy == "fatigue" and "unanswered" in why.reason
    ctx.actions[-1].outcome = "clicked"  # a response ends the streak
    placement, why = ContactPolicies(pb).place(ctx, action, start + 6 * 3600, "web", None, None)
    assert why is None


def test_holdout_is_a_stable_share_of_customers():
    policies = ContactPolicies(playbook_with(holdout_share=0.05))
    held = [c for c in (f"cust-{i:06d}" for i in range(20000)) if policies.in_holdout(c)]
    assert 0.04 < len(held) / 20000 < 0.06
    assert held == [c for c in held if policies.in_holdout(c)]


def test_holdout_customer_is_audited_but_gets_nothing():
    pb = playbook_with(holdout_share=0.5, caps=[], quiet_hours=None, fatigue=None)
    policies = ContactPolicies(pb)
    customer = next(c for c in (f"cust-{i}" for i in range(100)) if policies.in_holdout(c))
    run = Harness(pb).run(accessories_visits([0], customer=customer))
    assert run.actions("accessories_upsell") == []
    (decision,) = run.decisions("accessories_upsell")
    assert decision.holdout and decision.outcome == "holdout"
    assert decision.candidates[0].status == "holdout"


def test_decision_request_without_an_answer_gets_an_explicit_no_action_reply():
    run = Harness().run([profile("low"), request(0)])
    (reply,) = run.actions()
    assert reply.action == "no_action" and reply.request_id == "r-1" and reply.channel == "web"


def test_decision_request_during_a_support_journey_gets_the_service_status():
    events = [
        profile("low"),
        ev("page_view", "web", minutes=1, touchpoint="help_network"),
        request(2, request_id="r-2"),
    ]
    (reply,) = Harness().run(events).actions()
    assert (reply.action, reply.request_id, reply.channel) == ("service_status", "r-2", "web")


def test_every_decision_request_is_answered_once():
    events = [profile("medium")] + [request(i, request_id=f"r{i}") for i in range(1, 6)]
    replies = Harness().run(events).actions()
    assert len(replies) == 5
    assert sorted(a.request_id for a in replies if a.request_id) == [f"r{i}" for i in range(1, 6)]
    assert all(isinstance(a, Action) for a in replies)


def test_outcome_is_credited_to_the_action_it_reports_on():
    events = accessories_visits([0])
    run = Harness(playbook_with(caps=[], quiet_hours=None, fatigue=None, holdout_share=0.0))
    run.run(events)
    (sent,) = run.actions("accessories_upsell")
    outcome = Event(
        event_id="o-1",
        ts=sent.created_at + timedelta(minutes=5),
        type="action_outcome",
        channel=sent.channel,
        customer_id="cust-1",
        action_id=sent.action_id,
        outcome="clicked",
    )
    run.run([outcome])
    (logged,) = [s for s in run.context().actions if s.action_id == sent.action_id]
    assert logged.outcome == "clicked"


def test_default_playbook_policies_are_in_force():
    policies = default_playbook().policies
    assert policies.holdout_share > 0 and policies.quiet_hours is not None
    assert policies.caps and policies.fatigue is not None


def request_after_browsing(intent) -> Harness:
    """A consented customer browses phones, then the web asks for the next action."""
    pb = playbook_with(quiet_hours=None, fatigue=None, holdout_share=0.0)
    harness = Harness(pb, predictors=StubPredictors(intent))
    consent = Consent(granted=True, purpose="marketing")
    return harness.run(
        [
            profile("medium"),
            ev("consent", "web", minutes=-100, consent=consent),
            ev("page_view", "web", minutes=1, touchpoint="phones"),
            request(2),
        ]
    )


def test_intent_gated_offer_reads_the_chance_of_any_of_its_intents():
    # Support is the single likeliest intent, but upgrade or buy together are likelier.
    scores = {"get_support": 0.45, "upgrade": 0.3, "buy": 0.25}
    harness = request_after_browsing(lambda ctx: scores)
    (reply,) = harness.actions()
    assert reply.action == "upgrade_offer" and reply.request_id == "r-1"
    assert "Predicted intent: buy or upgrade (55%)." in reply.reasons
    assert harness.context().intent is None  # no clear leader: no intent announced


def test_a_decision_request_reads_the_intent_model_now_not_at_the_last_journey_step():
    # The model's view changes after the last journey step (here: once the customer has
    # more history); the request is decided on the view at the request.
    def view(ctx):
        return {"upgrade": 0.9, "pay": 0.1} if ctx.events >= 4 else {"pay": 0.9, "upgrade": 0.1}

    harness = request_after_browsing(view)
    (reply,) = harness.actions()
    assert reply.action == "upgrade_offer"
    assert "Predicted intent: buy or upgrade (90%)." in reply.reasons
    assert harness.context().intent_scores == {"upgrade": 0.9, "pay": 0.1}
