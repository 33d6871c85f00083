"""The decision audit record: every decision, sent or not, with every candidate."""

from datetime import datetime
from typing import Literal

from msgspec import Struct

from schemas.event import Event
from schemas.journey import IntentTransition, JourneyTransition

#: `holdout`: eligible and allowed, but the customer is in the control group.
CandidateStatus = Literal["sent", "suppressed", "ineligible", "holdout"]
DecisionOutcome = Literal["sent", "suppressed", "no_action", "holdout"]
#: The policy that suppressed a candidate: a contact policy, the response floor, or a
#: better candidate (a bounded vocabulary: the metrics count suppressions by it).
SuppressionPolicy = Literal[
    "consent",
    "cooldown",
    "journey_suppression",
    "co_selling",
    "fatigue",
    "quiet_hours",
    "anonymous",
    "frequency_cap",
    "min_response",
    "outranked",
]


class Trigger(Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What prompted a decision: an event, a journey transition, a change of predicted
    intent or a segment entry."""

    trigger_id: str
    type: str
    at: float
    channel: str | None = None
    event: Event | None = None
    transition: JourneyTransition | None = None
    intent: IntentTransition | None = None
    segment: str | None = None
    segment_reasons: tuple[str, ...] = ()
    request_id: str | None = None
    partner_id: str | None = None

    @classmethod
    def of_event(cls, event: Event) -> "Trigger":
        return cls(
            trigger_id=event.event_id,
            type=event.type,
            at=event.ts.timestamp(),
            channel=event.channel,
            event=event,
            request_id=event.request_id,
            partner_id=event.partner_id,
        )

    @classmethod
    def of_transition(cls, transition: JourneyTransition) -> "Trigger":
        return cls(
            trigger_id=transition.transition_id,
            type=f"journey_{transition.kind}",
            at=transition.at.timestamp(),
            transition=transition,
        )

    @classmethod
    def of_intent(cls, change: IntentTransition) -> "Trigger":
        return cls(
            trigger_id=change.transition_id,
            type="intent_changed",
            at=change.at.timestamp(),
            intent=change,
        )


class Candidate(Struct, kw_only=True, omit_defaults=True):
    """One action considered for the customer, and what became of it and why."""

    action: str
    status: CandidateStatus
    score: float
    reasons: list[str]
    channel: str | None = None
    journey: str | None = None
    #: On `suppressed`: the policy that held it back.
    policy: SuppressionPolicy | None = None


class Decision(Struct, kw_only=True, omit_defaults=True):
    """What was decided on a trigger, and what it was decided with.

    A trigger is an event, a journey transition (e.g. a stall found by a timer)
    or a segment entry; `trigger_id` is its id. `playbook_version` and
    `model_version` pin the inputs so any decision can be explained and re-run.
    """

    decision_id: str
    #: The customer's pseudonym (`operators.identity.pseudonym`), never their id.
    customer: str
    trigger_id: str
    trigger_type: str
    created_at: datetime
    outcome: DecisionOutcome
    candidates: list[Candidate]
    playbook_version: str
    trigger_channel: str | None = None
    model_version: str | None = None
    action_id: str | None = None
    request_id: str | None = None
    #: The customer is in the holdout (control) group: audited, never contacted.
    holdout: bool = False


class DecisionBasis(Struct, array_like=True, frozen=True):
    """What a decision was made from: the trigger, and the customer's context as the
    decision saw it (a msgpack snapshot; it holds the intent scores it read)."""

    trigger: Trigger
    context: bytes


class DecisionInput(Struct, kw_only=True):
    """Everything a decision was made from, on the `decisions.inputs` topic, to decide
    again (`wayfinder rerun`): its basis, and the versions of the playbook and of the
    models it asked (rebuilt from `models.examples`).

    The basis is personal (the customer's context, the event) and the topic outlives
    the state, so it is sealed (`operators.sealing`, msgpack packed first,
    `operators.basis_packing`) under the customer's own key,
    bound to the decision id: erasing the customer destroys the key, and every copy of
    every input recorded for them is unreadable at once.
    """

    decision_id: str
    #: The customer's pseudonym: the key vault holds their key under it.
    customer: str
    basis: bytes
    playbook_version: str
    model_version: str | None = None
