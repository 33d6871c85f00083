"""Where each output of the flow goes: (topic, key, JSON bytes), encoded once.

A tombstone is a None value (an erased customer's audience key); an output that
is for the flow itself (an example to learn, where a customer is at the end) or for
the key vault (a customer's key) goes to no topic.
"""

import time

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


def route(item: tuple[str, StepOutput]) -> Routed | None:
    """Send one customer-step output to its topic (None: for the flow itself)."""
    _state_key, value = item
    if isinstance(value, Decision):
        metrics.DECISIONS.labels(value.outcome).inc()
        if value.outcome != "sent" or len(value.candidates) > 1:
            for candidate in value.candidates:
                if candidate.policy is not None:
                    metrics.SUPPRESSIONS.labels(candidate.policy).inc()
        return (DECISIONS, value.customer, encode(value))
    if isinstance(value, JourneyTransition):
        metrics.TRANSITIONS.labels(value.journey, value.kind).inc()
        if value.kind == "completed":
            metrics.TIME_TO_GOAL.labels(value.journey).observe(value.duration_seconds)
        return (JOURNEYS, value.customer, encode(value))
    if isinstance(value, Action):
        kind = action_kind(value)
        metrics.ACTIONS.labels(value.channel, value.action, kind).inc()
        _REACTION_TIME[kind].observe(time.time() - value.created_at.timestamp())
        return (action_topic(value.channel), value.customer, encode(value))
    if isinstance(value, AudienceChange):
        metrics.AUDIENCE_CHANGES.labels(value.change).inc()
        return (AUDIENCES, value.customer, encode(value))
    if isinstance(value, Event):
        return (EVENTS, value.to, encode(value))  # (the loop's records name a state so)
    if isinstance(value, Tombstone):
        return (AUDIENCES, value.customer, None)
    if isinstance(value, InFlight | Example | CustomerKey | KeyDestroyed | InstanceName):
        return None
    if isinstance(value, IntentTransition):
        metrics.INTENT_CHANGES.inc()
        return (JOURNEYS, value.customer, encode(value))
    if isinstance(value, DecisionInput):
        return (DECISION_INPUTS, value.customer, encode(value))
    if isinstance(value, DeadLetter):
        return route_dead_letter(value)
    raise TypeError(f"customer step emitted an unroutable {type(value).__name__}")


#: The event-to-action histogram of each kind of action, bound once.
_REACTION_TIME = {k: metrics.EVENT_TO_ACTION.labels(k) for k in ("sent", "reply", "no_action")}


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
