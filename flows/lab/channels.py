"""What customers do on each channel, whatever their vertical.

Visits on the web or in the app (anonymous until a login, the stitch point), chats,
calls, IVR, surveys, and the sessions every customer has: email, SMS, push, plain
visits, consent changes and anonymous visitors. The verticals build their journeys
from these.
"""

from __future__ import annotations

from typing import Any

from flows.lab.population import Customer, Device, anon_id
from schemas.event import Consent

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


#: Pages that ask for the next best content when a known customer opens them.
_REQUEST_PAGES = frozenset({"home", "app_home", "offers", "phones", "plans", "accounts"})
_REQUEST_SHARE = 0.5


class Visit:
    """A web or app visit on one device, by a known customer or still anonymous."""

    __slots__ = ("channel", "customer", "device", "known")

    def __init__(self, customer: Customer, device: Device, known: bool) -> None:
        self.customer, self.device, self.known = customer, device, known
        self.channel = device.channel

    def emit(
        self, t: float, kind: str, touchpoint: str, props: dict[str, Any] | None = None
    ) -> None:
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


# --------------------------------------------------------------------------- contacts


def open_visit(c: Customer, t: float, channel: str, login_p: float = 0.85) -> tuple[float, Visit]:
    """Start a web or app visit: anonymous until the visitor logs in, if ever.

    A device's first visit always starts anonymously, so stitching has work to do:
    a few anonymous events, then `identify` (both ids, the profile), then known events.
    """
    rng = c.rng
    device = (c.app if channel == "app" else c.web) or c.devices[0]
    linked = device.linked(t)
    visit = Visit(c, device, known=False)
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


def chat(
    c: Customer, t: float, topic: str, ref: dict[str, Any] | None = None, happy: bool = True
) -> float:
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


def call(c: Customer, t: float, queue: str, topic: str, ref: dict[str, Any] | None = None) -> float:
    duration = round(c.rng.uniform(120, 1200))
    props = {**(ref or {}), "topic": topic}
    c.emit(t, "call_started", "call_centre", queue, props)
    t = round(t + duration, 3)
    c.emit(t, "call_ended", "call_centre", queue, {**props, "duration_s": duration})
    return t


def ivr(c: Customer, t: float, menu: str, ref: dict[str, Any] | None = None) -> float:
    duration = round(c.rng.uniform(40, 360))
    c.emit(t, "ivr_call", "ivr", menu, {**(ref or {}), "duration_s": duration})
    return round(t + duration, 3)


def survey(c: Customer, t: float, about: str, happy: bool) -> None:
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


# --------------------------------------------------------------------------- sessions


def email(c: Customer, t: float) -> None:
    """A marketing email opened (unless revoked); a click sometimes leads to the web."""
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
            t, visit = open_visit(c, c.after(t, 2, 20), "web", login_p=0.5)
            visit.browse(t, rng.randint(1, 3))


def sms(c: Customer, t: float) -> None:
    """A service SMS, or an offer (unless revoked) that sometimes opens the app."""
    rng = c.rng
    topic = rng.choice(("otp", "reminder", "offer", "delivery"))
    if topic == "offer" and not c.marketing_allowed("sms", t):
        return
    c.emit(t, "sms_received", "sms", f"sms_{topic}", {"topic": topic})
    if topic == "offer" and rng.random() < 0.15:
        t, visit = open_visit(c, c.after(t, 30, 900), "app")
        visit.browse(t, rng.randint(1, 2))


def push(c: Customer, t: float) -> None:
    """Push needs an app the customer has logged into; otherwise it is an email."""
    app = c.app
    if app is None or not app.linked(t) or not c.marketing_allowed("push", t):
        email(c, t)
        return
    topic = c.rng.choice(("offer", "alert", "reminder"))
    c.emit(t, "push_opened", "push", f"push_{topic}", {"topic": topic}, device=app)
    visit = Visit(c, app, known=True)
    t = c.after(t, 2, 20)
    visit.emit(t, "app_open", "app_home")
    visit.browse(t, c.rng.randint(0, 3))


def consent_change(c: Customer, t: float) -> None:
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


def visitor(c: Customer, t: float) -> None:
    """A prospect browsing anonymously (a fresh anonymous id) who never logs in."""
    visit = Visit(c, Device(anon_id(c.rng), "web"), known=False)
    visit.emit(t, "page_view", "home")
    visit.browse(t, c.rng.randint(0, 4))


def digital(c: Customer, t: float) -> None:
    """A plain visit on the customer's own web or app."""
    t, visit = open_visit(c, t, "app" if c.rng.random() < 0.55 else "web")
    visit.browse(t, c.rng.randint(1, 4))
