"""Banking traffic: everyday app and web banking, branches, cards and failed transfers.

The failed money transfer is the seed scenario (`transfer_trouble`); the simulator
decides how often each session happens.
"""

from __future__ import annotations

from typing import Any

from flows.lab.channels import call, chat, ivr, open_visit, survey
from flows.lab.population import Customer, weighted


def transfer_id(index: int, n: int) -> str:
    """The id of the `n`-th transfer (from 1) of the simulated customer `index`."""
    return f"trf-{index:06d}-{n}"


def _new_transfer(c: Customer, amount: float) -> dict[str, Any]:
    c.transfers += 1
    return {
        "transfer_id": transfer_id(c.index, c.transfers),
        "amount": round(amount, 2),
        "currency": c.currency,
    }


def app_banking(c: Customer, t: float) -> None:
    """Everyday banking: the balance, and often a transfer that just works."""
    rng = c.rng
    t, visit = open_visit(c, t, "app", login_p=0.97)
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


def web_banking(c: Customer, t: float) -> None:
    """Browsing the bank's site; now and then help pages or a mortgage appointment."""
    rng = c.rng
    t, visit = open_visit(c, t, "web", login_p=0.6)
    t = visit.browse(t, rng.randint(1, 4))
    if not visit.known:
        return
    if rng.random() < 0.08:  # reading about transfers without any trouble
        visit.emit(c.after(t, 10, 60), "page_view", "help_transfers")
    elif rng.random() < 0.06:  # a mortgage appointment in a branch
        t = call(c, c.after(t, 60, 1800), "cc_mortgage", "mortgage")
        c.emit(
            c.after(t, 3600, 20 * 3600), "store_visit", "store", "branch", {"reason": "mortgage"}
        )


def branch_visit(c: Customer, t: float) -> None:
    """A visit to a branch, sometimes followed by a survey."""
    reason = c.rng.choice(("cash", "account_opening", "advice", "id_check"))
    c.emit(t, "store_visit", "store", "branch", {"reason": reason})
    survey(c, t, "branch", c.rng.random() < 0.85)


def balance_ivr(c: Customer, t: float) -> None:
    ivr(c, t, "ivr_balance")


def card_problem(c: Customer, t: float) -> None:
    """A card problem: the card line of the IVR, then an agent or a chat."""
    rng = c.rng
    t = ivr(c, t, "ivr_cards")
    happy = rng.random() < 0.75
    if rng.random() < 0.7:
        t = call(c, c.after(t, 5, 120), "cc_cards", "card")
    else:
        t = chat(c, c.after(t, 60, 900), "card", happy=happy)
    survey(c, t, "cards", happy)


#: The variants of the money-transfer seed scenario and how often each happens.
TRANSFER_VARIANTS = {
    "within_hour": 0.52,  # help pages, IVR and chat all within the hour
    "beyond_hour": 0.18,  # the same, spread over more than an hour
    "skip_web": 0.09,
    "skip_ivr": 0.09,
    "retry_ok": 0.12,  # a retry goes through, no contact needed
}
_TRANSFER_ERRORS = ("payee_check_failed", "limit_exceeded", "timeout", "account_blocked")


def transfer_trouble(c: Customer, t: float) -> None:
    """The seed scenario: a failed app transfer, then help pages, IVR and chat about it.

    Most customers escalate within the hour; some spread it over hours, skip the web
    or the IVR, or simply succeed on a retry.
    """
    rng = c.rng
    amount = rng.choice((rng.uniform(20, 400), rng.uniform(400, 3000), rng.uniform(3000, 15000)))
    transfer = _new_transfer(c, amount)
    ref = {"transfer_id": transfer["transfer_id"]}
    failed = {**transfer, "error_code": rng.choice(_TRANSFER_ERRORS)}
    t, app = open_visit(c, t, "app", login_p=1.0)
    for _ in range(2 if rng.random() < 0.35 else 1):  # often an immediate retry fails too
        t = c.after(t, 10, 90)
        app.emit(t, "transfer_started", "transfers", transfer)
        t = c.after(t, 2, 20)
        app.emit(t, "transfer_failed", "transfers", failed)
    variant = weighted(rng, TRANSFER_VARIANTS)
    if variant == "retry_ok":
        if rng.random() < 0.4:
            t = _help_pages(c, c.after(t, 60, 600), ref)
        t = c.after(t, 120, 1800)
        app.emit(t, "transfer_started", "transfers", transfer)
        app.emit(c.after(t, 2, 20), "transfer_completed", "transfers", {**transfer, "retry": True})
        return
    if variant == "within_hour":
        t = _help_pages(c, c.after(t, 60, 480), ref)
        t = ivr(c, c.after(t, 60, 900), "ivr_payments", ref)
        t = c.after(t, 60, 900)
    elif variant == "beyond_hour":
        t = _help_pages(c, c.after(t, 120, 1800), ref)
        t = ivr(c, c.after(t, 70 * 60, 4 * 3600), "ivr_payments", ref)
        t = c.after(t, 300, 7200)
    elif variant == "skip_web":
        t = ivr(c, c.after(t, 120, 1800), "ivr_payments", ref)
        t = c.after(t, 120, 1500)
    else:  # skip_ivr
        t = _help_pages(c, c.after(t, 60, 600), ref)
        t = c.after(t, 120, 1800)
    happy = rng.random() < 0.6
    t = chat(c, t, "transfer", ref, happy=happy)
    if happy:  # the agent sorted it out
        t = c.after(t, 60, 900)
        app.emit(t, "transfer_completed", "transfers", {**transfer, "assisted": True})
    survey(c, t, "transfer", happy)


def _help_pages(c: Customer, t: float, ref: dict[str, Any]) -> float:
    """Logged-in help pages about one transfer (the app's error screen links to them)."""
    t, visit = open_visit(c, t, "web", login_p=1.0)
    for _ in range(c.rng.randint(1, 3)):
        t = c.after(t, 15, 120)
        visit.emit(t, "page_view", "help_transfers", ref)
    return t
