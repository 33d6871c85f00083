"""The simulated population: who each customer is, their devices, and when they show up.

Each customer draws everything from their own `random.Random(f"{seed}:{index}")`, so a
customer never depends on another one. The population knows no session kinds: the
simulator hands each customer its mix and journeys (`Customer.plan`), and the sessions
(channels and the verticals' traffic) drive the customer through `emit`.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas.event import Consent, Event

# --------------------------------------------------------------------------- profiles

_TIERS = ("low", "medium", "high")
_TIER_WEIGHTS = (0.50, 0.35, 0.15)
_TIER_LTV = {"low": (40.0, 900.0), "medium": (900.0, 6000.0), "high": (6000.0, 80000.0)}
_TIER_ACTIVITY = {"low": 0.8, "medium": 1.0, "high": 1.3}
VERTICALS = ("telco", "banking", "auto")  # auto: a car buyer dealing with a dealer partner
_VERTICAL_WEIGHTS = (0.40, 0.40, 0.20)
_TIMEZONES = {
    "Europe/London": 0.24,
    "Europe/Berlin": 0.18,
    "Europe/Paris": 0.10,
    "Europe/Madrid": 0.08,
    "Europe/Amsterdam": 0.06,
    "Europe/Warsaw": 0.05,
    "Europe/Dublin": 0.04,
    "America/New_York": 0.12,
    "America/Chicago": 0.06,
    "America/Los_Angeles": 0.05,
    "Asia/Singapore": 0.02,
}
_CURRENCY = {"Europe/London": "GBP", "Europe/Warsaw": "PLN", "Asia/Singapore": "SGD"}
_PREFERRED = {
    "email": 0.28,
    "app": 0.22,
    "sms": 0.12,
    "push": 0.10,
    "web": 0.10,
    "chat": 0.08,
    "call_centre": 0.06,
    "store": 0.04,
}

#: Relative session intensity by local hour: quiet nights, busy evenings.
_HOURLY = (
    0.15, 0.08, 0.05, 0.04, 0.05, 0.10, 0.30, 0.60, 0.90, 1.00, 1.00, 1.00,
    1.10, 1.00, 1.00, 1.00, 1.00, 1.10, 1.20, 1.30, 1.30, 1.10, 0.70, 0.35,
)  # fmt: skip
_HOURLY_MAX = max(_HOURLY)
_HOURLY_MEAN = sum(_HOURLY) / len(_HOURLY)

#: What customers of each vertical browse, search for and are mailed about.
_PAGES = {
    "telco": ("plans", "phones", "offers", "roaming", "broadband", "sim_only"),
    "banking": ("accounts", "savings", "mortgages", "credit_cards", "loans", "offers"),
    "auto": ("models", "model_detail", "electric", "offers", "finance", "used_cars"),
}
_SEARCHES = {
    "telco": ("unlimited data", "iphone", "roaming eu", "cancel contract", "5g coverage"),
    "banking": ("mortgage rates", "transfer limit", "savings interest", "lost card", "iban"),
    "auto": ("electric suv", "range", "lease", "hybrid estate", "test drive"),
}
_CAMPAIGNS = {
    "telco": ("newsletter", "offer_upgrade", "bill_ready", "offer_roaming"),
    "banking": ("newsletter", "statement_ready", "offer_savings", "offer_credit_card"),
    "auto": ("newsletter", "brochure", "offer_finance", "launch_event"),
}

# --------------------------------------------------------------------------- customers

#: A session: what a customer does from a moment on (it queues events at or after it).
Session = Callable[["Customer", float], None]
#: A customer's regular session kinds and their cumulative weights (for `bisect`).
SessionMix = tuple[list[Session], list[float]]
#: Journeys planned up front: (session, chance); a chance of 0 still takes its place,
#: since the position numbers the journey's heap marker.
Journeys = Sequence[tuple[Session, float]]
#: A partition heap entry: (time, customer index, n, payload). n >= 0: an event, n being
#: its per-customer sequence; n < 0: a session marker, payload (customer, journey or None).
Entry = tuple[float, int, int, Any]


def _draw_profile(rng: random.Random) -> tuple[str, str, str, str]:
    """A customer's vertical, value tier, time zone and preferred channel: the first draws
    of their generator, so `customer_profile` can tell them without simulating."""
    vertical = rng.choices(VERTICALS, weights=_VERTICAL_WEIGHTS)[0]
    tier = rng.choices(_TIERS, weights=_TIER_WEIGHTS)[0]
    tz_name = weighted(rng, _TIMEZONES)
    preferred = weighted(rng, _PREFERRED)
    return vertical, tier, tz_name, preferred


def true_intent(seed: int, index: int) -> str:
    """What simulated customer `index` is really trying to do (hidden from Wayfinder)."""
    vertical = _draw_profile(random.Random(f"{seed}:{index}"))[0]
    roll = random.Random(f"{seed}:{index}:truth").random()
    if vertical == "banking":
        return "pay" if roll < 0.7 else "get_support"
    if vertical == "auto":
        return "buy" if roll < 0.85 else "get_support"
    if roll < 0.45:
        return "upgrade"
    if roll < 0.7:
        return "get_support"
    return "billing" if roll < 0.9 else "activate"


def customer_profile(seed: int, index: int) -> dict[str, str]:
    """Who simulated customer `index` is (the closed-loop world's hidden truth starts here)."""
    vertical, tier, tz_name, preferred = _draw_profile(random.Random(f"{seed}:{index}"))
    return {"vertical": vertical, "value_tier": tier, "timezone": tz_name, "preferred": preferred}


def weighted(rng: random.Random, table: dict[str, float]) -> str:
    """A key of `table`, drawn with its value as the weight."""
    return rng.choices(list(table), weights=list(table.values()))[0]


def anon_id(rng: random.Random) -> str:
    return f"anon-{rng.getrandbits(64):016x}"


class Device:
    """A browser or an installed app: an anonymous id, linked once its owner logs in."""

    __slots__ = ("anonymous_id", "channel", "identified_at")

    def __init__(self, anonymous_id: str, channel: str) -> None:
        self.anonymous_id = anonymous_id
        self.channel = channel  # "web" (a browser) or "app"
        self.identified_at: float | None = None  # event time of its earliest identify

    def linked(self, t: float) -> bool:
        return self.identified_at is not None and self.identified_at <= t


_CUSTOMER_PREFIX = "cust-"


def customer_id(index: int) -> str:
    """The id of the simulated customer with this index (`cust-000123`)."""
    return f"{_CUSTOMER_PREFIX}{index:06d}"


def directory(customers: int, pseudonym_of: Callable[[str], str]) -> dict[str, int]:
    """The simulated customers' indexes by pseudonym: how the lab's channels know who an
    action is for (a bank's channels resolve the pseudonym with the key vault, or know
    their customers' pseudonyms from their own records)."""
    return {pseudonym_of(customer_id(i)): i for i in range(customers)}


def customer_index(customer: str) -> int | None:
    """The index of a simulated customer from their id; None for anyone else."""
    digits = customer.removeprefix(_CUSTOMER_PREFIX)
    if digits == customer or not digits.isdigit():
        return None
    return int(digits)


class Customer:
    """One simulated customer: profile, devices and RNG; queues its events on the heap.

    Its session kinds come from the simulator (`plan`), before its first session runs.
    """

    __slots__ = (
        "app",
        "campaigns",
        "currency",
        "customer_id",
        "devices",
        "end",
        "heap",
        "id_prefix",
        "index",
        "kinds",
        "kinds_cum",
        "n",
        "opted_in",
        "pages",
        "partner_id",
        "preferred",
        "profile",
        "rate",
        "requests",
        "revoked",
        "rng",
        "searches",
        "seed",
        "transfers",
        "true_intent",
        "tz",
        "vertical",
        "web",
    )

    def __init__(self, seed: int, index: int, end: float, heap: list[Entry]) -> None:
        rng = self.rng = random.Random(f"{seed}:{index}")
        self.index, self.end, self.heap = index, end, heap
        self.id_prefix = f"sim-{seed}-{index}-"
        self.n = 0
        self.customer_id = customer_id(index)
        vertical, tier, tz_name, preferred = _draw_profile(rng)
        self.vertical, self.preferred = vertical, preferred
        lo, hi = _TIER_LTV[tier]
        self.profile = {
            "value_tier": tier,
            "lifetime_value": round(lo * (hi / lo) ** rng.random(), 2),  # log-uniform
            "timezone": tz_name,
            "preferred_channel": preferred,
            "vertical": vertical,
        }
        # Own generators, so these facts leave every other draw as it was.
        self.opted_in = random.Random(f"{seed}:{index}:opt-in").random() < 0.6
        self.seed = seed
        self.true_intent = true_intent(seed, index)
        self.requests = random.Random(f"{seed}:{index}:requests")
        if vertical == "telco":
            billing = random.Random(f"{seed}:{index}:billing")
            self.profile["paper_bill"] = billing.random() < 0.45
            self.profile["plan"] = billing.choice(("sim_only", "contract", "family"))
        self.tz = ZoneInfo(tz_name)
        self.currency = _CURRENCY.get(tz_name, "USD" if tz_name.startswith("America") else "EUR")
        self.partner_id = f"dealer-{rng.randint(1, 40):03d}" if vertical == "auto" else None
        self.pages, self.searches = _PAGES[vertical], _SEARCHES[vertical]
        self.campaigns = _CAMPAIGNS[vertical]
        self.transfers = 0
        self.revoked: dict[str, float] = {}  # marketing channel -> when it was revoked
        self.devices = _devices(rng, vertical)
        by_channel = {d.channel: d for d in reversed(self.devices)}  # the first one wins
        self.app, self.web = by_channel.get("app"), by_channel.get("web")
        # Sessions per second of event time, before the daily rhythm thins them out.
        per_day = min(30.0, max(1.0, rng.lognormvariate(1.9, 0.5))) * _TIER_ACTIVITY[tier]
        self.rate = per_day * _HOURLY_MAX / (86400.0 * _HOURLY_MEAN)

    # ----------------------------------------------------------------- sessions

    def plan(self, start: float, mix: SessionMix, journeys: Journeys, wanted: Journeys) -> None:
        """Take the session mix, queue the first regular session and the planned journeys.

        Journeys are planned up front so that their share is controlled; `wanted` are
        those the customer's true intent leads to (drawn from their own generator).
        """
        self.kinds, self.kinds_cum = mix
        rng, heap, index = self.rng, self.heap, self.index
        first = self.next_session(start)
        if first < self.end:
            heapq.heappush(heap, (first, index, -1, (self, None)))
        for k, (session, p) in enumerate(journeys):
            if p and rng.random() < p:
                heapq.heappush(heap, (self.rhythm_time(start), index, -2 - k, (self, session)))
        # What the customer is really after shows in what they do (the hidden truth the
        # closed-loop evaluation knows and Wayfinder has to learn).
        wants = random.Random(f"{self.seed}:{index}:wants")
        for k, (session, p) in enumerate(wanted):
            if wants.random() < p:
                at = self.rhythm_time(start)
                heapq.heappush(heap, (at, index, -2 - len(journeys) - k, (self, session)))

    def draw_session(self) -> Session:
        """The kind of the customer's next regular session, by the weights of their mix."""
        cumulative = self.kinds_cum
        return self.kinds[bisect(cumulative, self.rng.random() * cumulative[-1])]

    # ----------------------------------------------------------------- time

    def local_hour(self, t: float) -> int:
        return datetime.fromtimestamp(t, self.tz).hour

    def next_session(self, t: float) -> float:
        """Next session start after t (Poisson, thinned by the local daily rhythm)."""
        rng, rate, end = self.rng, self.rate, self.end
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                return end
            if rng.random() * _HOURLY_MAX < _HOURLY[self.local_hour(t)]:
                return round(t, 3)

    def rhythm_time(self, start: float) -> float:
        """A random moment of the span, weighted by the local daily rhythm."""
        rng = self.rng
        while True:
            t = start + rng.random() * (self.end - start)
            if rng.random() * _HOURLY_MAX < _HOURLY[self.local_hour(t)]:
                return round(t, 3)

    def after(self, t: float, lo: float, hi: float) -> float:
        """t plus a random gap of lo..hi seconds, on the millisecond grid of `ts`."""
        return round(t + self.rng.uniform(lo, hi), 3)

    # ----------------------------------------------------------------- events

    def emit(
        self,
        t: float,
        kind: str,
        channel: str,
        touchpoint: str | None = None,
        props: dict[str, Any] | None = None,
        *,
        device: Device | None = None,
        known: bool = True,
        partner_id: str | None = None,
        text: str | None = None,
        score: float | None = None,
        consent: Consent | None = None,
        request_id: str | None = None,
    ) -> None:
        """Queue one event; events past the simulated span are dropped."""
        if t >= self.end:
            return
        n = self.n
        self.n = n + 1
        event = Event(
            event_id=f"{self.id_prefix}{n}",
            ts=datetime.fromtimestamp(t, UTC),
            type=kind,
            channel=channel,
            customer_id=self.customer_id if known else None,
            anonymous_id=device.anonymous_id if device is not None else None,
            touchpoint=touchpoint,
            partner_id=partner_id,
            properties=props or {},
            text=text,
            score=score,
            consent=consent,
            request_id=request_id,
        )
        heapq.heappush(self.heap, (t, self.index, n, event))

    def identify(self, t: float, device: Device) -> None:
        """Link a device to the customer: the stitch point for its earlier anonymous events."""
        self.emit(t, "identify", device.channel, "login", self.profile, device=device)
        if self.opted_in:
            # Opted in to marketing when they signed up; recorded at their first login here.
            self.opted_in = False
            grant = Consent(granted=True, purpose="marketing")
            self.emit(t, "consent", device.channel, "login", consent=grant, device=device)
        if device.identified_at is None or t < device.identified_at:
            device.identified_at = t

    def marketing_allowed(self, channel: str, t: float) -> bool:
        revoked = self.revoked.get(channel)
        return revoked is None or t < revoked


def _devices(rng: random.Random, vertical: str) -> list[Device]:
    """1-3 devices; banking customers always have the app and a browser."""
    count = rng.choices((1, 2, 3), weights=(0.25, 0.5, 0.25))[0]
    if vertical == "banking":
        count, first = max(count, 2), "app"
    elif vertical == "auto":
        first = "web" if rng.random() < 0.7 else "app"
    else:
        first = "app" if rng.random() < 0.6 else "web"
    kinds = [first, "web" if first == "app" else "app", "web"][:count]
    return [Device(anon_id(rng), kind) for kind in kinds]
