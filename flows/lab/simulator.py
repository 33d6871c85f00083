"""Seeded traffic simulator: believable cross-channel customer traffic for demos and tests.

Pure Python (no bytewax import): the bytewax source wraps `simulate_partition`.

Each customer is simulated on its own from `random.Random(f"{seed}:{index}")`, so a
partition's output never depends on another partition and the same config always gives
byte-identical records. Generation is lazy: a partition keeps one heap holding, per
customer, the marker of its next session and the events of sessions already started,
so memory grows with the number of customers, never with the number of events.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from schemas.codec import DEFAULT_MAX_EVENT_BYTES, encode
from schemas.event import Consent, Event

__all__ = [
    "BAD_INPUT_KINDS",
    "CHANNELS",
    "TRANSFER_VARIANTS",
    "SimulatedRecord",
    "SimulationConfig",
    "simulate",
    "simulate_partition",
]

#: Every channel the simulator produces (all of them appear in a default run).
CHANNELS = ("web", "app", "email", "sms", "push", "ivr", "call_centre", "chat", "store", "partner")

#: (event time as epoch seconds, raw wire bytes)
SimulatedRecord = tuple[float, bytes]

_DEFAULT_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; `partitions` is fixed so the output never depends on workers."""

    customers: int = 3000
    seed: int = 7
    hours: float = 72.0  # simulated span of event time
    start: datetime = _DEFAULT_START
    bad_input_share: float = 0.003  # share of records that are bad input
    partitions: int = 4

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError("customers must be >= 0")
        if self.hours <= 0:
            raise ValueError("hours must be > 0")
        if self.start.tzinfo is None:
            raise ValueError("start needs a time zone (a naive datetime is ambiguous)")
        if not 0.0 <= self.bad_input_share < 1.0:
            raise ValueError("bad_input_share must be in [0, 1)")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")


# --------------------------------------------------------------------------- profiles

_TIERS = ("low", "medium", "high")
_TIER_WEIGHTS = (0.50, 0.35, 0.15)
_TIER_LTV = {"low": (40.0, 900.0), "medium": (900.0, 6000.0), "high": (6000.0, 80000.0)}
_TIER_ACTIVITY = {"low": 0.8, "medium": 1.0, "high": 1.3}
_VERTICALS = ("telco", "banking", "auto")  # auto: a car buyer dealing with a dealer partner
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
_MODELS = ("aria_ev", "aria_hybrid", "corsa_line", "vento_suv", "vento_ev")
_TRIMS = ("base", "sport", "lux")
_PHONES = ("pixelon_9", "nova_x", "nova_x_pro", "lumen_s", "lumen_s_plus")

#: What customers write in chats and surveys (free text for sentiment).
_TEXT = {
    "transfer": (
        "My transfer failed and I don't know if the money left my account",
        "I tried to send money three times now, it keeps failing",
        "The app says the transfer failed, something about the payee check",
        "I need this payment to reach my landlord today",
        "Why does my transfer keep getting declined?",
        "Your help page didn't explain anything and I already called",
        "Is the money gone? The app only shows an error",
        "This is really frustrating, I have been at this for an hour",
    ),
    "bill": (
        "My bill is much higher than last month",
        "Why was I charged for roaming?",
        "I didn't order this add-on",
        "Can you explain the extra charge on my bill?",
    ),
    "network": (
        "No signal at home since yesterday",
        "Mobile data keeps dropping all the time",
        "Calls fail in my area, is there an outage?",
    ),
    "card": (
        "My card was declined at the shop",
        "I think my card was stolen",
        "My card is broken, I need a new one",
    ),
    "auto": (
        "Is the electric model available for a test drive this week?",
        "What finance options do you have?",
        "Can I trade in my current car?",
    ),
    "thanks": (
        "Ok, thanks for sorting it",
        "Great, it went through now, thank you",
        "Thanks, that was quick",
        "Perfect, thanks for your help",
    ),
    "survey_good": (
        "Quick and helpful",
        "Friendly agent, solved first time",
        "Easy, thanks",
        "Very happy with the service",
    ),
    "survey_bad": (
        "Took far too long",
        "Had to explain my problem three times",
        "Still not resolved",
        "Nobody called me back",
    ),
}

_Session = Callable[["_Customer", float], None]
#: A partition heap entry: (time, customer index, n, payload). n >= 0: an event, n being
#: its per-customer sequence; n < 0: a session marker, payload (customer, special or None).
_Entry = tuple[float, int, int, Any]


#: Pages that ask for the next best content when a known customer opens them.
_REQUEST_PAGES = frozenset({"home", "app_home", "offers", "phones", "plans", "accounts"})
_REQUEST_SHARE = 0.5


def _draw_profile(rng: random.Random) -> tuple[str, str, str, str]:
    """A customer's vertical, value tier, time zone and preferred channel: the first draws
    of their generator, so `customer_profile` can tell them without simulating."""
    vertical = rng.choices(_VERTICALS, weights=_VERTICAL_WEIGHTS)[0]
    tier = rng.choices(_TIERS, weights=_TIER_WEIGHTS)[0]
    tz_name = _weighted(rng, _TIMEZONES)
    preferred = _weighted(rng, _PREFERRED)
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


def _weighted(rng: random.Random, table: dict[str, float]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


def _anon_id(rng: random.Random) -> str:
    return f"anon-{rng.getrandbits(64):016x}"


class _Device:
    """A browser or an installed app: an anonymous id, linked once its owner logs in."""

    __slots__ = ("anonymous_id", "channel", "identified_at")

    def __init__(self, anonymous_id: str, channel: str) -> None:
        self.anonymous_id = anonymous_id
        self.channel = channel  # "web" (a browser) or "app"
        self.identified_at: float | None = None  # event time of its earliest identify

    def linked(self, t: float) -> bool:
        return self.identified_at is not None and self.identified_at <= t


class _Customer:
    """One simulated customer: profile, devices and RNG; queues its events on the heap."""

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

    def __init__(
        self, config: SimulationConfig, index: int, start: float, end: float, heap: list[_Entry]
    ) -> None:
        rng = self.rng = random.Random(f"{config.seed}:{index}")
        self.index, self.end, self.heap = index, end, heap
        self.id_prefix = f"sim-{config.seed}-{index}-"
        self.n = 0
        self.customer_id = f"cust-{index:06d}"
        vertical, tier, tz_name, preferred = _draw_profile(rng)
        self.vertical = vertical
        lo, hi = _TIER_LTV[tier]
        self.profile = {
            "value_tier": tier,
            "lifetime_value": round(lo * (hi / lo) ** rng.random(), 2),  # log-uniform
            "timezone": tz_name,
            "preferred_channel": preferred,
            "vertical": vertical,
        }
        # Own generators, so these facts leave every other draw as it was.
        self.opted_in = random.Random(f"{config.seed}:{index}:opt-in").random() < 0.6
        self.seed = config.seed
        self.true_intent = true_intent(config.seed, index)
        self.requests = random.Random(f"{config.seed}:{index}:requests")
        if vertical == "telco":
            billing = random.Random(f"{config.seed}:{index}:billing")
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
        self.kinds, self.kinds_cum = _session_mix(vertical, preferred, self.app is not None)
        self._plan(start)

    def _plan(self, start: float) -> None:
        """Queue the first regular session and the once-in-a-while journeys.

        Special journeys are planned up front so that their share is controlled.
        """
        rng, heap, index = self.rng, self.heap, self.index
        first = self.next_session(start)
        if first < self.end:
            heapq.heappush(heap, (first, index, -1, (self, None)))
        specials = [
            (_transfer_trouble, 0.32 if self.vertical == "banking" else 0.0),
            (_transfer_trouble, 0.04 if self.vertical == "banking" else 0.0),
            (_card_problem, 0.06 if self.vertical == "banking" else 0.0),
            (_phone_upgrade, 0.14 if self.vertical == "telco" else 0.0),
            (_bill_shock, 0.10 if self.vertical == "telco" else 0.0),
            (_test_drive, 0.30 if self.vertical == "auto" else 0.0),
            (_consent_change, 0.05),
            (_visitor, 0.08),  # someone browsing anonymously who never logs in
            (_visitor, 0.08),
        ]
        for k, (session, p) in enumerate(specials):
            if p and rng.random() < p:
                heapq.heappush(heap, (self.rhythm_time(start), index, -2 - k, (self, session)))
        # What the customer is really after shows in what they do (the hidden truth the
        # closed-loop evaluation knows and Wayfinder has to learn). Its own generator.
        wants = random.Random(f"{self.seed}:{index}:wants")
        intent_sessions = _INTENT_SESSIONS.get((self.vertical, self.true_intent), ())
        for k, (session, p) in enumerate(intent_sessions):
            if wants.random() < p:
                at = self.rhythm_time(start)
                heapq.heappush(heap, (at, index, -2 - len(specials) - k, (self, session)))

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
        device: _Device | None = None,
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

    def identify(self, t: float, device: _Device) -> None:
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


def _devices(rng: random.Random, vertical: str) -> list[_Device]:
    """1-3 devices; banking customers always have the app and a browser."""
    count = rng.choices((1, 2, 3), weights=(0.25, 0.5, 0.25))[0]
    if vertical == "banking":
        count, first = max(count, 2), "app"
    elif vertical == "auto":
        first = "web" if rng.random() < 0.7 else "app"
    else:
        first = "app" if rng.random() < 0.6 else "web"
    kinds = [first, "web" if first == "app" else "app", "web"][:count]
    return [_Device(_anon_id(rng), kind) for kind in kinds]


class _Visit:
    """A web or app visit on one device, by a known customer or still anonymous."""

    __slots__ = ("channel", "customer", "device", "known")

    def __init__(self, customer: _Customer, device: _Device, known: bool) -> None:
        self.customer, self.device, self.known = customer, device, known
        self.channel = device.channel

    def emit(self, t: float, kind: str, touchpoint: str, props: dict | None = None) -> None:
        customer = self.customer
        customer.emit(
            t, kind, self.channel, touchpoint, props, device=self.device, known=self.known
        )
        if (
            self.known
            and touchpoint in _REQUEST_PAGES
            and customer.requests.random() < _REQUEST_SHARE
        ):
            # The page asks Wayfinder what to show this customer, right now.
            customer.emit(
                t + 0.2,
                "decision_request",
                self.channel,
                touchpoint,
                device=self.device,
                request_id=f"req-{customer.index}-{customer.n}",
            )

    def browse(self, t: float, pages: int) -> float:
        c = self.customer
        for _ in range(pages):
            t = c.after(t, 10, 120)
            if c.rng.random() < 0.15:
                self.emit(t, "search", "search", {"query": c.rng.choice(c.searches)})
            else:
                self.emit(t, "page_view", c.rng.choice(c.pages))
        return t


# --------------------------------------------------------------------------- building blocks


def _open(c: _Customer, t: float, channel: str, login_p: float = 0.85) -> tuple[float, _Visit]:
    """Start a web or app visit: anonymous until the visitor logs in, if ever.

    A device's first visit always starts anonymously, so stitching has work to do:
    a few anonymous events, then `identify` (both ids, the profile), then known events.
    """
    rng = c.rng
    device = (c.app if channel == "app" else c.web) or c.devices[0]
    linked = device.linked(t)
    visit = _Visit(c, device, known=False)
    kind, home = ("app_open", "app_home") if device.channel == "app" else ("page_view", "home")
    if linked and (device.channel == "app" or rng.random() < 0.4):  # a remembered login
        visit.known = True
        visit.emit(t, kind, home)
        return t, visit
    visit.emit(t, kind, home)
    t = visit.browse(t, rng.randint(0, 3))
    if rng.random() >= login_p:
        return t, visit
    t = c.after(t, 10, 90)
    if linked:
        c.emit(t, "login", device.channel, "login", device=device)
    else:
        c.identify(t, device)
    visit.known = True
    return t, visit


def _chat(c: _Customer, t: float, topic: str, ref: dict | None = None, happy: bool = True) -> float:
    """A chat: the opening, a few customer messages (text for sentiment), the close."""
    rng = c.rng
    props = {**(ref or {}), "topic": topic}
    c.emit(t, "chat_started", "chat", "chat_support", props)
    for _ in range(rng.randint(1, 3)):
        t = c.after(t, 20, 150)
        c.emit(t, "chat_message", "chat", "chat_support", props, text=rng.choice(_TEXT[topic]))
    if happy and rng.random() < 0.7:
        t = c.after(t, 30, 240)
        c.emit(t, "chat_message", "chat", "chat_support", props, text=rng.choice(_TEXT["thanks"]))
    t = c.after(t, 10, 60)
    c.emit(t, "chat_ended", "chat", "chat_support", {**props, "resolved": happy})
    return t


def _call(c: _Customer, t: float, queue: str, topic: str, ref: dict | None = None) -> float:
    duration = round(c.rng.uniform(120, 1200))
    props = {**(ref or {}), "topic": topic}
    c.emit(t, "call_started", "call_centre", queue, props)
    t = round(t + duration, 3)
    c.emit(t, "call_ended", "call_centre", queue, {**props, "duration_s": duration})
    return t


def _ivr(c: _Customer, t: float, menu: str, ref: dict | None = None) -> float:
    duration = round(c.rng.uniform(40, 360))
    c.emit(t, "ivr_call", "ivr", menu, {**(ref or {}), "duration_s": duration})
    return round(t + duration, 3)


def _survey(c: _Customer, t: float, about: str, happy: bool) -> None:
    """Sometimes a survey follows an interaction; its score leans on how it went."""
    rng = c.rng
    if rng.random() >= 0.3:
        return
    t = c.after(t, 600, 7200)
    channel = "sms" if rng.random() < 0.4 else "email"
    score = rng.choice((7, 8, 9, 9, 10, 10)) if happy else rng.choice((0, 2, 3, 4, 5, 6, 6, 7))
    text = None
    if rng.random() < 0.4:
        text = rng.choice(_TEXT["survey_good" if score >= 7 else "survey_bad"])
    c.emit(t, "survey_response", channel, "survey_nps", {"about": about}, score=score, text=text)


# --------------------------------------------------------------------------- common sessions


def _email(c: _Customer, t: float) -> None:
    rng = c.rng
    if not c.marketing_allowed("email", t):
        return
    campaign = rng.choice(c.campaigns)
    props = {"campaign": campaign}
    c.emit(t, "email_opened", "email", f"email_{campaign}", props)
    if rng.random() < 0.3:
        t = c.after(t, 5, 120)
        c.emit(t, "email_clicked", "email", f"email_{campaign}", props)
        if rng.random() < 0.7:
            t, visit = _open(c, c.after(t, 2, 20), "web", login_p=0.5)
            visit.browse(t, rng.randint(1, 3))


def _sms(c: _Customer, t: float) -> None:
    rng = c.rng
    topic = rng.choice(("otp", "reminder", "offer", "delivery"))
    if topic == "offer" and not c.marketing_allowed("sms", t):
        return
    c.emit(t, "sms_received", "sms", f"sms_{topic}", {"topic": topic})
    if topic == "offer" and rng.random() < 0.15:
        t, visit = _open(c, c.after(t, 30, 900), "app")
        visit.browse(t, rng.randint(1, 2))


def _push(c: _Customer, t: float) -> None:
    """Push needs an app the customer has logged into; otherwise it is an email."""
    app = c.app
    if app is None or not app.linked(t) or not c.marketing_allowed("push", t):
        _email(c, t)
        return
    topic = c.rng.choice(("offer", "alert", "reminder"))
    c.emit(t, "push_opened", "push", f"push_{topic}", {"topic": topic}, device=app)
    visit = _Visit(c, app, known=True)
    t = c.after(t, 2, 20)
    visit.emit(t, "app_open", "app_home")
    visit.browse(t, c.rng.randint(0, 3))


def _consent_change(c: _Customer, t: float) -> None:
    """Grant or revoke marketing on one channel, from wherever customers do that."""
    rng = c.rng
    channel = rng.choice(("email", "sms", "push"))
    granted = rng.random() < 0.35
    if not granted and channel == "email" and rng.random() < 0.6:
        source, touchpoint = "email", "email_unsubscribe"
    elif not granted and channel == "sms" and rng.random() < 0.6:
        source, touchpoint = "sms", "sms_stop"
    elif channel == "push" and c.app is not None:
        source, touchpoint = "app", "app_settings"
    else:
        source, touchpoint = "web", "preference_centre"
    consent = Consent(granted=granted, channel=channel, purpose="marketing")
    c.emit(t, "consent", source, touchpoint, consent=consent)
    if granted:
        c.revoked.pop(channel, None)
    else:
        c.revoked[channel] = t


def _visitor(c: _Customer, t: float) -> None:
    """A prospect browsing anonymously (a fresh anonymous id) who never logs in."""
    visit = _Visit(c, _Device(_anon_id(c.rng), "web"), known=False)
    visit.emit(t, "page_view", "home")
    visit.browse(t, c.rng.randint(0, 4))


def _digital(c: _Customer, t: float) -> None:
    """A plain visit on the customer's own web or app."""
    t, visit = _open(c, t, "app" if c.rng.random() < 0.55 else "web")
    visit.browse(t, c.rng.randint(1, 4))


# --------------------------------------------------------------------------- telco


def _telco_bill(c: _Customer, t: float) -> None:
    rng = c.rng
    t, visit = _open(c, t, "web" if rng.random() < 0.5 else "app", login_p=0.95)
    if not visit.known:
        return
    bill = {"amount": round(rng.uniform(15, 95), 2), "currency": c.currency}
    t = c.after(t, 5, 40)
    visit.emit(t, "bill_viewed", "bill_online" if visit.channel == "web" else "bill_app", bill)
    if rng.random() < 0.15:
        visit.emit(c.after(t, 30, 120), "purchase", "bill_pay", {**bill, "product": "bill"})


def _bill_shock(c: _Customer, t: float) -> None:
    """An unexpectedly high bill: bill page, IVR, then an agent or a chat, about one bill."""
    rng = c.rng
    t, visit = _open(c, t, "app", login_p=1.0)
    ref = {"bill_id": f"bill-{c.index:06d}-03"}
    bill = {**ref, "amount": round(rng.uniform(90, 400), 2), "currency": c.currency}
    t = c.after(t, 5, 30)
    touchpoint = "bill_online" if visit.channel == "web" else "bill_app"
    visit.emit(t, "bill_viewed", touchpoint, {**bill, "change_pct": rng.randint(40, 250)})
    t = _ivr(c, c.after(t, 120, 1800), "ivr_billing", ref)
    happy = rng.random() < 0.6
    if rng.random() < 0.6:
        t = _call(c, c.after(t, 5, 60), "cc_billing", "bill", ref)
    else:
        t = _chat(c, c.after(t, 60, 900), "bill", ref, happy=happy)
    _survey(c, t, "billing", happy)


def _telco_support(c: _Customer, t: float) -> None:
    rng = c.rng
    t, visit = _open(c, t, "app")
    t = c.after(t, 10, 60)
    visit.emit(t, "page_view", "help_network")
    if not visit.known or rng.random() < 0.4:
        return
    happy = rng.random() < 0.65
    if rng.random() < 0.5:
        t = _chat(c, c.after(t, 30, 600), "network", happy=happy)
    else:
        t = _ivr(c, c.after(t, 60, 900), "ivr_tech_support")
        t = _call(c, c.after(t, 5, 60), "cc_tech", "network")
    _survey(c, t, "network", happy)


def _telco_usage(c: _Customer, t: float) -> None:
    t, visit = _open(c, t, "app")
    if not visit.known:
        return
    t = c.after(t, 5, 40)
    visit.emit(t, "page_view", "usage")
    if c.rng.random() < 0.12:
        topup = {"product": "data_boost_5gb", "amount": 5.0, "currency": c.currency}
        visit.emit(c.after(t, 20, 120), "purchase", "data_topup", topup)


def _phone_upgrade(c: _Customer, t: float) -> None:
    """Research, cart, then buy online, in a store or at a reseller; activate later."""
    rng = c.rng
    phone = rng.choice(_PHONES)
    order = {"order_id": f"ord-{c.index:06d}-{rng.randint(1000, 9999)}", "sku": phone}
    sale = {**order, "amount": round(rng.uniform(250, 1300), 2), "currency": c.currency}
    t, visit = _open(c, t, "web")
    t = c.after(t, 10, 60)
    visit.emit(t, "search", "search", {"query": phone.replace("_", " ")})
    t = c.after(t, 10, 90)
    visit.emit(t, "page_view", "phone_detail", {"sku": phone})
    if not visit.known:
        return
    t = c.after(t, 30, 300)
    visit.emit(t, "add_to_cart", "cart", {"sku": phone, "price": sale["amount"]})
    route = rng.random()
    if route < 0.4:
        t = c.after(t, 60, 600)
        visit.emit(t, "purchase", "checkout", sale)
        activated = c.after(t, 6 * 3600, 30 * 3600)  # delivered, then switched on
        if rng.random() < 0.25:
            activated = c.after(t, 50 * 3600, 120 * 3600)  # stuck: help is due after 48 h
    elif route < 0.85:
        # In one of our stores, or at a reseller partner's shop.
        channel, shop = ("store", "store_high_street") if route < 0.7 else ("partner", "reseller")
        partner = f"reseller-{rng.randint(1, 25):03d}" if channel == "partner" else None
        for kind, gap, props in (
            ("store_visit", (1800, 8 * 3600), {"reason": "upgrade"}),
            ("device_purchased", (300, 1500), sale),
        ):
            t = c.after(t, *gap)
            c.emit(t, kind, channel, shop, props, partner_id=partner)
        _survey(c, t, "store", rng.random() < 0.8)
        activated = c.after(t, 600, 5400)
    else:
        return  # an abandoned cart
    # Reported by the network for the customer; the new phone has no anonymous id yet.
    channel = "app" if c.app is not None else "web"
    c.emit(activated, "device_activated", channel, "activation", order)
    if rng.random() < 0.35:  # cases and chargers for the new phone
        c.emit(c.after(activated, 3600, 3 * 86400), "page_view", channel, "accessories", order)


def _telco_store(c: _Customer, t: float) -> None:
    reason = c.rng.choice(("sim_swap", "bill", "accessories", "repair"))
    c.emit(t, "store_visit", "store", "store_high_street", {"reason": reason})
    _survey(c, t, "store", c.rng.random() < 0.8)


# --------------------------------------------------------------------------- banking


def _new_transfer(c: _Customer, amount: float) -> dict[str, Any]:
    c.transfers += 1
    return {
        "transfer_id": f"trf-{c.index:06d}-{c.transfers}",
        "amount": round(amount, 2),
        "currency": c.currency,
    }


def _bank_app(c: _Customer, t: float) -> None:
    """Everyday banking: the balance, and often a transfer that just works."""
    rng = c.rng
    t, visit = _open(c, t, "app", login_p=0.97)
    if not visit.known:
        return
    t = c.after(t, 3, 30)
    visit.emit(t, "page_view", "accounts")
    if rng.random() < 0.45:
        transfer = _new_transfer(c, rng.uniform(5, 900))
        t = c.after(t, 10, 90)
        visit.emit(t, "transfer_started", "transfers", transfer)
        visit.emit(c.after(t, 2, 15), "transfer_completed", "transfers", transfer)
    elif rng.random() < 0.3:
        visit.browse(t, rng.randint(1, 3))


def _bank_web(c: _Customer, t: float) -> None:
    rng = c.rng
    t, visit = _open(c, t, "web", login_p=0.6)
    t = visit.browse(t, rng.randint(1, 4))
    if not visit.known:
        return
    if rng.random() < 0.08:  # reading about transfers without any trouble
        visit.emit(c.after(t, 10, 60), "page_view", "help_transfers")
    elif rng.random() < 0.06:  # a mortgage appointment in a branch
        t = _call(c, c.after(t, 60, 1800), "cc_mortgage", "mortgage")
        c.emit(
            c.after(t, 3600, 20 * 3600), "store_visit", "store", "branch", {"reason": "mortgage"}
        )


def _bank_branch(c: _Customer, t: float) -> None:
    reason = c.rng.choice(("cash", "account_opening", "advice", "id_check"))
    c.emit(t, "store_visit", "store", "branch", {"reason": reason})
    _survey(c, t, "branch", c.rng.random() < 0.85)


def _bank_balance_ivr(c: _Customer, t: float) -> None:
    _ivr(c, t, "ivr_balance")


def _card_problem(c: _Customer, t: float) -> None:
    rng = c.rng
    t = _ivr(c, t, "ivr_cards")
    happy = rng.random() < 0.75
    if rng.random() < 0.7:
        t = _call(c, c.after(t, 5, 120), "cc_cards", "card")
    else:
        t = _chat(c, c.after(t, 60, 900), "card", happy=happy)
    _survey(c, t, "cards", happy)


#: The variants of the money-transfer seed scenario and how often each happens.
TRANSFER_VARIANTS = {
    "within_hour": 0.52,  # help pages, IVR and chat all within the hour
    "beyond_hour": 0.18,  # the same, spread over more than an hour
    "skip_web": 0.09,
    "skip_ivr": 0.09,
    "retry_ok": 0.12,  # a retry goes through, no contact needed
}
_TRANSFER_ERRORS = ("payee_check_failed", "limit_exceeded", "timeout", "account_blocked")


def _transfer_trouble(c: _Customer, t: float) -> None:
    """The seed scenario: a failed app transfer, then help pages, IVR and chat about it.

    Most customers escalate within the hour; some spread it over hours, skip the web
    or the IVR, or simply succeed on a retry.
    """
    rng = c.rng
    amount = rng.choice((rng.uniform(20, 400), rng.uniform(400, 3000), rng.uniform(3000, 15000)))
    transfer = _new_transfer(c, amount)
    ref = {"transfer_id": transfer["transfer_id"]}
    failed = {**transfer, "error_code": rng.choice(_TRANSFER_ERRORS)}
    t, app = _open(c, t, "app", login_p=1.0)
    for _ in range(2 if rng.random() < 0.35 else 1):  # often an immediate retry fails too
        t = c.after(t, 10, 90)
        app.emit(t, "transfer_started", "transfers", transfer)
        t = c.after(t, 2, 20)
        app.emit(t, "transfer_failed", "transfers", failed)
    variant = _weighted(rng, TRANSFER_VARIANTS)
    if variant == "retry_ok":
        if rng.random() < 0.4:
            t = _help_pages(c, c.after(t, 60, 600), ref)
        t = c.after(t, 120, 1800)
        app.emit(t, "transfer_started", "transfers", transfer)
        app.emit(c.after(t, 2, 20), "transfer_completed", "transfers", {**transfer, "retry": True})
        return
    if variant == "within_hour":
        t = _help_pages(c, c.after(t, 60, 480), ref)
        t = _ivr(c, c.after(t, 60, 900), "ivr_payments", ref)
        t = c.after(t, 60, 900)
    elif variant == "beyond_hour":
        t = _help_pages(c, c.after(t, 120, 1800), ref)
        t = _ivr(c, c.after(t, 70 * 60, 4 * 3600), "ivr_payments", ref)
        t = c.after(t, 300, 7200)
    elif variant == "skip_web":
        t = _ivr(c, c.after(t, 120, 1800), "ivr_payments", ref)
        t = c.after(t, 120, 1500)
    else:  # skip_ivr
        t = _help_pages(c, c.after(t, 60, 600), ref)
        t = c.after(t, 120, 1800)
    happy = rng.random() < 0.6
    t = _chat(c, t, "transfer", ref, happy=happy)
    if happy:  # the agent sorted it out
        t = c.after(t, 60, 900)
        app.emit(t, "transfer_completed", "transfers", {**transfer, "assisted": True})
    _survey(c, t, "transfer", happy)


def _help_pages(c: _Customer, t: float, ref: dict) -> float:
    """Logged-in help pages about one transfer (the app's error screen links to them)."""
    t, visit = _open(c, t, "web", login_p=1.0)
    for _ in range(c.rng.randint(1, 3)):
        t = c.after(t, 15, 120)
        visit.emit(t, "page_view", "help_transfers", ref)
    return t


# --------------------------------------------------------------------------- auto


def _configure(c: _Customer, t: float, visit: _Visit, model: str) -> dict[str, Any]:
    config = {
        "model": model,
        "trim": c.rng.choice(_TRIMS),
        "price": round(c.rng.uniform(24000, 68000), 2),
    }
    visit.emit(t, "configurator_used", "configurator", config)
    return config


def _auto_research(c: _Customer, t: float) -> None:
    rng = c.rng
    t, visit = _open(c, t, "web", login_p=0.4)
    t = visit.browse(t, rng.randint(1, 3))
    if rng.random() < 0.5:
        t = c.after(t, 30, 300)
        _configure(c, t, visit, rng.choice(_MODELS))
    if rng.random() < 0.2:
        visit.emit(c.after(t, 30, 300), "page_view", "finance_calculator")


def _test_drive(c: _Customer, t: float) -> None:
    """Configure, book a test drive with the dealer partner, visit, sometimes buy."""
    rng = c.rng
    t, visit = _open(c, t, "web", login_p=1.0)
    t = c.after(t, 30, 300)
    car = _configure(c, t, visit, rng.choice(_MODELS))
    t = c.after(t, 20, 200)
    visit.emit(t, "page_view", "dealer_locator")
    t = c.after(t, 60, 600)
    model = {"model": car["model"]}
    c.emit(t, "test_drive_booked", "partner", "dealer_booking", model, partner_id=c.partner_id)
    if rng.random() < 0.3:
        t = _call(c, c.after(t, 600, 3 * 3600), "cc_sales", "finance")
    if rng.random() < 0.15:  # a no-show
        return
    t = c.after(t, 2 * 3600, 20 * 3600)
    c.emit(t, "store_visit", "partner", "dealer_showroom", model, partner_id=c.partner_id)
    if rng.random() < 0.3:
        t = c.after(t, 1800, 5400)
        sale = {**model, "amount": car["price"], "currency": c.currency}
        c.emit(t, "purchase", "partner", "dealer_showroom", sale, partner_id=c.partner_id)
    _survey(c, t, "dealer", rng.random() < 0.8)


def _auto_contact(c: _Customer, t: float) -> None:
    if c.rng.random() < 0.5:
        _call(c, t, "cc_sales", "finance")
    else:
        _chat(c, t, "auto", happy=c.rng.random() < 0.8)


def _auto_service(c: _Customer, t: float) -> None:
    c.emit(t, "service_booked", "partner", "dealer_service", partner_id=c.partner_id)


# --------------------------------------------------------------------------- session mix

_COMMON: dict[_Session, float] = {_email: 14.0, _sms: 6.0, _push: 6.0, _digital: 8.0}
_BY_VERTICAL: dict[str, dict[_Session, float]] = {
    "telco": {_telco_bill: 10.0, _telco_usage: 14.0, _telco_support: 4.0, _telco_store: 1.5},
    "banking": {_bank_app: 30.0, _bank_web: 8.0, _bank_branch: 1.0, _bank_balance_ivr: 1.5},
    "auto": {_auto_research: 24.0, _auto_contact: 2.0, _auto_service: 1.0},
}
_PREFERENCE_BOOST = {"email": _email, "sms": _sms, "push": _push}
#: Extra journeys a customer's true intent leads to: (session, chance), per vertical and intent.
_INTENT_SESSIONS: dict[tuple[str, str], tuple[tuple[_Session, float], ...]] = {
    ("telco", "upgrade"): ((_phone_upgrade, 0.6), (_telco_store, 0.3)),
    ("telco", "get_support"): ((_telco_support, 0.6), (_telco_support, 0.3)),
    ("telco", "billing"): ((_bill_shock, 0.6), (_telco_bill, 0.5)),
    ("telco", "activate"): ((_phone_upgrade, 0.4),),
    ("banking", "pay"): ((_transfer_trouble, 0.2), (_bank_web, 0.5)),
    ("banking", "get_support"): ((_card_problem, 0.5), (_transfer_trouble, 0.3)),
    ("auto", "buy"): ((_test_drive, 0.5), (_auto_research, 0.6)),
    ("auto", "get_support"): ((_auto_service, 0.6),),
}


def _session_mix(
    vertical: str, preferred: str, has_app: bool
) -> tuple[list[_Session], list[float]]:
    """The customer's session kinds with cumulative weights, nudged to the preferred channel."""
    kinds: list[_Session] = []
    cumulative: list[float] = []
    total = 0.0
    for session, weight in (_COMMON | _BY_VERTICAL[vertical]).items():
        if session is _push and not has_app:
            continue
        total += weight * (2.0 if _PREFERENCE_BOOST.get(preferred) is session else 1.0)
        kinds.append(session)
        cumulative.append(total)
    return kinds, cumulative


# --------------------------------------------------------------------------- generation


def _partition_events(config: SimulationConfig, partition: int) -> Iterator[tuple[float, Event]]:
    """A partition's good events in (time, customer, sequence) order.

    One heap holds, per customer, the marker of its next session plus the events of the
    sessions already started. A session runs when its marker comes up and queues only
    events at or after that time, so popping the heap stays in event-time order.
    """
    start = config.start.timestamp()
    end = (config.start + timedelta(hours=config.hours)).timestamp()
    heap: list[_Entry] = []
    for index in range(partition, config.customers, config.partitions):
        _Customer(config, index, start, end, heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    while heap:
        t, index, n, payload = heappop(heap)
        if n >= 0:
            yield t, payload
            continue
        c, special = payload
        if special is not None:
            special(c, t)
            continue
        c.kinds[bisect(c.kinds_cum, c.rng.random() * c.kinds_cum[-1])](c, t)
        following = c.next_session(t)
        if following < end:
            heappush(heap, (following, index, -1, payload))


def simulate_partition(config: SimulationConfig, partition: int) -> Iterator[SimulatedRecord]:
    """Records of the customers with index % partitions == partition, in event-time order.

    Lazy: memory grows with the partition's customers, not with its events.
    """
    if not 0 <= partition < config.partitions:
        raise ValueError(f"partition {partition} is outside 0..{config.partitions - 1}")
    return _records(config, partition)


def _records(config: SimulationConfig, partition: int) -> Iterator[SimulatedRecord]:
    """Encoded good records, with bad input after some of them (at the same event time).

    Bad input comes from a per-partition RNG separate from the customers' ones, so the
    good records never change with `bad_input_share`.
    """
    share = config.bad_input_share
    bad_rng = random.Random(f"{config.seed}:bad:{partition}")
    bad_prefix = f"sim-{config.seed}-bad-{partition}-"
    bad = 0
    for t, event in _partition_events(config, partition):
        yield t, encode(event)
        # A geometric number of bad records per good one makes `share` their overall share.
        while share and bad_rng.random() < share:
            yield t, _bad_record(bad_rng, event, f"{bad_prefix}{bad}", t)
            bad += 1


def simulate(config: SimulationConfig) -> Iterator[SimulatedRecord]:
    """All partitions merged in event-time order (ties keep partition order)."""
    parts = [simulate_partition(config, p) for p in range(config.partitions)]
    return heapq.merge(*parts, key=itemgetter(0))


# --------------------------------------------------------------------------- bad input

#: What broken producers send, and how often (an oversized record is rare).
BAD_INPUT_KINDS = {
    "truncated": 0.28,
    "missing_field": 0.22,
    "wrong_type": 0.25,
    "invalid_utf8": 0.15,
    "empty": 0.07,
    "oversized": 0.03,
}
_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82(", b"\x80abc")


def _bad_record(rng: random.Random, event: Event, event_id: str, t: float) -> bytes:
    """A record a broken producer could send, modelled on a real event."""
    kind = _weighted(rng, BAD_INPUT_KINDS)
    base = msgspec.structs.replace(event, event_id=event_id)
    if kind == "empty":
        return b""
    if kind == "truncated":
        raw = encode(base)
        return raw[: rng.randrange(1, len(raw) - 1)]
    if kind == "invalid_utf8":  # broken bytes inside the event_id string
        return encode(base).replace(b'"event_id":"', b'"event_id":"' + rng.choice(_BAD_UTF8), 1)
    doc = msgspec.to_builtins(base)
    if kind == "missing_field":
        field = rng.choice(("ts", "type", "channel", "event_id", "ids"))
        if field == "ids":
            doc.pop("customer_id", None)
            doc.pop("anonymous_id", None)
        else:
            del doc[field]
    elif kind == "wrong_type":
        field = rng.choice(("ts", "ts", "channel", "type", "properties", "score"))
        if field == "ts":
            doc["ts"] = t  # epoch seconds instead of RFC 3339
        elif field == "channel":
            doc["channel"] = rng.choice((7, "Call Centre", None))
        elif field == "type":
            doc["type"] = doc["type"].upper().replace("_", " ")
        elif field == "properties":
            doc["properties"] = ["not", "a", "map"]
        else:
            doc["score"] = "ten"
    else:  # oversized: a producer attaching a blob
        doc["text"] = "x" * (DEFAULT_MAX_EVENT_BYTES + rng.randrange(1, 8192))
    return encode(doc)
