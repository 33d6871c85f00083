"""Deterministic ids: the same input always gives the same id.

A replay after recovery re-emits the same action ids, so consumers downstream
can de-duplicate instead of acting twice.
"""

from hashlib import blake2b


def _digest(*parts: str) -> str:
    return blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def action_id(customer: str, trigger_event_id: str, action: str) -> str:
    return "act-" + _digest("action", customer, trigger_event_id, action)


def decision_id(customer: str, trigger_event_id: str) -> str:
    return "dec-" + _digest("decision", customer, trigger_event_id)
