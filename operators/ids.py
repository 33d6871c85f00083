"""Deterministic ids: the same input always gives the same id.

A replay after recovery re-emits the same action ids, so consumers downstream
can de-duplicate instead of acting twice.
"""

from hashlib import blake2b


def _digest(*parts: str) -> str:
    return blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def action_id(customer: str, trigger_event_id: str, action: str, at: float) -> str:
    return "act-" + _digest("action", customer, trigger_event_id, action, f"{at:.3f}")


def decision_id(customer: str, trigger_event_id: str, at: float) -> str:
    """Of the decision on one trigger at one time: a producer that reuses an event id
    after the redelivery horizon has forgotten it gets a new id, never an old one."""
    return "dec-" + _digest("decision", customer, trigger_event_id, f"{at:.3f}")


def transition_id(
    customer: str, journey: str, instance: str, kind: str, detail: str, at: float
) -> str:
    return "jt-" + _digest("transition", customer, journey, instance, kind, detail, f"{at:.3f}")


def audience_change_id(customer: str, segment: str, change: str, trigger: str) -> str:
    return "aud-" + _digest("audience", customer, segment, change, trigger)


def derived_event_id(kind: str, *parts: str) -> str:
    """Id of an event Wayfinder writes itself (merges, forwards, erasures), stable on replay."""
    return f"wf-{kind}-" + _digest(kind, *parts)
