"""Every shape that crosses a topic, a file or a config, and the codecs for them.

This package imports nothing of ours: producers in other languages get the same
contracts through the JSON Schema export (`wayfinder schema`).
"""

from schemas.action import Action
from schemas.codec import BadInput, EventDecoder, encode
from schemas.deadletter import DeadLetter
from schemas.decision import Candidate, Decision
from schemas.event import SPECIAL_TYPES, Consent, Event
from schemas.journey import JourneyTransition

__all__ = [
    "SPECIAL_TYPES",
    "Action",
    "BadInput",
    "Candidate",
    "Consent",
    "DeadLetter",
    "Decision",
    "Event",
    "EventDecoder",
    "JourneyTransition",
    "encode",
]
