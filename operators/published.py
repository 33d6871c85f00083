"""What the run before a crash published: facts that its replay repeats.

A process resumed from its snapshots replays the input it had read after them. Most
of what it emits again follows from that input alone, but a decision and an announced
change of intent also read the models, and on Kafka what the models had learned at a
given moment follows the broker's timing: deciding again could give the same decision
id other contents. What was published has been acted on (a channel may have sent the
action). So, where the replay comes to a decision or an intent change that the run
before had published, it emits that record again, unchanged, and the customer's
context follows it, as if this run had decided it.
"""

from dataclasses import dataclass

from schemas.action import Action
from schemas.decision import Decision, DecisionInput
from schemas.journey import IntentTransition


@dataclass
class PublishedDecision:
    """What was published of one decision. Any part may be missing: a crash can fall
    between writing the decision, its input and its action."""

    decision: Decision | None = None
    action: Action | None = None
    #: Every copy of its recorded input: a run that started again from the beginning
    #: made its customers' keys anew and sealed the input again, so only a copy under
    #: the key the customer holds now can be repeated (`CustomerStep._recorded`).
    inputs: tuple[DecisionInput, ...] = ()


class Published:
    """The records of decisions and intent changes published after a snapshot, by
    decision id and by (customer, event). Of two copies of one id, the first stands
    (the one consumers read first), but for a decision's input, whose copies are each
    sealed under a key of their own. Read-only once the flow runs (every worker asks),
    but for one flag: whether the replay has gone past what was published."""

    def __init__(self) -> None:
        self._decisions: dict[str, PublishedDecision] = {}
        self._intents: dict[tuple[str, str], IntentTransition] = {}
        #: Customers (pseudonyms) with a published decision on an intent change.
        self._intent_decided: set[str] = set()
        self._past = False

    def add(self, record: Decision | Action | DecisionInput | IntentTransition) -> None:
        """One record read back from the topics, in the order they hold it."""
        if isinstance(record, IntentTransition):
            if record.trigger_event_id is not None:
                self._intents.setdefault((record.customer, record.trigger_event_id), record)
            return
        fact = self._decisions.setdefault(record.decision_id, PublishedDecision())
        if isinstance(record, Decision):
            fact.decision = fact.decision or record
            if record.trigger_type == "intent_changed":
                self._intent_decided.add(record.customer)
        elif isinstance(record, Action):
            fact.action = fact.action or record
        else:
            fact.inputs += (record,)

    def decision(self, decision_id: str) -> PublishedDecision | None:
        return self._decisions.get(decision_id)

    def intent_change(self, customer: str, event_id: str) -> IntentTransition | None:
        """The intent change announced on this customer's (pseudonym's) event, if one was."""
        return self._intents.get((customer, event_id))

    def decided_on_intent(self, customer: str) -> bool:
        """Whether a decision on an intent change of this customer (pseudonym) was
        published: the change itself may have been lost in the crash (another topic)."""
        return customer in self._intent_decided

    def went_past(self) -> None:
        """A decision was made that the run before had not published: the replay has
        gone past where it crashed (its input is read in order)."""
        self._past = True

    def replaying(self) -> bool:
        """Whether the replay may still come to what was published."""
        return bool(self) and not self._past

    def __len__(self) -> int:
        return len(self._decisions) + len(self._intents)
