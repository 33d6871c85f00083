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

import csv
import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.analysis.process_log import (
    Columns,
    LogError,
    LogEvent,
    ProcessLog,
    describe_skipped,
    no_cyclic_gc,
    read_event_file,
    read_process_log,
)
from flows.analysis.report import write_report
from flows.runtime.map_files import write_map_files
from operators.analytics import map_of
from operators.contact_map import ALL, ContactMap, Step
from operators.next_step import default_models, prequential
from operators.playbook import CompiledPlaybook
from operators.replay import Replay
from schemas.codec import event_file
from schemas.journey import JourneyTransition

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


#: A case, its events, and whether it reached the goal.
Flagged = tuple[str, list[LogEvent], bool]


def build_map(
    cases: dict[str, list[LogEvent]], goals: frozenset[str], *, partners: bool = False
) -> tuple[ContactMap, list[Flagged]]:
    """The contact-point map of the cases (scope `all`), and each case's goal flag."""
    cmap = ContactMap()
    flagged: list[Flagged] = []
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


def replay(
    log: ProcessLog, goals: Sequence[str] = ()
) -> tuple[ContactMap, dict[str, Any], list[Flagged]]:
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


def write_outputs(
    cmap: ContactMap, summary: dict[str, Any], flagged: list[Flagged], out: Path
) -> dict[str, Path]:
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


def read_log(
    log: Path | None,
    events: Path | None,
    columns: Columns,
    *,
    timezone: str | None = None,
    timestamp_format: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
) -> ProcessLog:
    """A process-mining CSV log, or (`events`) a JSON-lines file of our events, as a log."""
    if (log is None) == (events is None):
        raise LogError("give either a process-mining CSV log or --events FILE (one of them)")
    if events is not None:
        read = read_event_file(events)
    else:
        assert log is not None
        read = read_process_log(
            log,
            columns,
            timezone=timezone,
            timestamp_format=timestamp_format,
            delimiter=delimiter,
            encoding=encoding,
        )
    if not read.events:
        detail = "; ".join(describe_skipped(read)) or "the file has no rows"
        raise LogError(f"no event of {read.source} could be read ({detail})")
    return read


def replay_files(
    log: ProcessLog,
    out: Path,
    *,
    goals: Sequence[str] = (),
    events: Path | None = None,
    playbook: CompiledPlaybook | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Replay `log` and write everything into `out`; return the summary written.

    An events file (`events`, with its `playbook`) replays through the cores, like the
    live flow: its map is per journey (and all), from finished journeys, exactly as a
    run computes it.
    """
    started = time.perf_counter() if started is None else started
    read = time.perf_counter()
    with no_cyclic_gc():
        cmap, summary, flagged = replay(log, goals)
    if events is not None and playbook is not None:
        cmap = journey_map(events, playbook)
        summary["map"] = "journeys of the playbook (finished journeys)"
        summary["journeys"] = {scope: cmap.kpis(scope) for scope in sorted(cmap.scopes)}
        if ALL in cmap.scopes:
            summary["kpis"] = cmap.kpis(ALL)
            summary["pain_points"] = cmap.pain_points(ALL)
    paths = write_outputs(cmap, summary, flagged, out)
    if cmap.scopes:
        title = f"Replay of {Path(summary['source']).name}"
        paths["report"] = write_report(cmap, summary, out / "report.html", title)
    summary["timings"]["read_seconds"] = round(read - started, 3)
    summary["run_seconds"] = round(time.perf_counter() - started, 3)
    summary["events_per_second"] = round(summary["events"] / max(summary["run_seconds"], 1e-9))
    summary["outputs"] = {name: str(path) for name, path in paths.items()}
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary
