"""Which shape travels on which topic, and its JSON Schema export."""

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
    """A self-contained JSON Schema (2020-12) for the messages of one topic."""
    struct = TOPIC_SCHEMAS[topic]
    (ref,), components = msgspec.json.schema_components([struct], ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:wayfinder:schema:{topic}",
        "title": f"wayfinder {topic} message",
        **ref,
        "$defs": components,
    }
