"""The simulator's hidden ground truth, and how simulated customers react to actions.

Each simulated customer has a true intent, a responsiveness per channel and an
appetite for each action, none of which Wayfinder is told. Actions sent to them
come back as `action_outcome` events (opened, converted, dismissed, or nothing)
and, when an action works, as the event that moves their journey to its goal
(the activation, the fixed fault, the completed transfer...). The reactions are
drawn from a generator seeded by the action id: the same action always meets the
same reaction, so policies compared on one population and seed differ only in
what they decide.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flows.lab.banking import transfer_id
from flows.lab.population import customer_index
from flows.lab.simulator import customer_profile, true_intent
from operators.identity import instance_name
from schemas.action import Action
from schemas.event import Event, Outcome
from schemas.types import PropertyValue

#: Base chance that a message on a channel is opened (a conversation: engaged with).
_CHANNEL_OPEN = {
    "email": 0.3,
    "sms": 0.45,
    "push": 0.25,
    "app": 0.5,
    "web": 0.35,
    "chat": 0.85,
    "call_centre": 0.7,
    "ivr": 0.4,
    "store": 0.5,
    "partner": 0.6,
}

#: Chance that an opened action converts, for a customer whose true intent is the key
#: ("*": any other intent).
_APPETITE: dict[str, dict[str, float]] = {
    "priority_agent": {"pay": 0.9, "*": 0.6},
    "activation_help": {"activate": 0.7, "upgrade": 0.6, "*": 0.45},
    "accessories_upsell": {"upgrade": 0.35, "activate": 0.3, "*": 0.04},
    "ebill_nudge": {"billing": 0.55, "*": 0.2},
    "dealer_test_drive": {"buy": 0.5, "*": 0.05},
    "finance_offer": {"buy": 0.3, "*": 0.02},
    "open_support_case": {"get_support": 0.75, "pay": 0.7, "*": 0.4},
    "proactive_guide": {"get_support": 0.7, "pay": 0.5, "*": 0.3},
    "upgrade_offer": {"upgrade": 0.45, "buy": 0.3, "*": 0.01},
    "service_status": {"get_support": 0.6, "pay": 0.5, "*": 0.05},
    "ebill_banner": {"billing": 0.5, "*": 0.03},
    "test_drive_banner": {"buy": 0.4, "*": 0.02},
}

#: When an action converts, the event that moves the customer's journey on.
EFFECTS: dict[str, tuple[str, str, str | None]] = {
    "priority_agent": ("transfer_completed", "app", "transfers"),
    "activation_help": ("device_activated", "app", "activation"),
    "ebill_nudge": ("ebill_enrolled", "web", "bill_online"),
    "dealer_test_drive": ("test_drive_booked", "partner", "dealer_booking"),
    "open_support_case": ("fault_resolved", "call_centre", "cc_tech"),
    "proactive_guide": ("fault_resolved", "app", "help_network"),
    "upgrade_offer": ("purchase", "web", "checkout"),
    "ebill_banner": ("ebill_enrolled", "web", "bill_online"),
    "test_drive_banner": ("test_drive_booked", "partner", "dealer_booking"),
    "accessories_upsell": ("purchase", "app", "accessories"),
    "finance_offer": ("purchase", "partner", "dealer_showroom"),
}


@dataclass(frozen=True)
class Truth:
    """What is really going on with one customer."""

    intent: str
    open_rate: dict[str, float]
    preferred: str


#: A simulated customer's own journey instances, by instance key: the n-th (from 1).
_OWN_INSTANCES: dict[str, Callable[[int, int], str]] = {"transfer_id": transfer_id}
#: How many of their own instances a simulated customer looks through.
_MAX_OWN = 1000

#: What an action's content names by token, resolved (None: not known).
Resolve = Callable[[str, str], str | None]


class World:
    """The simulated population's hidden truth, and its reactions to actions.

    An action names a journey instance (a transfer) by token in its content; the
    customer who reacts knows their own: `own_instance` finds which of theirs it is
    (a bank's channel resolves it with the key vault)."""

    def __init__(self, seed: int, pseudonym_of: Callable[[str], str] | None = None) -> None:
        self.seed = seed
        self._truths: dict[str, Truth] = {}
        self._pseudonym_of = pseudonym_of

    def own_instance(self, customer: str, key: str, token: str) -> str | None:
        """Which of `customer`'s own instances of `key` the token names (the world's
        pseudonyms are the run's: `pseudonym_of`)."""
        index, named = customer_index(customer), _OWN_INSTANCES.get(key)
        if index is None or named is None or self._pseudonym_of is None:
            return None
        for n in range(1, _MAX_OWN + 1):
            value = named(index, n)
            if self._pseudonym_of(instance_name(customer, value)) == token:
                return value
        return None

    def truth(self, customer: str) -> Truth | None:
        """The hidden truth of a simulated customer (`cust-000123`); None for others."""
        found = self._truths.get(customer)
        if found is None:
            index = customer_index(customer)
            if index is None:
                return None
            profile = customer_profile(self.seed, index)
            rng = random.Random(f"{self.seed}:{index}:responses")
            keen = rng.uniform(0.5, 1.5)
            open_rate = {
                channel: min(0.95, base * keen * rng.uniform(0.6, 1.4))
                for channel, base in _CHANNEL_OPEN.items()
            }
            preferred = profile["preferred"]
            open_rate[preferred] = min(0.95, open_rate.get(preferred, 0.3) * 1.5)
            found = Truth(true_intent(self.seed, index), open_rate, preferred)
            self._truths[customer] = found
        return found

    def appetite(self, truth: Truth, action: str) -> float:
        table = _APPETITE.get(action, {"*": 0.05})
        return table.get(truth.intent, table["*"])

    def true_propensity(self, customer: str, action: str, channel: str) -> float:
        """The real chance that this action on this channel converts (the oracle's view)."""
        truth = self.truth(customer)
        if truth is None:
            return 0.0
        return truth.open_rate.get(channel, 0.3) * self.appetite(truth, action)

    def react(self, action: Action, customer: str, resolve: Resolve | None = None) -> list[Event]:
        """The events the reaction of `customer` (whom the action's pseudonym names) to an
        action produces (none for no_action). `resolve(key, token)`: the value of what
        the content names by token (by default, the customer's own instances)."""
        truth = self.truth(customer)
        if truth is None or action.action == "no_action":
            return []
        rng = random.Random(f"{self.seed}:{action.action_id}")
        at = action.created_at
        opened_at = at + timedelta(minutes=rng.uniform(2, 180))
        if rng.random() >= truth.open_rate.get(action.channel, 0.3):
            return []  # ignored: no outcome ever comes back
        events = [self._outcome(action, customer, "opened", opened_at)]
        if rng.random() >= self.appetite(truth, action.action):
            if rng.random() < 0.3:
                dismissed_at = opened_at + timedelta(minutes=1)
                events.append(self._outcome(action, customer, "dismissed", dismissed_at))
            return events
        converted_at = opened_at + timedelta(minutes=rng.uniform(1, 120))
        events.append(self._outcome(action, customer, "converted", converted_at))
        effect = EFFECTS.get(action.action)
        if effect is not None:
            kind, channel, touchpoint = effect
            find = resolve or (lambda key, token: self.own_instance(customer, key, token))
            properties: dict[str, PropertyValue] = {
                k: find(k, v) or v
                for k, v in action.content.items()
                if k.endswith("_id") and isinstance(v, str)
            }
            if kind == "purchase":
                properties["product"] = action.action
            events.append(
                Event(
                    event_id=f"world-{action.action_id}-{kind}",
                    ts=converted_at + timedelta(seconds=30),
                    type=kind,
                    channel=channel,
                    customer_id=customer,
                    touchpoint=touchpoint,
                    partner_id=action.partner_id if channel == "partner" else None,
                    properties=properties,
                )
            )
        return events

    @staticmethod
    def _outcome(action: Action, customer: str, outcome: Outcome, at: datetime) -> Event:
        return Event(
            event_id=f"world-{action.action_id}-{outcome}",
            ts=at,
            type="action_outcome",
            channel=action.channel,
            customer_id=customer,
            action_id=action.action_id,
            outcome=outcome,
        )
