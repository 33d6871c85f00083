"""`wayfinder customer ID`: one customer's context, as the flow's context view holds it."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console

from flows.cli.options import DEFAULT_OUT, Subcommands, add_command, print_error

if TYPE_CHECKING:
    from schemas.context_view import ContextView


def cmd_customer(args: argparse.Namespace, console: Console) -> int:
    from flows.dataflow.run_stores import shapes_beside
    from flows.runtime.run_files import CONTEXT_VIEW
    from flows.runtime.settings import context_view_folder, state_key
    from state.context_view import ContextViewReader

    folder: Path = args.view or context_view_folder() or args.out / CONTEXT_VIEW
    # (a cluster's processes each keep the view of their own customers beside it)
    stores = [path for kept in shapes_beside(folder).values() for path in kept]
    if not stores:
        print_error(console, f"no context view at {folder}: run the flow first (or --view DIR)")
        return 2
    key = state_key(f"anon:{args.id}" if args.device else args.id)
    view = None
    for store in stores:
        reader = ContextViewReader(store)
        try:
            found = reader.view(key)
        finally:
            reader.close()
        if found is not None and (view is None or found.written_at > view.written_at):
            view = found
    if view is None:
        what = "device" if args.device else "customer"
        print_error(console, f"no {what} {args.id!r} in the context view at {folder}")
        return 1
    if args.json:
        console.print_json(json.dumps(msgspec.to_builtins(view)))
    else:
        show(Console(soft_wrap=True, highlight=False), view, time.time())
    return 0


def show(console: Console, view: ContextView, now: float) -> None:
    """The view as a person reads it: who, how fresh, journeys, decisions and why."""
    kind = "customer" if view.known else "visitor"
    console.print(f"[bold]{view.id}[/bold] ({kind}, pseudonym {view.customer})")
    console.print(
        f"  view written {_ago(now - view.written_at)} ago, as of event time "
        f"{_when(view.watermark)}"
    )
    console.print(
        f"  first seen {_when(view.first_seen)}, last seen {_when(view.last_seen)} "
        f"({view.events:,} events)"
    )
    if view.devices:
        console.print(f"  devices: {', '.join(view.devices)}")
    profile = [f"value tier {view.value_tier}"] if view.value_tier else []
    if view.preferred_channel:
        profile.append(f"prefers {view.preferred_channel}")
    if view.intent:
        profile.append(f"intent {view.intent}")
    if profile:
        console.print("  " + "; ".join(profile))
    if view.consent:
        given = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in sorted(view.consent.items()))
        console.print(f"  consent: {given}", highlight=False)
    console.print(f"  segments: {', '.join(view.segments) or 'none'}")
    console.print("[bold]Journeys in flight[/bold]" if view.journeys else "No journey in flight")
    for journey in view.journeys:
        stage = f", stage {journey.stage}" if journey.stage else ""
        console.print(
            f"  {journey.journey}: {journey.status}{stage}, for "
            f"{_ago(view.watermark - journey.started_at)} (last moved "
            f"{_ago(view.watermark - journey.last_at)} before the view)"
        )
    console.print("[bold]Latest decisions[/bold]" if view.decisions else "No decision yet")
    for decision in view.decisions:
        what = decision.action or "nothing"
        where = f" on {decision.channel}" if decision.channel else ""
        console.print(
            f"  {_when(decision.at)}  {decision.outcome}: {what}{where} (on {decision.trigger})",
            highlight=False,
        )
        for reason in decision.reasons:
            console.print(f"      - {reason}", highlight=False, markup=False)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def register(sub: Subcommands) -> None:
    customer = add_command(
        sub,
        "customer",
        help="one customer's context, as the flow's context view holds it",
        description=(
            "Print a customer's context as the running (or finished) flow last wrote it: "
            "who they are, how fresh the view is, their journeys in flight with stage and "
            "age, segments, consent, and the latest decisions with their reasons. Reads the "
            "view without blocking the flow (a RocksDB secondary instance). Needs the "
            "flow's WAYFINDER_STATE_KEY_SECRET. Exits 1 when the view has no such customer."
        ),
    )
    customer.add_argument("id", help="the customer's id (with --device: a device's id)")
    customer.add_argument("--device", action="store_true", help="ID is an anonymous device")
    customer.add_argument(
        "--view",
        type=Path,
        help="the context view's folder (default: WAYFINDER_CONTEXT_VIEW, else OUT/context_view)",
    )
    customer.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="the embedded run's output folder"
    )
    customer.add_argument("--json", action="store_true", help="print the view as JSON")
    customer.set_defaults(handler=cmd_customer)
