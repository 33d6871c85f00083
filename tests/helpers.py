"""Builders for events in tests: readable scenarios instead of JSON blobs."""

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from schemas.codec import encode
from schemas.event import Consent, Event

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
_ids = count()


def ev(
    type_: str,
    channel: str,
    *,
    minutes: float = 0.0,
    customer: str | None = "cust-1",
    anon: str | None = None,
    touchpoint: str | None = None,
    event_id: str | None = None,
    consent: Consent | None = None,
    **properties: Any,
) -> Event:
    """An event `minutes` after T0."""
    return Event(
        event_id=event_id or f"e{next(_ids)}",
        ts=T0 + timedelta(minutes=minutes),
        type=type_,
        channel=channel,
        customer_id=customer,
        anonymous_id=anon,
        touchpoint=touchpoint,
        properties=properties,
        consent=consent,
    )


def wire(event: Event) -> bytes:
    return encode(event)


def profile(tier: str, *, minutes: float = -120.0, customer: str = "cust-1") -> Event:
    """A login carrying the customer's profile (value tier, time zone, preference)."""
    return ev(
        "login",
        "app",
        minutes=minutes,
        customer=customer,
        value_tier=tier,
        lifetime_value=12000.0 if tier == "high" else 800.0,
        timezone="Europe/London",
        preferred_channel="app",
    )


def stuck_transfer(
    *,
    tier: str = "high",
    web_at: float | None = 10.0,
    ivr_at: float | None = 30.0,
    chat_at: float = 50.0,
    customer: str = "cust-1",
    transfer: str = "tx-77",
) -> list[Event]:
    """Failed app transfer → web help → IVR → chat, at the given minutes after T0."""
    events = [
        profile(tier, customer=customer),
        ev(
            "transfer_failed",
            "app",
            minutes=0,
            customer=customer,
            touchpoint="app_transfer",
            transfer_id=transfer,
            amount=2500,
        ),
    ]
    if web_at is not None:
        events.append(
            ev(
                "page_view",
                "web",
                minutes=web_at,
                customer=customer,
                touchpoint="help_transfers",
                transfer_id=transfer,
            )
        )
    if ivr_at is not None:
        events.append(
            ev(
                "ivr_call",
                "ivr",
                minutes=ivr_at,
                customer=customer,
                touchpoint="ivr_payments",
                transfer_id=transfer,
            )
        )
    events.append(
        ev("chat_started", "chat", minutes=chat_at, customer=customer, touchpoint="chat_support")
    )
    return sorted(events, key=lambda e: e.ts)
