"""`wayfinder replay` on real and generated process-mining logs, checked against an
independent offline computation of the same log with pandas (a test-only oracle that
shares no code with the product)."""

import csv
import json
import random
import subprocess
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.e2e.cli import WAYFINDER, wayfinder
from tests.helpers import ev, shared_dataset, wire

pytestmark = pytest.mark.e2e

EDGE_HEADER = "scope,source,target,count,mean_seconds,p50_seconds,p90_seconds,goal_rate"
REQUIRED: tuple[str, ...] = ("cases", "events", "contact_points", "next_step_accuracy")
REQUIRED += ("markov1_accuracy", "ngram_accuracy")
START, END = "__start__", "__end__"


# --------------------------------------------------------------------------- the oracle
class Oracle:
    """Directly-follows graph, start/end activities and case durations of a log, by pandas."""

    def __init__(
        self,
        path: Path,
        *,
        case: str = "case:concept:name",
        activity: str = "concept:name",
        timestamp: str = "time:timestamp",
        sep: str = ",",
        goals: tuple[str, ...] = (),
    ) -> None:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        df["row"] = range(len(df))
        df["ts"] = pd.to_datetime(df[timestamp], format="ISO8601", utc=True, errors="coerce")
        readable = df["ts"].notna() & (df[case].str.strip() != "")
        readable &= df[activity].str.strip() != ""
        self.skipped = int((~readable).sum())
        df = df[readable].sort_values(["ts", "row"], kind="stable")
        df = df.rename(columns={case: "case", activity: "activity"})
        self.events = len(df)
        self.activities = df["activity"].nunique()
        grouped = df.groupby("case", sort=False)
        self.cases = grouped.ngroups
        firsts, lasts = grouped["activity"].first(), grouped["activity"].last()
        self.starts = dict(Counter(firsts))
        self.ends = dict(Counter(lasts))
        span = grouped["ts"].agg(["min", "max"])
        self.durations = ((span["max"] - span["min"]).dt.total_seconds()).to_dict()

        df["next"] = grouped["activity"].shift(-1)
        df["wait"] = (grouped["ts"].shift(-1) - df["ts"]).dt.total_seconds()
        inner = df[df["next"].notna()]
        self.ties = int((inner["wait"] == 0).sum())  # steps in the same instant as the last
        pairs = pd.DataFrame(
            {
                "case": pd.concat(
                    [firsts.index.to_series(), inner["case"], lasts.index.to_series()]
                ),
                "source": [START] * len(firsts) + list(inner["activity"]) + list(lasts),
                "target": list(firsts) + list(inner["next"]) + [END] * len(lasts),
                "wait": [0.0] * len(firsts) + list(inner["wait"]) + [0.0] * len(lasts),
            }
        )
        if not goals:  # the activity that most often ends cases (ties: first by name)
            ends = pd.Series(self.ends)
            goals = (min(ends[ends == ends.max()].index),)
        self.goals = sorted(goals)
        reached = grouped["activity"].agg(lambda acts: bool(set(acts) & set(goals)))
        self.goal_reached = int(reached.sum())
        pairs["goal"] = pairs["case"].map(reached)
        by_edge = pairs.groupby(["source", "target"])
        distinct = pairs.drop_duplicates(["case", "source", "target"]).groupby(["source", "target"])
        self.counts = by_edge.size().to_dict()
        self.mean_waits = by_edge["wait"].mean().to_dict()
        self.goal_rates = (distinct["goal"].sum() / distinct.size()).to_dict()


def read_edges(out: Path) -> list[dict[str, str]]:
    text = (out / "contact_map_edges.csv").read_text()
    assert text.splitlines()[0] == EDGE_HEADER
    return list(csv.DictReader(text.splitlines()))


def assert_matches_oracle(out: Path, oracle: Oracle) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert all(key in summary for key in REQUIRED), sorted(summary)
    for key in ("next_step_accuracy", "markov1_accuracy", "ngram_accuracy"):
        assert 0.0 <= summary[key] <= 1.0

    # the directly-follows counts, edge for edge, __start__ and __end__ edges included
    edges = read_edges(out)
    assert {row["scope"] for row in edges} == {"all"}
    counts = {(row["source"], row["target"]): int(row["count"]) for row in edges}
    assert counts == oracle.counts
    for row in edges:
        edge = (row["source"], row["target"])
        assert float(row["mean_seconds"]) == pytest.approx(oracle.mean_waits[edge], abs=2e-3)
        assert float(row["goal_rate"]) == pytest.approx(oracle.goal_rates[edge], abs=1e-4)

    # cases, events, contact points, start and end contact points, the goal
    assert summary["cases"] == oracle.cases
    assert summary["events"] == oracle.events
    assert summary["contact_points"] == oracle.activities
    assert summary["skipped_rows"] == oracle.skipped
    starts = {row["target"]: int(row["count"]) for row in edges if row["source"] == START}
    ends = {row["source"]: int(row["count"]) for row in edges if row["target"] == END}
    assert starts == summary["start_points"] == oracle.starts
    assert ends == summary["end_points"] == oracle.ends
    assert summary["goal"] == oracle.goals
    kpis = summary["kpis"]
    assert kpis["started"] == oracle.cases and kpis["events"] == oracle.events
    assert kpis["goal_reached"] == oracle.goal_reached

    # case durations: mean (the map's KPI) and max, and each case's own
    durations = summary["case_duration_seconds"]
    assert durations["mean"] == pytest.approx(
        sum(oracle.durations.values()) / oracle.cases, abs=2e-3
    )
    assert durations["max"] == pytest.approx(max(oracle.durations.values()), abs=2e-3)
    with (out / "cases.csv").open(newline="") as f:
        per_case = {row["case"]: float(row["duration_seconds"]) for row in csv.DictReader(f)}
    assert per_case.keys() == oracle.durations.keys()
    for case, seconds in per_case.items():
        assert seconds == pytest.approx(oracle.durations[case], abs=2e-3), case
    return summary


# --------------------------------------------------------------------------- receipt.csv
def test_replay_of_receipt_equals_the_oracle_and_beats_the_baselines(tmp_path):
    receipt = shared_dataset("receipt.csv")
    out = tmp_path / "out"
    stdout = wayfinder("replay", str(receipt), "--out", str(out))

    summary = assert_matches_oracle(out, Oracle(receipt))
    assert (summary["cases"], summary["events"], summary["contact_points"]) == (1434, 8577, 27)
    assert summary["skipped_rows"] == 0
    assert summary["next_step_accuracy"] > summary["markov1_accuracy"]
    assert summary["next_step_accuracy"] > summary["ngram_accuracy"]
    assert summary["run_seconds"] > 0
    assert summary["pain_points"] == json.loads((out / "kpis.json").read_text())["pain_points"]
    # the command says which goal it used, and where it wrote
    assert summary["goal"] == ["T10 Determine necessity to stop indication"]
    assert "T10 Determine necessity to stop indication" in stdout
    for name in ("contact_map_edges.csv", "summary.json"):
        assert str(out / name) in stdout


# --------------------------------------------------------------------------- a log of another shape
ACTIVITIES = {
    "Ticket logged": [("Triage", 1.0)],
    "Triage": [("Assign L1", 0.7), ("Assign L2", 0.2), ("Close ticket", 0.1)],
    "Assign L1": [("L1 analysis", 1.0)],
    "L1 analysis": [("Resolve", 0.5), ("Ask requester", 0.25), ("Assign L2", 0.25)],
    "Ask requester": [("Requester answered", 0.8), ("Close ticket", 0.2)],
    "Requester answered": [("L1 analysis", 0.7), ("L2 analysis", 0.3)],
    "Assign L2": [("L2 analysis", 1.0)],
    "L2 analysis": [("Resolve", 0.6), ("Ask requester", 0.3), ("Assign L1", 0.1)],
    "Resolve": [("Close ticket", 0.8), ("Reopen", 0.2)],
    "Reopen": [("Triage", 1.0)],
}


def generate_helpdesk_log(path: Path, *, seed: int, tickets: int) -> int:
    """A help-desk log with its own column names, ';' separated, naive timestamps in two
    ISO layouts, ties within cases, cases interleaved and a few unreadable rows; returns
    how many rows are unreadable."""
    rng = random.Random(seed)
    t0 = datetime(2023, 1, 9, 8, 0)  # no daylight-saving change in the span (naive = UTC)
    rows: list[tuple[str, str, datetime, str, str, str]] = []
    for n in range(tickets):
        at = t0 + timedelta(minutes=rng.uniform(0, 60 * 24 * 40))
        priority = rng.choice(["P1", "P2", "P3"])
        medium = rng.choice(["Portal", "Phone", "Mail"])
        activity = "Ticket logged"
        for _ in range(40):
            agent = f"agent{rng.randrange(12)}"
            rows.append((f"HD-{n:05d}", activity, at, medium, agent, priority))
            if activity == "Close ticket":
                break
            choices, weights = zip(*ACTIVITIES[activity], strict=True)
            activity = rng.choices(choices, weights)[0]
            if rng.random() < 0.15:
                medium = rng.choice(["Portal", "Phone", "Mail"])
            # a quarter of steps happen in the same second as the one before (ties)
            if rng.random() >= 0.25:
                at += timedelta(
                    seconds=rng.randint(1, 3 * 86400), microseconds=rng.randrange(3) * 1000
                )
    rng.shuffle(rows)  # cases interleaved, steps out of order in the file
    lines = ["Ticket ID;Action;Logged At;Source;Handler;Priority;Region"]
    for ticket, activity, at, medium, agent, priority in rows:
        stamp = at.strftime("%Y-%m-%d %H:%M:%S") if at.microsecond == 0 else at.isoformat()
        lines.append(f"{ticket};{activity};{stamp};{medium};{agent};{priority};R{len(ticket) % 3}")
    bad = ["HD-99991;Triage;n/a;Phone;agent1;P1;R1", "HD-00001;Triage;;Phone;agent1;P1;R1"]
    for i, line in enumerate(bad):
        lines.insert(10 + 50 * i, line)
    path.write_text("\n".join(lines) + "\n")
    return len(bad)


def test_replay_of_a_differently_shaped_log_with_mapping_flags_equals_the_oracle(tmp_path):
    log = tmp_path / "helpdesk.csv"
    unreadable = generate_helpdesk_log(log, seed=20240611, tickets=400)
    out = tmp_path / "out"
    goals = ("Resolve", "Requester answered")  # either one counts
    stdout = wayfinder(
        "replay",
        str(log),
        "--out",
        str(out),
        "--case-column",
        "Ticket ID",
        "--activity-column",
        "Action",
        "--timestamp-column",
        "Logged At",
        "--channel-column",
        "Source",
        "--resource-column",
        "Handler",
        "--attribute",
        "Priority",
        "--goal",
        goals[0],
        "--goal",
        goals[1],
    )
    oracle = Oracle(
        log, case="Ticket ID", activity="Action", timestamp="Logged At", sep=";", goals=goals
    )
    summary = assert_matches_oracle(out, oracle)
    assert oracle.skipped == summary["skipped_rows"] == unreadable
    assert oracle.ties > 100  # file order decides those
    assert str(unreadable) in stdout and "unreadable timestamp" in stdout
    assert summary["cases"] == 400
    assert summary["columns"]["channel"] == "Source"
    assert summary["model_attributes"] == ["Source", "Handler", "Priority"]
    # the channel column gives channel switches along the way
    assert summary["kpis"]["channel_switches"] > 0


def test_replay_says_what_is_wrong_with_a_log_it_cannot_read(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("Case,Step,When\nA,x,2024-01-01 10:00\n")
    done = subprocess.run(
        [WAYFINDER, "replay", str(log)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "--case-column" in done.stdout + done.stderr


# --------------------------------------------------------------------------- our own events
def test_replay_of_an_events_file_reads_customers_cases_as_the_oracle_does(tmp_path):
    """The events file's customers are the cases the next-step models are measured on.

    (Its map is the journeys', as a run computes it: see test_cli's replay test.)
    """
    rng = random.Random(7)
    touchpoints = ["home", "plans", "checkout", "ivr_sales", "chat_support", None]
    events = []
    for n in range(150):
        known = rng.random() < 0.8
        minutes = rng.uniform(0, 600)
        for _ in range(rng.randint(1, 8)):
            channel = rng.choice(["web", "app", "ivr", "chat"])
            events.append(
                ev(
                    "page_view" if channel in {"web", "app"} else "contact",
                    channel,
                    minutes=minutes,
                    customer=f"cust-{n}" if known else None,
                    anon=None if known else f"dev-{n}",
                    touchpoint=rng.choice(touchpoints),
                )
            )
            minutes += rng.choice([0, rng.uniform(0.1, 90)])  # ties too
    rng.shuffle(events)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(wire(e) for e in events) + b"\n")
    out = tmp_path / "out"
    wayfinder("replay", "--events", str(path), "--out", str(out), "--goal", "checkout")

    # the oracle reads the JSON lines with pandas and goes through a CSV of its own
    df = pd.read_json(path, lines=True, dtype=False)
    df["case"] = df["customer_id"].fillna("anon:" + df["anonymous_id"].fillna(""))
    df["touchpoint"] = df["touchpoint"].fillna("")
    flat = tmp_path / "flat.csv"
    df[["case", "touchpoint", "ts"]].to_csv(flat, index=False)
    oracle = Oracle(flat, case="case", activity="touchpoint", timestamp="ts", goals=("checkout",))
    summary = json.loads((out / "summary.json").read_text())
    assert all(key in summary for key in REQUIRED), sorted(summary)
    assert (summary["cases"], summary["events"]) == (oracle.cases, oracle.events)
    assert summary["contact_points"] == oracle.activities
    assert summary["start_points"] == oracle.starts and summary["end_points"] == oracle.ends
    assert summary["skipped"] == {"no touchpoint": oracle.skipped} and oracle.skipped > 0
