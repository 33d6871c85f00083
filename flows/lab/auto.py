"""Car-buyer ("auto") traffic: research, configuring, test drives with a dealer partner.

The dealer partner (`Customer.partner_id`) books test drives, hosts showroom visits
and sales, and services cars; the simulator decides how often each session happens.
"""

from __future__ import annotations

from typing import Any

from flows.lab.channels import Visit, call, chat, open_visit, survey
from flows.lab.population import Customer

_MODELS = ("aria_ev", "aria_hybrid", "corsa_line", "vento_suv", "vento_ev")
_TRIMS = ("base", "sport", "lux")


def _configure(c: Customer, t: float, visit: Visit, model: str) -> dict[str, Any]:
    config = {
        "model": model,
        "trim": c.rng.choice(_TRIMS),
        "price": round(c.rng.uniform(24000, 68000), 2),
    }
    visit.emit(t, "configurator_used", "configurator", config)
    return config


def research(c: Customer, t: float) -> None:
    """Browsing models on the web, configuring one half the time."""
    rng = c.rng
    t, visit = open_visit(c, t, "web", login_p=0.4)
    t = visit.browse(t, rng.randint(1, 3))
    if rng.random() < 0.5:
        t = c.after(t, 30, 300)
        _configure(c, t, visit, rng.choice(_MODELS))
    if rng.random() < 0.2:
        visit.emit(c.after(t, 30, 300), "page_view", "finance_calculator")


def test_drive(c: Customer, t: float) -> None:
    """Configure, book a test drive with the dealer partner, visit, sometimes buy."""
    rng = c.rng
    t, visit = open_visit(c, t, "web", login_p=1.0)
    t = c.after(t, 30, 300)
    car = _configure(c, t, visit, rng.choice(_MODELS))
    t = c.after(t, 20, 200)
    visit.emit(t, "page_view", "dealer_locator")
    t = c.after(t, 60, 600)
    model = {"model": car["model"]}
    c.emit(t, "test_drive_booked", "partner", "dealer_booking", model, partner_id=c.partner_id)
    if rng.random() < 0.3:
        t = call(c, c.after(t, 600, 3 * 3600), "cc_sales", "finance")
    if rng.random() < 0.15:  # a no-show
        return
    t = c.after(t, 2 * 3600, 20 * 3600)
    c.emit(t, "store_visit", "partner", "dealer_showroom", model, partner_id=c.partner_id)
    if rng.random() < 0.3:
        t = c.after(t, 1800, 5400)
        sale = {**model, "amount": car["price"], "currency": c.currency}
        c.emit(t, "purchase", "partner", "dealer_showroom", sale, partner_id=c.partner_id)
    survey(c, t, "dealer", rng.random() < 0.8)


def contact(c: Customer, t: float) -> None:
    """A question for sales, on the phone or in a chat."""
    if c.rng.random() < 0.5:
        call(c, t, "cc_sales", "finance")
    else:
        chat(c, t, "auto", happy=c.rng.random() < 0.8)


def service_booking(c: Customer, t: float) -> None:
    """A service booked with the dealer partner."""
    c.emit(t, "service_booked", "partner", "dealer_service", partner_id=c.partner_id)
