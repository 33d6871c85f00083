"""A replay after a crash repeats what the run before published: a decision id never
carries two contents, however far the models have moved on since."""

from collections.abc import Sequence
from datetime import timedelta

import msgspec
from msgspec.structs import replace

from flows.lab.simulator import SimulationConfig, simulate
from operators.models import ModelSet
from operators.published import Published
from operators.replay import Replay
from schemas.action import Action
from schemas.decision import Decision, DecisionInput
from schemas.event import Event
from schemas.journey import IntentTransition
from tests.helpers import default_playbook

_EVENT = msgspec.json.Decoder(Event)


def _day(customers: int = 60) -> list[Event]:
    events = []
    for _ts, raw in simulate(SimulationConfig(customers=customers, hours=24, seed=3)):
        try:
            events.append(_EVENT.decode(raw))
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue  # the simulator's bad input: the decode step's, not this test's
    return events


Record = Decision | Action | DecisionInput | IntentTransition


def _published(outputs: Sequence[object]) -> list[Record]:
    return [o for o in outputs if isinstance(o, Record)]


def _by_id(outputs: Sequence[object]) -> dict[str, bytes]:
    """Each decision, action and intent change, encoded, by its id."""
    found: dict[str, bytes] = {}
    for o in outputs:
        if isinstance(o, Decision):
            found[o.decision_id] = msgspec.json.encode(o)
        elif isinstance(o, Action):
            found[o.action_id] = msgspec.json.encode(o)
        elif isinstance(o, IntentTransition):
            found[o.transition_id] = msgspec.json.encode(o)
    return found


def _facts(records: list[Record]) -> Published:
    facts = Published()
    for record in records:
        facts.add(record)
    return facts


def test_a_replay_with_other_models_repeats_every_published_decision_action_and_intent():
    events = _day()
    playbook = default_playbook()
    before = Replay(playbook, record_inputs=True)  # learning as it goes
    before.run(events)
    written = _by_id(before.outputs)
    assert sum(isinstance(o, Decision) for o in before.outputs) > 50

    # Models that learned nothing: what the same input decides with them differs.
    untrained = Replay(playbook, learn=False, predictors=ModelSet(playbook))
    untrained.run(events)
    again = _by_id(untrained.outputs)
    changed = [i for i in written.keys() & again.keys() if written[i] != again[i]]
    assert changed, "the models do not change any decision: this test proves nothing"

    facts = _facts(_published(before.outputs))
    replay = Replay(playbook, learn=False, predictors=ModelSet(playbook), published=facts)
    replay.run(events)
    repeated = _by_id(replay.outputs)
    assert repeated.keys() >= set(written)
    assert all(repeated[i] == written[i] for i in written.keys() & repeated.keys())
    for key, ctx in before.contexts.items():  # what each customer was sent, as it was
        assert replay.contexts[key].actions == ctx.actions, key
    assert facts.replaying(), "every decision it made had been published: never went past"


def test_the_replay_goes_past_the_crash_at_the_first_decision_not_published():
    events = _day()
    playbook = default_playbook()
    before = Replay(playbook)
    before.run(events[: len(events) // 2])  # the crash: half the day published
    facts = _facts(_published(before.outputs))
    assert facts.replaying()

    replay = Replay(playbook, learn=False, predictors=ModelSet(playbook), published=facts)
    replay.run(events[: len(events) // 2])
    assert facts.replaying()  # every decision so far was published: still repeating
    replay.run(events[len(events) // 2 :])
    assert not facts.replaying()
    written, repeated = _by_id(before.outputs), _by_id(replay.outputs)
    assert all(repeated[i] == written[i] for i in written.keys() & repeated.keys())


def test_a_decision_on_an_intent_change_is_repeated_when_the_crash_lost_the_change():
    """A crash can fall between the producer's batches for two topics: a decision on an
    intent change published, the change itself lost. The replay announces it again (its
    id follows from the customer, the intent and the event), whatever the models say."""
    events = _day(customers=400)  # (the models gain the confidence to announce intents)
    playbook = default_playbook()
    before = Replay(playbook, record_inputs=True)
    before.run(events)
    written = _by_id(before.outputs)
    on_intent = {i for i, v in written.items() if i.startswith("dec-") and b'"intent_changed"' in v}
    assert on_intent, "no decision on an intent change: this test proves nothing"

    facts = _facts([o for o in _published(before.outputs) if not isinstance(o, IntentTransition)])
    replay = Replay(playbook, learn=False, predictors=ModelSet(playbook), published=facts)
    replay.run(events)
    repeated = _by_id(replay.outputs)
    assert repeated.keys() >= {i for i, o in written.items() if not i.startswith("jt-")}
    assert all(repeated[i] == written[i] for i in on_intent)
    changes = {msgspec.json.decode(written[i])["trigger_id"] for i in on_intent}
    assert changes <= repeated.keys()  # announced again, as the decisions say


def _decision_inputs(outputs: Sequence[object]) -> dict[str, DecisionInput]:
    return {o.decision_id: o for o in outputs if isinstance(o, DecisionInput)}


def test_a_replay_repeats_the_input_sealed_under_the_key_the_customer_holds_now():
    """A run that started again from the beginning (a crash before its first snapshot)
    made its customers' keys anew and sealed each input again: an input is on the topic
    once per key. A run resumed with the last of those keys repeats the copy that opens
    under it, not the first one published (which none of its keys opens) sealed again:
    what a context held at a decision follows the broker's timing on Kafka, and one
    decision would carry two inputs under one key."""
    events = _day()
    playbook = default_playbook()
    first = Replay(playbook, record_inputs=True)
    first.run(events)
    earlier = _published(first.outputs)

    # From the beginning again: keys made anew, and contexts that differ at its
    # decisions (here, each page view a millisecond later).
    later = timedelta(milliseconds=1)
    again = Replay(playbook, record_inputs=True, published=_facts(earlier))
    keys = again.step.keys_made()
    again.run([replace(e, ts=e.ts + later) if e.type == "page_view" else e for e in events])
    sealed_again = _decision_inputs(again.outputs)

    def resumed(published: list[Record]) -> dict[str, DecisionInput]:
        """A run resumed from the second one's snapshots: its keys, the day's events."""
        replay = Replay(playbook, record_inputs=True, published=_facts(published))
        with replay.step.reusing(list(keys)):
            replay.run(events)
        assert {k: c.secret for k, c in replay.contexts.items()} == {
            k: c.secret for k, c in again.contexts.items()
        }
        return _decision_inputs(replay.outputs)

    ids = sealed_again.keys() & _decision_inputs(first.outputs).keys()
    assert len(ids) > 50
    made = resumed(earlier)  # (had the second run published nothing)
    differ = [i for i in ids if made[i] != sealed_again[i]]
    assert len(differ) > len(ids) / 2, "this test proves nothing"
    repeated = resumed(earlier + _published(again.outputs))
    assert all(repeated[i] == sealed_again[i] for i in ids)
