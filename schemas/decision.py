"""The decision audit record: every decision, sent or not, with every candidate."""

from datetime import datetime
from typing import Literal

from msgspec import Struct

#: `holdout`: eligible and allowed, but the customer is in the control group.
CandidateStatus = Literal["sent", "suppressed", "ineligible", "holdout"]
DecisionOutcome = Literal["sent", "suppressed", "no_action", "holdout"]


class Candidate(Struct, kw_only=True, omit_defaults=True):
    """One action considered for the customer, and what became of it and why."""

    action: str
    status: CandidateStatus
    score: float
    reasons: list[str]
    channel: str | None = None
    journey: str | None = None


class Decision(Struct, kw_only=True, omit_defaults=True):
    """What was decided on a trigger, and what it was decided with.

    A trigger is an event, a journey transition (e.g. a stall found by a timer)
    or a segment entry; `trigger_id` is its id. `playbook_version` and
    `model_version` pin the inputs so any decision can be explained and re-run.
    """

    decision_id: str
    customer_id: str
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
