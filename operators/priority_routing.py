"""Priority-agent routing for a high-value customer stuck on one money transfer.

The seed scenario: a customer who already tried web and IVR about the same
transfer within the last hour and now opens chat has shown, by their path, that
self-service failed. Making them explain it again to a queue is the pain point;
the rule routes them straight to a priority agent and says why.
"""

from dataclasses import dataclass, field

from operators.wording import channel_list, channel_name, when
from schemas.event import Event
from state.context import VALUE_TIERS, CustomerContext, Interaction, tier_rank


@dataclass(frozen=True)
class Verdict:
    """What a rule concluded for one trigger event."""

    action: str
    eligible: bool
    score: float
    reasons: list[str]
    channel: str
    journey: str
    purpose: str
    content: dict[str, str | int | float | bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class StuckTransferRouting:
    """Route to a priority agent when a valuable customer's transfer trouble crossed channels."""

    action: str = "priority_agent"
    journey: str = "money_transfer"
    channel: str = "chat"
    trigger_types: frozenset[str] = frozenset({"chat_started"})
    required_channels: tuple[str, ...] = ("web", "ivr")
    reference_key: str = "transfer_id"
    window_seconds: float = 3600.0
    min_value_tier: str = "high"
    purpose: str = "service"
    score: float = 1.0
    expires_seconds: float = 900.0
    queue: str = "priority"
    skill: str = "payments"

    def __post_init__(self) -> None:
        if self.min_value_tier not in VALUE_TIERS:
            raise ValueError(f"min_value_tier {self.min_value_tier!r} is not one of {VALUE_TIERS}")

    def applies(self, event: Event) -> bool:
        return event.channel == self.channel and event.type in self.trigger_types

    def evaluate(self, ctx: CustomerContext, event: Event) -> Verdict:
        """Judge the trigger event against the customer's recent path.

        Call only when `applies(event)`; the context must already hold the event.
        """
        now = event.ts.timestamp()
        by_ref = self._contacts_by_reference(ctx, event, now)
        trigger_ref = event.properties.get(self.reference_key)
        ref = self._pick_reference(by_ref, now, trigger_ref)
        reasons: list[str] = []
        if ref is None:
            return self._verdict(
                False, [f"No contact about a money transfer before this {self._here()}."]
            )

        contacts = by_ref[ref]
        ref_value = ref.split("=", 1)[1]
        recent = {c.channel: c for c in contacts if now - c.ts <= self.window_seconds}
        missing = [ch for ch in self.required_channels if ch not in recent]
        minutes = int(self.window_seconds // 60)
        eligible = True
        if missing:
            eligible = False
            for ch in missing:
                older = [c for c in contacts if c.channel == ch]
                if older:
                    reasons.append(
                        f"Transfer {ref_value}: last {channel_name(ch)} contact at "
                        f"{when(older[-1].ts, now)}, outside the {minutes}-min window."
                    )
                else:
                    reasons.append(f"Transfer {ref_value}: no {channel_name(ch)} contact about it.")
        tier = ctx.value_tier
        if tier_rank(tier) < tier_rank(self.min_value_tier):
            eligible = False
            reasons.append(
                f"Value tier is {tier or 'unknown'}; priority routing is for "
                f"{self.min_value_tier} and above."
            )
        if not eligible:
            return self._verdict(False, reasons, ref_value)

        failure = next((c for c in contacts if "fail" in c.type), None)
        if failure is not None:
            origin = f"failed on {channel_name(failure.channel)} at {when(failure.ts, now)}"
        else:
            first = contacts[0]
            origin = (
                f"began with {first.type.replace('_', ' ')} on {channel_name(first.channel)} "
                f"at {when(first.ts, now)}"
            )
        tried = [recent[ch] for ch in self.required_channels]
        tried_words = " and ".join(f"{channel_name(c.channel)} at {when(c.ts, now)}" for c in tried)
        return self._verdict(
            True,
            [
                f"{tier.capitalize()}-value customer on the {self.journey.replace('_', ' ')} "  # type: ignore[union-attr]
                f"journey: transfer {ref_value} {origin}.",
                f"Tried {tried_words} about it, within the last {minutes} min.",
                f"Now opening {self._here()}: route straight to a priority agent.",
            ],
            ref_value,
            channels_tried=channel_list([c.channel for c in tried]),
        )

    def _here(self) -> str:
        return channel_name(self.channel)

    def _contacts_by_reference(
        self, ctx: CustomerContext, event: Event, now: float
    ) -> dict[str, list[Interaction]]:
        """Earlier interactions about a matter of this kind, oldest first, per reference."""
        prefix = self.reference_key + "="
        by_ref: dict[str, list[Interaction]] = {}
        trigger_id = event.event_id
        for interaction in ctx.recent:
            ref = interaction.ref
            if (
                ref is not None
                and ref.startswith(prefix)
                and interaction.ts <= now
                and interaction.event_id != trigger_id
            ):
                by_ref.setdefault(ref, []).append(interaction)
        return by_ref

    def _pick_reference(
        self, by_ref: dict[str, list[Interaction]], now: float, trigger_ref: object
    ) -> str | None:
        """The matter this chat is about: the one it names, else the most tried recently."""
        if not by_ref:
            return None
        if trigger_ref is not None:
            named = f"{self.reference_key}={trigger_ref}"
            if named in by_ref:
                return named

        def coverage(ref: str) -> tuple[int, float]:
            contacts = by_ref[ref]
            recent = {c.channel for c in contacts if now - c.ts <= self.window_seconds}
            return (sum(ch in recent for ch in self.required_channels), contacts[-1].ts)

        return max(by_ref, key=coverage)

    def _verdict(
        self,
        eligible: bool,
        reasons: list[str],
        ref_value: str | None = None,
        channels_tried: str | None = None,
    ) -> Verdict:
        content: dict[str, str | int | float | bool | None] = {}
        if eligible:
            content = {
                "queue": self.queue,
                "skill": self.skill,
                self.reference_key: ref_value,
                "channels_tried": channels_tried,
            }
        return Verdict(
            action=self.action,
            eligible=eligible,
            score=self.score if eligible else 0.0,
            reasons=reasons,
            channel=self.channel,
            journey=self.journey,
            purpose=self.purpose,
            content=content,
        )
