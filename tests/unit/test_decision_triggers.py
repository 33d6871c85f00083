"""Which actions a transition, an intent change or a segment entry can fire: the ones
whose triggers fire on it, found without asking each action (most fire none)."""

import typing
from datetime import UTC, datetime

from operators.decide import DecisionMaker, _listening, _named
from operators.playbook import ActionSpec, CompiledPlaybook
from schemas.decision import Trigger
from schemas.journey import IntentTransition, JourneyTransition, TransitionKind
from tests.helpers import default_playbook

AT = datetime(2026, 12, 7, 9, tzinfo=UTC)


def triggers(playbook: CompiledPlaybook) -> list[Trigger]:
    """Every transition of every journey, an intent change to every intent and a
    segment entry into every segment the playbook's actions name, and some they do not."""
    specs = [spec for action in playbook.actions for spec in action.triggers]
    journeys = {j.name for j in playbook.journeys} | {"no-such-journey"}
    intents = {i for spec in specs for i in spec.intent_changed} | {"no-such-intent"}
    segments = {s for spec in specs if (s := spec.segment_entered)} | {"no-such-segment"}
    found = [
        Trigger(
            trigger_id="t",
            type=f"journey_{kind}",
            at=AT.timestamp(),
            transition=JourneyTransition(
                transition_id="t",
                customer="c",
                journey=journey,
                category="x",
                kind=kind,
                at=AT,
                duration_seconds=0.0,
                contact_points=[],
                channels=[],
            ),
        )
        for journey in sorted(journeys)
        for kind in typing.get_args(TransitionKind)
    ]
    found += [
        Trigger(
            trigger_id="t",
            type="intent_changed",
            at=AT.timestamp(),
            intent=IntentTransition(
                transition_id="t",
                customer="c",
                intent=intent,
                confidence=0.9,
                margin=0.5,
                at=AT,
            ),
        )
        for intent in sorted(intents)
    ]
    found += [
        Trigger(trigger_id="t", type="segment_entered", at=AT.timestamp(), segment=segment)
        for segment in sorted(segments)
    ]
    return found


def fired(actions: tuple[ActionSpec, ...], trigger: Trigger) -> tuple[ActionSpec, ...]:
    return tuple(
        a for a in actions if any(DecisionMaker._fires(spec, trigger) for spec in a.triggers)
    )


def test_the_actions_listening_to_a_trigger_are_those_whose_triggers_fire_on_it():
    playbook = default_playbook()
    listening = _listening(playbook.actions)
    heard = set()
    for trigger in triggers(playbook):
        expected = fired(playbook.actions, trigger)
        assert listening.get(_named(trigger), ()) == expected, trigger.type
        if expected:
            heard.add(trigger.type.split("_")[0])
    assert heard == {"journey", "intent", "segment"}  # (each kind, some action's)
