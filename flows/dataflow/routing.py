"""Where each output of the flow goes: (topic, key, JSON bytes), encoded once.

A tombstone is a None value (an erased customer's audience key); an output that
is for the flow itself (an example to learn, where a customer is at the end) or for
the key vault (a customer's key) goes to no topic.
"""

import time
from collections.abc import Callable
from typing import Any

from flows.dataflow.customer import StepOutput
from flows.dataflow.held_state import action_kind
from flows.runtime import metrics
from operators.analytics import InFlight
from schemas.action import Action
from schemas.analytics import AnalyticsSnapshot
from schemas.audience import AudienceChange, Tombstone
from schemas.codec import encode
from schemas.deadletter import DeadLetter
from schemas.decision import Decision, DecisionInput
from schemas.event import Event
from schemas.journey import IntentTransition, JourneyTransition
from schemas.learning import Example, LearnedExamples
from schemas.topics import (
    ANALYTICS,
    AUDIENCES,
    DECISION_INPUTS,
    DECISIONS,
    DLQ,
    EVENTS,
    JOURNEYS,
    MODEL_EXAMPLES,
    SHADOW_DECISIONS,
    action_topic,
)
from state.key_vault import CustomerKey, InstanceName, KeyDestroyed

#: What leaves the flow before it is shaped for a sink: (topic, key, JSON bytes or
#: None for a tombstone).
Routed = tuple[str, str | None, bytes | None]


def route_batch(batch: list[tuple[str, StepOutput]]) -> list[Routed]:
    """A batch of customer-step outputs, each to its topic, without those for the flow
    itself (an example an event, about half of them): one call a batch."""
    routes = _ROUTES
    routed: list[Routed] = []
    for _key, value in batch:
        to_topic = routes.get(type(value))
        if to_topic is not None:
            routed.append(to_topic(value))
        elif type(value) not in _UNROUTED:
            raise TypeError(f"customer step emitted an unroutable {type(value).__name__}")
    return routed


_DECISIONS = metrics.Children(metrics.DECISIONS)
_SUPPRESSIONS = metrics.Children(metrics.SUPPRESSIONS)
_TRANSITIONS = metrics.Children(metrics.TRANSITIONS)
_TIME_TO_GOAL = metrics.Children(metrics.TIME_TO_GOAL)
_ACTIONS = metrics.Children(metrics.ACTIONS)
_AUDIENCE_CHANGES = metrics.Children(metrics.AUDIENCE_CHANGES)
#: The event-to-action histogram of each kind of action, bound once.
_REACTION_TIME = {k: metrics.EVENT_TO_ACTION.labels(k) for k in ("sent", "reply", "no_action")}


def _decision(value: Decision) -> Routed:
    _DECISIONS(value.outcome).inc()
    if value.outcome != "sent" or len(value.candidates) > 1:
        for candidate in value.candidates:
            if candidate.policy is not None:
                _SUPPRESSIONS(candidate.policy).inc()
    return (DECISIONS, value.customer, encode(value))


def _journey_transition(value: JourneyTransition) -> Routed:
    _TRANSITIONS(value.journey, value.kind).inc()
    if value.kind == "completed":
        _TIME_TO_GOAL(value.journey).observe(value.duration_seconds)
    return (JOURNEYS, value.customer, encode(value))


def _action(value: Action) -> Routed:
    kind = action_kind(value)
    _ACTIONS(value.channel, value.action, kind).inc()
    _REACTION_TIME[kind].observe(time.time() - value.created_at.timestamp())
    return (action_topic(value.channel), value.customer, encode(value))


def _audience_change(value: AudienceChange) -> Routed:
    _AUDIENCE_CHANGES(value.change).inc()
    return (AUDIENCES, value.customer, encode(value))


def _intent_transition(value: IntentTransition) -> Routed:
    metrics.INTENT_CHANGES.inc()
    return (JOURNEYS, value.customer, encode(value))


def route_shadow(item: tuple[str, StepOutput]) -> Routed | None:
    """A challenger's decisions go to the shadow topic; it never acts, merges or forwards."""
    _key, value = item
    if isinstance(value, Decision):
        return (SHADOW_DECISIONS, value.customer, encode(value))
    return None


def route_learned(item: tuple[str, LearnedExamples]) -> Routed:
    model, learned = item
    return (MODEL_EXAMPLES, model, encode(learned))


def route_analytics(item: tuple[str, AnalyticsSnapshot]) -> Routed:
    scope, snapshot = item
    return (ANALYTICS, scope, encode(snapshot))


def route_dead_letter(letter: DeadLetter) -> Routed:
    return (DLQ, None, encode(letter))


#: Where each kind of output goes (its exact type: the schemas are final structs).
_ROUTES: dict[type, Callable[[Any], Routed]] = {
    Decision: _decision,
    JourneyTransition: _journey_transition,
    Action: _action,
    AudienceChange: _audience_change,
    Event: lambda value: (EVENTS, value.to, encode(value)),  # (the loop's: a state's name)
    Tombstone: lambda value: (AUDIENCES, value.customer, None),
    IntentTransition: _intent_transition,
    DecisionInput: lambda value: (DECISION_INPUTS, value.customer, encode(value)),
    DeadLetter: route_dead_letter,
}
#: Outputs for the flow itself (learned, mapped) or for the key vault: no topic.
_UNROUTED = frozenset({InFlight, Example, CustomerKey, KeyDestroyed, InstanceName})
