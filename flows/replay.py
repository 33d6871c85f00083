"""`wayfinder replay`: real history through the same operators, in event time, no broker.

A process-mining CSV log (or a JSON-lines file of our own events, `--events`)
is read as customer journeys: a case is a customer's journey, an activity a
contact point (its name exactly as logged), the channel column the channel.
Then, in one pass each:

- the contact-point map (`operators.contact_map.ContactMap`, scope `all`): every
  case is one path, from `__start__` to `__end__`; it reaches the goal when its
  path contains a goal activity (`--goal`, repeatable). Without `--goal`, the goal
  is the activity that most often ends cases (ties: the first by name), and the
  command says which one it used. A case with the goal counts as completed, one
  without as abandoned;
- next-step prediction, measured prequentially (`operators.next_step`): events in
  timestamp order, cases interleaved, each event after a case's first predicted
  from the case's prefix before any model learns from it.

It writes into `--out`:

- `contact_map_edges.csv`: scope,source,target,count,mean_seconds,p50_seconds,
  p90_seconds,goal_rate (the output contract), and `contact_map.json` (the whole
  map, as `wayfinder map` and the report read it);
- `summary.json`: cases, events, contact_points, next_step_accuracy (ours),
  markov1_accuracy, ngram_accuracy, the goal used, skipped rows, case durations,
  start and end contact points, the KPIs, the pain points and the run time;
- `kpis.json`: the KPIs and ranked pain points of scope `all`;
- `cases.csv`: one row per case (events, first and last contact point, start,
  end, duration, goal reached).
"""

import argparse
import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flows.map_files import write_map_files
from flows.process_log import (
    DEFAULT_ACTIVITY,
    DEFAULT_CASE,
    DEFAULT_CHANNEL,
    DEFAULT_RESOURCE,
    DEFAULT_TIMESTAMP,
    Columns,
    LogError,
    LogEvent,
    ProcessLog,
    describe_skipped,
    no_cyclic_gc,
    read_event_file,
    read_process_log,
)
from flows.report import write_report
from flows.settings import load_compiled, playbook_path
from operators.analytics import map_of
from operators.contact_map import ALL, ContactMap, Step
from operators.next_step import default_models, prequential
from operators.playbook import CompiledPlaybook
from operators.replay import Replay
from schemas.codec import event_file
from schemas.journey import JourneyTransition

DEFAULT_OUT = Path("out/replay")
CASE_COLUMNS = (
    "case",
    "events",
    "first_contact_point",
    "last_contact_point",
    "start",
    "end",
    "duration_seconds",
    "goal",
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def default_goal(cases: dict[str, list[LogEvent]]) -> str:
    """The activity that most often ends a case (ties: the first by name)."""
    ends = Counter(path[-1].activity for path in cases.values())
    return min(ends, key=lambda activity: (-ends[activity], activity))


def build_map(
    cases: dict[str, list[LogEvent]], goals: frozenset[str], *, partners: bool = False
) -> tuple[ContactMap, list[tuple[str, list[LogEvent], bool]]]:
    """The contact-point map of the cases (scope `all`), and each case's goal flag."""
    cmap = ContactMap()
    flagged = []
    for case, path in cases.items():
        reached = any(event.activity in goals for event in path)
        partner = None
        if partners:
            partner = next((e.resource for e in reversed(path) if e.resource), None)
        cmap.add_case(
            ALL,
            [Step(event.activity, event.ts, event.channel) for event in path],
            goal=reached,
            outcome="completed" if reached else "abandoned",
            partner=partner,
        )
        flagged.append((case, path, reached))
    return cmap, flagged


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def replay(log: ProcessLog, goals: Sequence[str] = ()) -> tuple[ContactMap, dict, list]:
    """Run the map and the next-step models over a log; the map, the summary, the cases."""
    started = time.perf_counter()
    cases = log.cases()
    if not cases:
        raise LogError(f"no events to replay in {log.source}")
    activities = Counter(event.activity for event in log.events)
    if goals:
        missing = [goal for goal in goals if goal not in activities]
        if missing:
            known = ", ".join(sorted(activities)[:40])
            raise LogError(f"goal activity {missing[0]!r} is not in the log; activities: {known}")
        goal_set, goal_source = frozenset(goals), "--goal"
    else:
        goal_set, goal_source = (
            frozenset({default_goal(cases)}),
            "the activity that most often ends cases",
        )
    cmap, flagged = build_map(cases, goal_set, partners=log.partners)
    mapped = time.perf_counter()

    results = prequential(log.stream(), default_models())
    predicted = time.perf_counter()

    durations = sorted(path[-1].ts - path[0].ts for path in cases.values())
    kpis = cmap.kpis(ALL)
    summary = {
        "source": log.source,
        "cases": len(cases),
        "events": len(log.events),
        "contact_points": len(activities),
        "next_step_accuracy": results["ours"]["accuracy"],
        "markov1_accuracy": results["markov1"]["accuracy"],
        "ngram_accuracy": results["ngram"]["accuracy"],
        "next_step": results,
        "goal": sorted(goal_set),
        "goal_source": goal_source,
        "goal_reached": kpis["goal_reached"],
        "rows": log.rows,
        "skipped_rows": log.skipped_rows,
        "skipped": dict(log.skipped.most_common()),
        "columns": log.columns,
        "model_attributes": list(log.attribute_names),
        "first_event": _iso(log.events[0].ts),
        "last_event": _iso(log.events[-1].ts),
        "case_duration_seconds": {
            "mean": round(cmap.scopes[ALL].kpis.case_durations.mean, 3),
            "p50": round(_quantile(durations, 0.5), 3),
            "p90": round(_quantile(durations, 0.9), 3),
            "min": round(durations[0], 3),
            "max": round(durations[-1], 3),
        },
        "start_points": dict(Counter(path[0].activity for path in cases.values()).most_common()),
        "end_points": dict(Counter(path[-1].activity for path in cases.values()).most_common()),
        "activities": dict(activities.most_common()),
        "kpis": kpis,
        "pain_points": cmap.pain_points(ALL),
        "timings": {
            "map_seconds": round(mapped - started, 3),
            "next_step_seconds": round(predicted - mapped, 3),
        },
    }
    return cmap, summary, flagged


def write_outputs(cmap: ContactMap, summary: dict, flagged: list, out: Path) -> dict[str, Path]:
    """Write the map files, kpis.json, cases.csv and summary.json; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = write_map_files(cmap, out)
    kpis_path = out / "kpis.json"
    kpis_path.write_text(
        json.dumps({"kpis": summary["kpis"], "pain_points": summary["pain_points"]}, indent=2)
        + "\n"
    )
    paths["kpis"] = kpis_path
    cases_path = out / "cases.csv"
    with cases_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CASE_COLUMNS)
        for case, path, reached in flagged:
            first, last = path[0], path[-1]
            writer.writerow(
                (
                    case,
                    len(path),
                    first.activity,
                    last.activity,
                    _iso(first.ts),
                    _iso(last.ts),
                    round(last.ts - first.ts, 3),
                    int(reached),
                )
            )
    paths["cases"] = cases_path
    paths["summary"] = out / "summary.json"
    return paths


def journey_map(path: Path, playbook: CompiledPlaybook) -> ContactMap:
    """The journey map of an events file, through the cores in file order and event time."""
    replay = Replay(playbook)
    latest = float("-inf")
    for event in event_file(path):
        latest = max(latest, event.ts.timestamp())
        replay.feed(event)
    replay.advance(latest)
    finished = (o for o in replay.outputs if type(o) is JourneyTransition)
    return map_of(finished, replay.in_flight())


def run(args: argparse.Namespace, console: Console) -> int:
    """The `replay` command: read, replay, write, print."""
    started = time.perf_counter()
    try:
        log = _read(args)
        read = time.perf_counter()
        with no_cyclic_gc():
            cmap, summary, flagged = replay(log, args.goal or ())
    except LogError as exc:
        console.print(f"[red]replay: {exc}[/]", soft_wrap=True, highlight=False)
        return 2
    if args.events is not None:
        # An events file replays through the cores, like the live flow: the map is
        # per journey (and all), from finished journeys, exactly as a run computes it.
        cmap = journey_map(args.events, load_compiled(args.playbook or playbook_path()))
        summary["map"] = "journeys of the playbook (finished journeys)"
        summary["journeys"] = {scope: cmap.kpis(scope) for scope in sorted(cmap.scopes)}
        if ALL in cmap.scopes:
            summary["kpis"] = cmap.kpis(ALL)
            summary["pain_points"] = cmap.pain_points(ALL)
    paths = write_outputs(cmap, summary, flagged, args.out)
    if cmap.scopes:
        title = f"Replay of {Path(summary['source']).name}"
        paths["report"] = write_report(cmap, summary, args.out / "report.html", title)
    summary["timings"]["read_seconds"] = round(read - started, 3)
    summary["run_seconds"] = round(time.perf_counter() - started, 3)
    summary["events_per_second"] = round(summary["events"] / max(summary["run_seconds"], 1e-9))
    summary["outputs"] = {name: str(path) for name, path in paths.items()}
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary, log, console)
    return 0


def _read(args: argparse.Namespace) -> ProcessLog:
    if (args.log is None) == (args.events is None):
        raise LogError("give either a process-mining CSV log or --events FILE (one of them)")
    if args.events is not None:
        log = read_event_file(args.events)
    else:
        columns = Columns(
            case=args.case_column,
            activity=args.activity_column,
            timestamp=args.timestamp_column,
            channel=args.channel_column or None,
            resource=args.resource_column or None,
            attributes=() if args.no_attributes else (tuple(args.attribute) or None),
        )
        log = read_process_log(
            args.log,
            columns,
            timezone=args.timezone,
            timestamp_format=args.timestamp_format,
            delimiter=args.delimiter,
            encoding=args.encoding,
        )
    if not log.events:
        detail = "; ".join(describe_skipped(log)) or "the file has no rows"
        raise LogError(f"no event of {log.source} could be read ({detail})")
    return log


def print_summary(summary: dict, log: ProcessLog, console: Console) -> None:
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
            console.print(line, soft_wrap=True, highlight=False)
    if summary["pain_points"]:
        console.print("[bold]pain points[/]")
        for point in summary["pain_points"][:5]:
            reasons = "; ".join(point["reasons"])
            console.print(f"  {point['where']}: {reasons}", soft_wrap=True, highlight=False)
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


# --------------------------------------------------------------------------- command line
DESCRIPTION = (
    "Replay a process-mining CSV event log (or --events, a JSON-lines file of events in "
    "the wire format) as customer journeys, in event time and without a broker: build the "
    "contact-point map and KPIs, measure next-step prediction prequentially against a "
    "first-order Markov and a back-off n-gram baseline, and write contact_map_edges.csv, "
    "contact_map.json, kpis.json, cases.csv and summary.json into --out. Timestamps may "
    "carry offsets; those without are UTC unless --timezone. Rows that cannot be read are "
    "skipped and counted."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
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
    reading.add_argument("--encoding", default="utf-8-sig", help="text encoding (default UTF-8)")


def add_replay_command(subparsers) -> None:
    """Add `replay` to the `wayfinder` sub-commands (its handler takes args and a console)."""
    parser = subparsers.add_parser(
        "replay",
        help="replay a process-mining log or an events file: map, KPIs, next-step accuracy",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.replay LOG --out DIR ...` (the same as `wayfinder replay`)."""
    parser = argparse.ArgumentParser(prog="wayfinder replay", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, Console())


if __name__ == "__main__":
    sys.exit(main())
