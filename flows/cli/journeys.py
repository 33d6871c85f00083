"""`wayfinder replay` and `map`: journey analytics on logs, and pictures of the map."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from flows.analysis.pictures import DEFAULT_COVERAGE, DEFAULT_MAX_EDGES
from flows.analysis.process_log import (
    DEFAULT_ACTIVITY,
    DEFAULT_CASE,
    DEFAULT_CHANNEL,
    DEFAULT_RESOURCE,
    DEFAULT_TIMESTAMP,
)
from flows.cli.options import DEFAULT_OUT, Subcommands, add_command, print_error
from operators.contact_map import ALL

if TYPE_CHECKING:
    from flows.analysis.process_log import ProcessLog


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    """Read, replay, write, print."""
    from flows.analysis.process_log import Columns, LogError
    from flows.analysis.replay import read_log, replay_files
    from flows.runtime.settings import load_compiled, playbook_path

    started = time.perf_counter()
    columns = Columns(
        case=args.case_column,
        activity=args.activity_column,
        timestamp=args.timestamp_column,
        channel=args.channel_column or None,
        resource=args.resource_column or None,
        attributes=() if args.no_attributes else (tuple(args.attribute) or None),
    )
    try:
        log = read_log(
            args.log,
            args.events,
            columns,
            timezone=args.timezone,
            timestamp_format=args.timestamp_format,
            delimiter=args.delimiter,
            encoding=args.encoding,
        )
        playbook = (
            load_compiled(args.playbook or playbook_path()) if args.events is not None else None
        )
        summary = replay_files(
            log,
            args.out,
            goals=args.goal or (),
            events=args.events,
            playbook=playbook,
            started=started,
        )
    except LogError as exc:
        print_error(console, f"replay: {exc}")
        return 2
    print_summary(summary, log, console)
    return 0


def print_summary(summary: dict[str, Any], log: ProcessLog, console: Console) -> None:
    from rich.table import Table

    from flows.analysis.process_log import describe_skipped

    table = Table(title="Wayfinder replay", show_header=False, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("log", summary["source"])
    table.add_row("cases", f"{summary['cases']:,}")
    table.add_row("events", f"{summary['events']:,}")
    table.add_row("contact points", f"{summary['contact_points']:,}")
    table.add_row("event time", f"{summary['first_event']} .. {summary['last_event']}")
    table.add_row("skipped rows", f"{summary['skipped_rows']:,}")
    for reason, n in summary["skipped"].items():
        table.add_row(f"  {reason}", f"{n:,}")
    goal = ", ".join(summary["goal"])
    table.add_row("goal", f"{goal} ({summary['goal_source']})")
    kpis = summary["kpis"]
    table.add_row("goal reached", f"{kpis['goal_reached']:,} cases ({kpis['completion_rate']:.1%})")
    durations = summary["case_duration_seconds"]
    table.add_row(
        "case duration",
        f"mean {_human(durations['mean'])}, p50 {_human(durations['p50'])}, "
        f"max {_human(durations['max'])}",
    )
    table.add_row("loops, channel switches", f"{kpis['loops']:,}, {kpis['channel_switches']:,}")
    table.add_row("next-step accuracy (ours)", f"{summary['next_step_accuracy']:.2%}")
    table.add_row("  first-order Markov", f"{summary['markov1_accuracy']:.2%}")
    table.add_row("  back-off n-gram (4)", f"{summary['ngram_accuracy']:.2%}")
    seconds = summary["run_seconds"]
    table.add_row("run time", f"{seconds:,.2f} s ({summary['events_per_second']:,} events/s)")
    console.print(table)
    if summary["goal_source"] != "--goal":
        console.print(
            f"goal: {goal!r} is the activity that most often ends cases; choose with --goal",
            soft_wrap=True,
            highlight=False,
        )
    examples = describe_skipped(log)[len(log.skipped) :]
    if examples:
        console.print("[bold]skipped, for example[/]")
        for line in examples:
            console.print(line, soft_wrap=True, highlight=False, markup=False)
    if summary["pain_points"]:
        console.print("[bold]pain points[/]")
        for point in summary["pain_points"][:5]:
            reasons = "; ".join(point["reasons"])
            console.print(
                f"  {point['where']}: {reasons}", soft_wrap=True, highlight=False, markup=False
            )
    console.print("[bold]wrote[/]")
    for name, path in summary["outputs"].items():
        console.print(f"  {name:<22} {path}", soft_wrap=True, highlight=False)


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} d"


REPLAY_DESCRIPTION = (
    "Replay a process-mining CSV event log (or --events, a JSON-lines file of events in "
    "the wire format) as customer journeys, in event time and without a broker: build the "
    "contact-point map and KPIs, measure next-step prediction prequentially against a "
    "first-order Markov and a back-off n-gram baseline, and write contact_map_edges.csv, "
    "contact_map.json, kpis.json, cases.csv and summary.json into --out. Timestamps may "
    "carry offsets; those without are UTC unless --timezone. Rows that cannot be read are "
    "skipped and counted."
)


def cmd_map(args: argparse.Namespace, console: Console | None = None) -> int:
    """Handler of `wayfinder map`; prints the paths it wrote, or a clear error (exit 2)."""

    def say(text: str, *, error: bool = False) -> None:
        stream = sys.stderr if error else sys.stdout
        if console is not None and not error:
            console.print(text, soft_wrap=True, highlight=False, markup=False)
        else:
            print(text, file=stream, flush=True)

    import msgspec

    from flows.analysis.pictures import GraphvizFailed, GraphvizMissing, load_map, render_map

    path: Path = args.map
    if not path.exists():
        say(
            f"map: {path} does not exist (run `wayfinder run` or `wayfinder replay` first)",
            error=True,
        )
        return 2
    try:
        cmap = load_map(path)
    except (msgspec.DecodeError, msgspec.ValidationError, OSError) as exc:
        say(f"map: cannot read {path}: {exc}", error=True)
        return 2
    if args.scope not in cmap.scopes:
        known = ", ".join(sorted(cmap.scopes)) or "none"
        say(f"map: no scope {args.scope!r} in {path}; scopes: {known}", error=True)
        return 2
    if args.min_count is not None and args.min_count < 1:
        say("map: --min-count must be at least 1", error=True)
        return 2
    if args.max_edges < 1:
        say("map: --max-edges must be at least 1", error=True)
        return 2
    out = args.out or (path if path.is_dir() else path.parent)
    try:
        written = render_map(
            cmap, args.scope, out, min_count=args.min_count, max_edges=args.max_edges
        )
    except (GraphvizMissing, GraphvizFailed, subprocess.TimeoutExpired) as exc:
        say(f"map: {exc}", error=True)
        return 2
    for written_path in written:
        say(str(written_path))
    return 0


def register(sub: Subcommands) -> None:
    parser = add_command(
        sub,
        "replay",
        help="replay a process-mining log or an events file: map, KPIs, next-step accuracy",
        description=REPLAY_DESCRIPTION,
    )
    parser.add_argument("log", type=Path, nargs="?", help="process-mining CSV log (or .csv.gz)")
    parser.add_argument(
        "--events",
        type=Path,
        help="JSON-lines events (wire format) instead of a CSV log: replayed through the "
        "playbook's journeys, as a run does",
    )
    parser.add_argument(
        "--playbook", type=Path, help="playbook for --events (default: the one `run` uses)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "replay", help="output folder")
    parser.add_argument(
        "--goal",
        action="append",
        default=[],
        metavar="ACTIVITY",
        help="a case reaches the goal when it contains this activity (repeatable; default: "
        "the activity that most often ends cases)",
    )
    columns = parser.add_argument_group("columns of the CSV log")
    columns.add_argument("--case-column", default=DEFAULT_CASE, help="case id (the journey)")
    columns.add_argument(
        "--activity-column", default=DEFAULT_ACTIVITY, help="activity (the contact point)"
    )
    columns.add_argument("--timestamp-column", default=DEFAULT_TIMESTAMP, help="event time")
    columns.add_argument(
        "--channel-column",
        default=DEFAULT_CHANNEL,
        help="channel, used when present ('' for none)",
    )
    columns.add_argument(
        "--resource-column",
        default=DEFAULT_RESOURCE,
        help="resource, used when present ('' for none)",
    )
    columns.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="COL",
        help="an attribute column the next-step models see (repeatable; default: every "
        "other column; channel and resource always)",
    )
    columns.add_argument(
        "--no-attributes", action="store_true", help="no attribute columns besides those two"
    )
    reading = parser.add_argument_group("reading the CSV log")
    reading.add_argument(
        "--timezone", help="zone of timestamps without an offset (default UTC), e.g. Europe/Paris"
    )
    reading.add_argument(
        "--timestamp-format", help="strptime format, when the timestamps are not ISO 8601"
    )
    reading.add_argument("--delimiter", help="field delimiter (default: sniffed: , ; tab |)")
    reading.add_argument("--encoding", default="utf-8-sig", help="text encoding")

    parser.set_defaults(handler=cmd_replay)

    cmd = add_command(
        sub,
        "map",
        help="draw the contact-point map as SVG and PNG",
        description=(
            "Draw the contact-point map of one scope (all, a journey or an intent) from "
            "contact_map.json as map-<scope>.svg and map-<scope>.png: edge width by volume, "
            "colour by goal rate, pain points marked. Busy maps keep the busiest edges "
            f"(covering {DEFAULT_COVERAGE:.0%} of traffic, at most {DEFAULT_MAX_EDGES}) "
            "and say in the picture what they hid."
        ),
    )
    cmd.add_argument(
        "--map",
        type=Path,
        default=DEFAULT_OUT / "contact_map.json",
        help="contact_map.json written by run or replay, or its folder",
    )
    cmd.add_argument(
        "--scope",
        default=ALL,
        help="all, or a journey or intent name",
    )
    cmd.add_argument("--out", type=Path, help="folder for the pictures (default: the map's folder)")
    cmd.add_argument(
        "--min-count",
        type=int,
        help="draw only edges with at least this many moves (default: the busiest edges "
        f"covering {DEFAULT_COVERAGE:.0%}% of traffic)",
    )
    cmd.add_argument(
        "--max-edges",
        type=int,
        default=DEFAULT_MAX_EDGES,
        help="draw at most this many edges",
    )
    cmd.set_defaults(handler=cmd_map)
