"""Contact policies, always enforced, and the channel, chosen last.

Consent, cooldown per action, suppression between journey categories,
co-selling with partners, fatigue after ignored actions, quiet hours in the
customer's time zone, frequency caps per channel and overall, and a
deterministic holdout. Contact pressure is read from the customer's own action
log, so it is exact at the next event: no lagging counters, no double sends.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from hashlib import blake2b
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from operators.playbook import ActionSpec, CompiledPlaybook, JourneySpec
from operators.wording import ago, channel_list, channel_name, span
from schemas.decision import SuppressionPolicy
from schemas.playbook import seconds
from state.context import RESPONSES, CustomerContext, JourneyInstance, consent_allows


class Refusal(NamedTuple):
    """Why the policies refuse an action: which policy (a bounded name, for the
    suppression counts) and in words (for the decision's reasons)."""

    policy: SuppressionPolicy
    reason: str


@dataclass(frozen=True)
class Placement:
    """Where an allowed action goes, and how that was chosen (in words)."""

    channel: str
    partner_id: str | None
    how: str


@lru_cache(maxsize=512)
def time_zone(name: str) -> ZoneInfo | None:
    """The zone a customer's `timezone` names, or None for anything else they may send
    (an unknown name, a folder of zones such as "Europe", a path)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class ContactPolicies:
    """The playbook's contact policies for one decision at a time."""

    def __init__(self, playbook: CompiledPlaybook) -> None:
        self.playbook = playbook
        policies = playbook.policies
        self.holdout_share = policies.holdout_share
        self._caps = [(cap, seconds(cap.per)) for cap in policies.caps]
        quiet = policies.quiet_hours
        self._quiet = (
            None
            if quiet is None
            else (_minutes(quiet.start), _minutes(quiet.end), frozenset(quiet.purposes), quiet)
        )
        fatigue = policies.fatigue
        self._fatigue = (
            None
            if fatigue is None
            else (fatigue.ignored, seconds(fatigue.within), seconds(fatigue.pause), fatigue)
        )
        self.memory = {action.name: self._memory_s(action) for action in playbook.actions}

    def _memory_s(self, action: ActionSpec) -> float:
        """How long a sent action still counts: its cooldown, the caps and fatigue of its
        purpose, and the attribution window in which its outcome is credited."""
        spans = [seconds(self.playbook.policies.attribution)]
        if action.cooldown_s is not None:
            spans.append(action.cooldown_s)
        spans += [per for cap, per in self._caps if action.purpose in cap.purposes]
        if self._fatigue is not None and action.purpose in self._fatigue[3].purposes:
            spans.append(self._fatigue[1])
        return max(spans)

    def in_holdout(self, customer: str) -> bool:
        """A stable share of customers receives nothing, so uplift can be measured."""
        if self.holdout_share <= 0:
            return False
        digest = blake2b(customer.encode(), digest_size=8, person=b"wf-holdout").digest()
        return int.from_bytes(digest, "big") / 2**64 < self.holdout_share

    def place(
        self,
        ctx: CustomerContext,
        action: ActionSpec,
        now: float,
        trigger_channel: str | None,
        journey: JourneySpec | None,
        inst: JourneyInstance | None,
    ) -> tuple[Placement | None, Refusal | None]:
        """(where it may go, None) if the policies allow the action; else (None, why not)."""
        sent = ctx.actions
        if action.cooldown_s is not None:
            last = next((s.at for s in reversed(sent) if s.action == action.name), None)
            if last is not None and now - last < action.cooldown_s:
                cooldown = span(action.cooldown_s)
                return None, Refusal(
                    "cooldown", f"Not sent: already sent {ago(now - last)}; cooldown {cooldown}."
                )
        for other in ctx.journeys:
            if other is inst:
                continue
            other_spec = self.playbook.journey(other.journey)
            if action.category in other_spec.suppresses:
                return None, Refusal(
                    "journey_suppression",
                    f"Not sent: the open {other_spec.label} journey ({other_spec.category}) "
                    f"suppresses {action.category} actions.",
                )
        partner_id = None
        if action.owner == "partner":
            # Only the partner leading this journey; never one met on another journey.
            partner_id = inst.owner if inst else None
        elif (
            inst is not None and inst.owner is not None and action.category in {"sales", "partner"}
        ):
            label = journey.label if journey else ""
            return None, Refusal(
                "co_selling",
                f"Not sent: partner {inst.owner} leads this {label} journey; the direct team "
                "stands back (co-selling: one owner per journey).",
            )
        tired = self._fatigued(ctx, action, now)
        if tired:
            return None, Refusal("fatigue", tired)
        quiet = self._quiet_now(ctx, action, now)
        if quiet:
            return None, Refusal("quiet_hours", quiet)

        candidates = list(action.channels)
        if not ctx.known:
            # Nobody to address yet: an anonymous visitor is answered where they are.
            if action.owner == "partner" or trigger_channel not in candidates:
                where = channel_name(trigger_channel or "their current channel")
                return None, Refusal(
                    "anonymous",
                    f"Not sent: anonymous visitor, reachable only on {where} until they log in.",
                )
            candidates = [trigger_channel] if trigger_channel is not None else []
        if action.reply_on_trigger_channel:
            candidates = [c for c in candidates if c == trigger_channel]
        consented = [c for c in candidates if consent_allows(ctx, c, action.purpose)]
        if not consented:
            where = channel_list(candidates) or "any channel"
            return None, Refusal("consent", f"Not sent: no {action.purpose} consent on {where}.")
        open_channels, capped = self._under_caps(ctx, action, consented, now)
        if not open_channels:
            return None, Refusal("frequency_cap", f"Not sent: {capped[0]}.")
        channel, how = self._choose(ctx, open_channels, candidates, consented, capped, action)
        return Placement(channel, partner_id, how), None

    # ------------------------------------------------------------------ policies
    def _fatigued(self, ctx: CustomerContext, action: ActionSpec, now: float) -> str | None:
        if self._fatigue is None:
            return None
        ignored, within, pause, fatigue = self._fatigue
        if action.purpose not in fatigue.purposes:
            return None
        streak: list[float] = []
        for sent in reversed(ctx.actions):
            if sent.purpose not in fatigue.purposes or now - sent.at > within:
                continue
            if sent.outcome in RESPONSES:
                break
            if now - sent.at > 3600:  # given an hour to respond before it counts as ignored
                streak.append(sent.at)
        if len(streak) >= ignored and now - streak[0] < pause:
            return (
                f"Not sent: the last {len(streak)} {action.purpose} actions went unanswered; "
                f"paused for {span(pause)} from the last (fatigue)."
            )
        return None

    def _quiet_now(self, ctx: CustomerContext, action: ActionSpec, now: float) -> str | None:
        if self._quiet is None:
            return None
        start, end, purposes, quiet = self._quiet
        if action.purpose not in purposes:
            return None
        unknown = ctx.timezone is None or time_zone(ctx.timezone) is None
        if unknown and quiet.unknown_timezone == "hold":
            return (
                "Not sent: the customer's time zone is unknown, so quiet hours cannot be respected."
            )
        zone_name = ctx.timezone or quiet.default_timezone
        zone = time_zone(zone_name) or time_zone(quiet.default_timezone) or UTC
        local = datetime.fromtimestamp(now, zone)
        minute = local.hour * 60 + local.minute
        inside = start <= minute < end if start < end else minute >= start or minute < end
        if inside:
            return (
                f"Not sent: quiet hours {quiet.start}-{quiet.end} in {zone_name} "
                f"(it is {local:%H:%M} there)."
            )
        return None

    def _under_caps(
        self, ctx: CustomerContext, action: ActionSpec, channels: list[str], now: float
    ) -> tuple[list[str], list[str]]:
        """The channels still under every frequency cap, and the caps that closed the others."""
        if not self._caps:
            return channels, []
        open_channels, capped = [], []
        for channel in channels:
            closed = None
            for cap, per in self._caps:
                if action.purpose not in cap.purposes or cap.channel not in ("*", channel):
                    continue
                used = sum(
                    1
                    for s in ctx.actions
                    if now - s.at < per
                    and s.purpose in cap.purposes
                    and (cap.channel == "*" or s.channel == channel)
                )
                if used >= cap.max:
                    where = "in all" if cap.channel == "*" else f"on {channel_name(channel)}"
                    closed = (
                        f"frequency cap of {cap.max} {action.purpose} actions {where} "
                        f"per {span(per)} reached"
                    )
                    break
            if closed is None:
                open_channels.append(channel)
            else:
                capped.append(closed)
        return open_channels, capped

    @staticmethod
    def _choose(
        ctx: CustomerContext,
        open_channels: list[str],
        candidates: list[str],
        consented: list[str],
        capped: list[str],
        action: ActionSpec,
    ) -> tuple[str, str]:
        """Preferred first, then responsive (answered before), then the one used last."""
        notes = []
        refused = [c for c in candidates if c not in consented]
        if refused:
            notes.append(f"{channel_list(refused)}: no {action.purpose} consent")
        if capped:
            notes.append(capped[0])
        note = f" ({'; '.join(notes)})" if notes else ""
        preferred = ctx.preferred_channel
        if preferred is not None and preferred in open_channels:
            return preferred, f", the customer's preferred channel{note}"
        answered: dict[str, int] = {}
        for sent in ctx.actions:
            if sent.outcome in RESPONSES and sent.channel in open_channels:
                answered[sent.channel] = answered.get(sent.channel, 0) + 1
        if answered:
            best = max(open_channels, key=lambda c: (answered.get(c, 0), -open_channels.index(c)))
            return best, f", where the customer responds{note}"
        used = [(ctx.channels[c].last_seen, c) for c in open_channels if c in ctx.channels]
        if used:
            return max(used)[1], f", the channel the customer used last{note}"
        return open_channels[0], note
