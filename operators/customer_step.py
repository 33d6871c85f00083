"""One event through the customer step: fold, then decide.

This is the whole per-customer hot path as a pure function of (context, event),
so the embedded run, the Kafka run and a replay all execute exactly this.
Journeys, identity merges and models plug in here in later slices.
"""

from msgspec import Struct

from operators.decide import DEFAULT_RULES, RuleSet, decide
from operators.identity import customer_key
from schemas.event import Event
from state.context import CustomerContext, fold, is_duplicate, new_context


class CustomerStep:
    """Applies events to one customer's context and says what to emit."""

    def __init__(self, rules: RuleSet = DEFAULT_RULES) -> None:
        self.rules = rules

    def on_event(
        self, ctx: CustomerContext | None, event: Event
    ) -> tuple[CustomerContext | None, list[Struct]]:
        """Return the new context (None once the customer is erased) and the outputs."""
        if event.type == "erase":
            return None, []
        if ctx is None:
            ctx = new_context(customer_key(event), event)
        elif is_duplicate(ctx, event):
            return ctx, []
        fold(ctx, event)
        action, decision = decide(ctx, event, self.rules)
        if decision is None:
            return ctx, []
        if action is None:
            return ctx, [decision]
        ctx.last_action_at[action.action] = event.ts.timestamp()
        return ctx, [decision, action]
