"""The topics: their names (without the deployment's prefix), which shape travels on
each, and its JSON Schema export."""

from collections.abc import Iterable
from typing import Any

import msgspec

from schemas.action import Action
from schemas.analytics import AnalyticsSnapshot
from schemas.audience import AudienceChange
from schemas.deadletter import DeadLetter
from schemas.decision import Decision, DecisionInput
from schemas.event import Event
from schemas.journey import JourneyTransition
from schemas.learning import LearnedExamples

EVENTS = "events"
JOURNEYS = "journeys"
DECISIONS = "decisions"
AUDIENCES = "audiences"
ANALYTICS = "analytics"
DLQ = "dlq"
#: A challenger's decisions (never sent to a channel).
SHADOW_DECISIONS = "decisions.shadow"
#: What each decision was made from, and every example the models learned, in order:
#: together, any decision can be re-run with the model versions it used.
DECISION_INPUTS = "decisions.inputs"
MODEL_EXAMPLES = "models.examples"
#: A cluster's processes say how much of their loop is in flight, so that a bounded
#: run knows when every process is done (`flows.runtime.balance`).
BALANCE = "cluster.balance"
#: Bulky topics of the audit trail (a decision's input is a few kilobytes): gzip files
#: in embedded runs.
AUDIT_TOPICS = frozenset({DECISION_INPUTS, MODEL_EXAMPLES})
#: Every topic besides the per-channel action topics.
CORE_TOPICS: tuple[str, ...] = (
    EVENTS,
    JOURNEYS,
    DECISIONS,
    AUDIENCES,
    ANALYTICS,
    DLQ,
    SHADOW_DECISIONS,
    DECISION_INPUTS,
    MODEL_EXAMPLES,
)


def action_topic(channel: str) -> str:
    """The topic a channel's actions go to."""
    return f"actions.{channel}"


def all_topics(channels: Iterable[str]) -> list[str]:
    """Every topic a Wayfinder deployment reads or writes, for these channels (but the
    cluster's own `BALANCE`, which an embedded run has no use for)."""
    return [*CORE_TOPICS, *(action_topic(channel) for channel in channels)]


def kafka_topics(channels: Iterable[str]) -> list[str]:
    """Every topic of a deployment on Kafka."""
    return [*all_topics(channels), BALANCE]


#: Topic name (without prefix) to the Struct its messages carry. `actions` stands
#: for every `actions.<channel>` topic.
TOPIC_SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "events": Event,
    "actions": Action,
    "decisions": Decision,
    "journeys": JourneyTransition,
    "audiences": AudienceChange,
    "analytics": AnalyticsSnapshot,
    "dlq": DeadLetter,
    "decisions.inputs": DecisionInput,
    "models.examples": LearnedExamples,
}


def json_schema(topic: str) -> dict[str, Any]:
    """A self-contained JSON Schema (2020-12) for the messages of one topic.

    The events topic's is what outside producers may send: the records of Wayfinder's
    own loop (addressed `to` a state and signed: handover requests, profile merges,
    forwards; anyone else's is a dead letter) are not offered.
    """
    struct = TOPIC_SCHEMAS[topic]
    (ref,), components = msgspec.json.schema_components([struct], ref_template="#/$defs/{name}")
    if topic == EVENTS:
        for own in ("ProfileMerge", "HandoverRequest", "Forward"):
            components.pop(own, None)
        event = components["Event"]
        for field in ("merge", "handover", "forward", "to", "signature"):
            event["properties"].pop(field, None)
        event["description"] += (
            "\n\n`profile_merge`, `handover_request` and `forward` events, and any record "
            "addressed `to` a state, are written by Wayfinder alone (signed under the "
            "deployment's secret); one from any other producer is dead-lettered."
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:wayfinder:schema:{topic}",
        "title": f"wayfinder {topic} message",
        **ref,
        "$defs": components,
    }
