"""An independent check of what was sent against the contact policies.

It reads only what a channel and an auditor can see (the customers' own events,
the journey transitions and the actions sent), never the engine's state, so it
can judge any policy: the live playbook, a challenger (shadow), or the policies
compared in a closed-loop evaluation.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from operators.playbook import ActionSpec, CompiledPlaybook
from operators.policies import time_zone
from schemas.action import Action
from schemas.event import Event
from schemas.journey import JourneyTransition
from schemas.playbook import seconds


@dataclass
class _Sent:
    action: Action
    purpose: str
    category: str
    value: float


class ViolationChecker:
    """Checks what was sent against the contact policies, independently of the engine:
    consent (from the customer's own consent events), frequency caps, quiet hours,
    and suppression by open journeys (from the journey transitions).

    Actions and transitions name customers by pseudonym; `pseudonym_of` names the
    customers of the events it sees the same way (the run's)."""

    def __init__(self, playbook: CompiledPlaybook, pseudonym_of: Callable[[str], str]) -> None:
        self.playbook = playbook
        self._pseudonym_of = pseudonym_of
        self.timezone: dict[str, str] = {}
        self.consent: dict[str, list[tuple[str | None, str | None, bool]]] = defaultdict(list)
        self.open: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
        self.sent: dict[str, list[_Sent]] = defaultdict(list)
        self.violations: dict[str, int] = defaultdict(int)
        self.suppressors = {j.name: j.suppresses for j in playbook.journeys}

    def saw(self, event: Event) -> None:
        if event.customer_id is None:
            return
        zone = event.properties.get("timezone") if event.properties else None
        if isinstance(zone, str):
            self.timezone[self._pseudonym_of(event.customer_id)] = zone
        if event.consent is not None:
            c = event.consent
            customer = self._pseudonym_of(event.customer_id)
            self.consent[customer].append((c.channel, c.purpose, c.granted))

    def transition(self, t: JourneyTransition) -> None:
        key = (t.journey, t.instance or "")
        if t.kind in ("entered", "resumed", "progressed", "stalled"):
            self.open[t.customer][key] = t.journey
        elif t.kind in ("completed", "abandoned", "merged"):
            self.open[t.customer].pop(key, None)

    def check(self, action: Action, spec: ActionSpec) -> None:
        if action.action == "no_action":
            return
        customer, channel, now = action.customer, action.channel, action.created_at.timestamp()
        granted = None
        for scope_channel, scope_purpose, value in self.consent[customer]:
            if scope_channel in (None, channel) and scope_purpose in (None, spec.purpose):
                rank = (scope_channel is not None) * 2 + (scope_purpose is not None)
                if granted is None or rank >= granted[0]:
                    granted = (rank, value)
        allowed = granted[1] if granted else spec.purpose != "marketing"
        if not allowed:
            self.violations["consent"] += 1
        history = self.sent[customer]
        for cap in self.playbook.policies.caps:
            if spec.purpose not in cap.purposes or cap.channel not in ("*", channel):
                continue
            per = seconds(cap.per)
            used = sum(
                1
                for s in history
                if now - s.action.created_at.timestamp() < per
                and s.purpose in cap.purposes
                and (cap.channel == "*" or s.action.channel == channel)
            )
            if used >= cap.max:
                self.violations["cap"] += 1
                break
        quiet = self.playbook.policies.quiet_hours
        if quiet is not None and spec.purpose in quiet.purposes:
            zone_name = self.timezone.get(customer)
            if zone_name is None:
                if quiet.unknown_timezone == "hold":
                    self.violations["quiet_hours"] += 1  # sent without knowing local time
                zone_name = quiet.default_timezone
            zone = time_zone(zone_name) or time_zone(quiet.default_timezone) or UTC
            local = datetime.fromtimestamp(now, UTC).astimezone(zone)
            minute = local.hour * 60 + local.minute
            start, end = (int(x[:2]) * 60 + int(x[3:]) for x in (quiet.start, quiet.end))
            inside = start <= minute < end if start < end else minute >= start or minute < end
            if inside:
                self.violations["quiet_hours"] += 1
        for journey in self.open[customer].values():
            if spec.category in self.suppressors.get(journey, ()) and journey != action.journey:
                self.violations["suppression"] += 1
                break
        history.append(_Sent(action, spec.purpose, spec.category, spec.value))

    @property
    def total(self) -> int:
        return sum(self.violations.values())
