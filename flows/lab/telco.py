"""Telco traffic: bills, usage, network trouble, phone upgrades and store visits.

Regular sessions and the journeys of a mobile operator's customers; the simulator
decides how often each happens.
"""

from __future__ import annotations

from flows.lab.channels import call, chat, ivr, open_visit, survey
from flows.lab.population import Customer

_PHONES = ("pixelon_9", "nova_x", "nova_x_pro", "lumen_s", "lumen_s_plus")


def view_bill(c: Customer, t: float) -> None:
    """The bill online or in the app, sometimes paid there and then."""
    rng = c.rng
    t, visit = open_visit(c, t, "web" if rng.random() < 0.5 else "app", login_p=0.95)
    if not visit.known:
        return
    bill = {"amount": round(rng.uniform(15, 95), 2), "currency": c.currency}
    t = c.after(t, 5, 40)
    visit.emit(t, "bill_viewed", "bill_online" if visit.channel == "web" else "bill_app", bill)
    if rng.random() < 0.15:
        visit.emit(c.after(t, 30, 120), "purchase", "bill_pay", {**bill, "product": "bill"})


def bill_shock(c: Customer, t: float) -> None:
    """An unexpectedly high bill: bill page, IVR, then an agent or a chat, about one bill."""
    rng = c.rng
    t, visit = open_visit(c, t, "app", login_p=1.0)
    ref = {"bill_id": f"bill-{c.index:06d}-03"}
    bill = {**ref, "amount": round(rng.uniform(90, 400), 2), "currency": c.currency}
    t = c.after(t, 5, 30)
    touchpoint = "bill_online" if visit.channel == "web" else "bill_app"
    visit.emit(t, "bill_viewed", touchpoint, {**bill, "change_pct": rng.randint(40, 250)})
    t = ivr(c, c.after(t, 120, 1800), "ivr_billing", ref)
    happy = rng.random() < 0.6
    if rng.random() < 0.6:
        t = call(c, c.after(t, 5, 60), "cc_billing", "bill", ref)
    else:
        t = chat(c, c.after(t, 60, 900), "bill", ref, happy=happy)
    survey(c, t, "billing", happy)


def network_support(c: Customer, t: float) -> None:
    """Help pages about the network, sometimes a chat or the IVR and an agent."""
    rng = c.rng
    t, visit = open_visit(c, t, "app")
    t = c.after(t, 10, 60)
    visit.emit(t, "page_view", "help_network")
    if not visit.known or rng.random() < 0.4:
        return
    happy = rng.random() < 0.65
    if rng.random() < 0.5:
        t = chat(c, c.after(t, 30, 600), "network", happy=happy)
    else:
        t = ivr(c, c.after(t, 60, 900), "ivr_tech_support")
        t = call(c, c.after(t, 5, 60), "cc_tech", "network")
    survey(c, t, "network", happy)


def view_usage(c: Customer, t: float) -> None:
    """Usage in the app, now and then a data top-up."""
    t, visit = open_visit(c, t, "app")
    if not visit.known:
        return
    t = c.after(t, 5, 40)
    visit.emit(t, "page_view", "usage")
    if c.rng.random() < 0.12:
        topup = {"product": "data_boost_5gb", "amount": 5.0, "currency": c.currency}
        visit.emit(c.after(t, 20, 120), "purchase", "data_topup", topup)


def phone_upgrade(c: Customer, t: float) -> None:
    """Research, cart, then buy online, in a store or at a reseller; activate later."""
    rng = c.rng
    phone = rng.choice(_PHONES)
    order = {"order_id": f"ord-{c.index:06d}-{rng.randint(1000, 9999)}", "sku": phone}
    sale = {**order, "amount": round(rng.uniform(250, 1300), 2), "currency": c.currency}
    t, visit = open_visit(c, t, "web")
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
        survey(c, t, "store", rng.random() < 0.8)
        activated = c.after(t, 600, 5400)
    else:
        return  # an abandoned cart
    # Reported by the network for the customer; the new phone has no anonymous id yet.
    channel = "app" if c.app is not None else "web"
    c.emit(activated, "device_activated", channel, "activation", order)
    if rng.random() < 0.35:  # cases and chargers for the new phone
        c.emit(c.after(activated, 3600, 3 * 86400), "page_view", channel, "accessories", order)


def store_visit(c: Customer, t: float) -> None:
    """A visit to one of our shops, for a SIM swap, a bill, accessories or a repair."""
    reason = c.rng.choice(("sim_swap", "bill", "accessories", "repair"))
    c.emit(t, "store_visit", "store", "store_high_street", {"reason": reason})
    survey(c, t, "store", c.rng.random() < 0.8)
