"""The `wayfinder` command, run as a user runs it: its arguments, what it prints, its exit
codes, and what it writes around the flow (summary, map files, models, report).

What the flow itself does is tested in this process, on bytewax's own entry points,
in tests/flow/; crash-and-resume runs are in test_recovery.py.
"""

import argparse
import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from flows.cli.main import build_parser
from flows.lab.simulator import SimulationConfig, simulate
from schemas.action import Action
from schemas.codec import BadInput, EventDecoder
from schemas.decision import Decision
from state.key_vault import VaultReader
from tests.e2e.cli import REPO, WAYFINDER, lines, run_failing, summary, wayfinder, wayfinder_fails
from tests.flow_helpers import (
    ENTRY_POINTS,
    comparable_outputs,
    file_lines,
    opened_inputs,
    run_embedded,
    simulated,
)
from tests.helpers import ev, stuck_transfer, wire

pytestmark = pytest.mark.e2e

SMALL = ["--customers", "300", "--hours", "24", "--seed", "11"]
#: Without the simulated customers' reactions: the input is exactly the simulation.
OPEN_LOOP = [*SMALL, "--no-reactions"]
#: A run that only has to exist (what the command does with it is the subject).
TINY = ["--customers", "60", "--hours", "6", "--seed", "3", "--no-progress"]


def test_sigusr1_writes_where_every_thread_is_and_the_run_goes_on(tmp_path):
    """`kill -USR1` on a run that seems stuck: each thread's stack on stderr, at once
    (even inside a client library's call, where no Python handler runs), and the run
    ends as it would have."""
    out = tmp_path / "out"
    args = ["run", "--customers", "800", "--hours", "24", "--seed", "4", "--no-progress"]
    process = subprocess.Popen(
        [WAYFINDER, *args, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        transitions = out / "journeys.jsonl"  # (written batch by batch: the run is under way)
        deadline = time.monotonic() + 120
        while not (transitions.exists() and transitions.stat().st_size > 0):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run wrote nothing in 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGUSR1)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "most recent call first" in stderr and "flows/" in stderr, stderr[-3000:]
    assert summary(out)["events"] > 0 and "Wayfinder run" in stdout


def test_embedded_run_writes_topic_files_summary_and_paths(tmp_path):
    out = tmp_path / "out"
    stdout = wayfinder("run", *OPEN_LOOP, "--out", str(out))

    records = [raw for _ts, raw in simulate(SimulationConfig(customers=300, hours=24, seed=11))]
    decoder = EventDecoder()
    known = set()
    for raw in records:
        with contextlib.suppress(BadInput):
            known.add(decoder.decode(raw).customer_id)
    result = summary(out)
    assert result["events"] == len(records)
    assert result["customers"] == len(known - {None}) > 250
    # The simulation redelivers nothing (an event that waits for a login's answer, and is
    # folded after it, is no duplicate).
    assert result["duplicates"] == 0
    dead = lines(out / "dlq.jsonl")
    assert sum(result["dead_letters"].values()) == len(dead) > 0
    assert sum(result["decisions"].values()) == len(lines(out / "decisions.jsonl")) > 0
    # An action topic carries the actions pushed and the answers to decision requests.
    by_channel = {
        path.name.removeprefix("actions.").removesuffix(".jsonl"): lines(path)
        for path in out.glob("actions.*.jsonl")
    }
    answered = {
        channel: sum(result[kind].get(channel, 0) for kind in ("actions", "replies"))
        + result["no_action_replies"].get(channel, 0)
        for channel in by_channel
    }
    assert answered == {ch: len(actions) for ch, actions in by_channel.items()}
    chat = [msgspec.json.decode(raw, type=Action) for raw in by_channel["chat"]]
    assert chat and all(a.action == "priority_agent" for a in chat)
    assert result["actions"]["chat"] == len(chat)
    transitions = lines(out / "journeys.jsonl")
    assert sum(result["transitions"].values()) + result["intent_changes"] == len(transitions)
    assert result["intent_changes"] > 0
    assert sum(result["audience_changes"].values()) == len(lines(out / "audiences.jsonl")) > 0
    for name in ("events", "customers", "actions sent on chat", "dead letters", "summary.json"):
        assert name in stdout
    assert str(out / "actions.chat.jsonl") in stdout
    for name in ("models", "contact map", "report"):
        assert Path(result["outputs"][name]).exists(), name


def test_run_refuses_an_out_folder_holding_an_earlier_run_unless_told_to_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "decisions.jsonl"
    earlier.write_bytes(b'{"decision_id":"from an earlier run"}\n')
    notes = out / "notes.txt"  # not a run's file: never touched
    notes.write_text("mine")

    status, said = wayfinder_fails("run", *TINY, "--out", str(out))
    assert status == 2
    assert f"{out} holds an earlier run's files (decisions.jsonl)" in said
    assert "--overwrite" in said
    assert earlier.read_bytes() == b'{"decision_id":"from an earlier run"}\n'

    wayfinder("run", *TINY, "--out", str(out), "--overwrite")
    assert b"from an earlier run" not in earlier.read_bytes()
    assert summary(out)["events"] > 0
    assert notes.read_text() == "mine"


def test_resumed_run_continues_from_the_snapshot_without_repeating_outputs(tmp_path):
    events = tmp_path / "events.jsonl"
    first = stuck_transfer(customer="cust-R", transfer="tx-R")
    events.write_bytes(b"\n".join(wire(e) for e in first) + b"\n")
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    args = ["run", "--events", str(events), "--out", str(out), "--no-progress"]
    args += ["--recovery-dir", str(recovery), "--snapshot-interval", "0.2"]

    wayfinder(*args)
    assert len(lines(out / "actions.chat.jsonl")) == 1

    # More events arrive in the file; the resumed run folds only those, into the
    # recovered context, and keeps the first run's outputs exactly once.
    later = ev("chat_started", "chat", minutes=55, customer="cust-R", touchpoint="chat_support")
    with events.open("ab") as f:
        f.write(wire(later) + b"\n")
    wayfinder(*args)
    assert summary(out)["events"] == 1
    actions = [msgspec.json.decode(r, type=Action) for r in lines(out / "actions.chat.jsonl")]
    assert [a.trigger_event_id for a in actions] == [first[-1].event_id, later.event_id]


def test_schema_command_exports_one_json_schema_per_topic(tmp_path):
    wayfinder("schema", "--out", str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    topics = ["actions", "analytics", "audiences", "decisions", "decisions.inputs", "dlq"]
    topics += ["events", "journeys", "models.examples"]
    assert names == sorted(f"{t}.schema.json" for t in topics)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand of `wayfinder`, by name, from the parser the command builds."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands: dict[str, argparse.ArgumentParser] = sub.choices
    return commands


def help_entries(text: str) -> dict[frozenset[str], str]:
    """The argument entries of a --help text: {the names the entry gives (option strings,
    or a positional's name): its help, on one line}."""
    entries: dict[frozenset[str], str] = {}
    names: frozenset[str] | None = None
    for line in text.splitlines():
        if re.match(r"^  \S", line):  # "  -o, --out OUT   help...": a new entry
            head, _, rest = line.strip().partition("  ")
            names = frozenset(part.split()[0] for part in head.split(", "))
            entries[names] = rest.strip()
        elif names is not None and line.startswith("   "):  # its help, continued
            entries[names] = f"{entries[names]} {line.strip()}".strip()
        else:
            names = None
    return entries


def says_its_default(action: argparse.Action) -> bool:
    """An argument with a default worth saying: not a flag, not empty, not required.
    (A default of 0 is a default: compared by identity, not equality with False.)"""
    default = action.default
    if default is None or default is False or default is argparse.SUPPRESS or action.required:
        return False
    if isinstance(default, list | tuple) and not default:
        return False
    return bool(action.option_strings) or action.nargs in ("?", "*")


def test_every_subcommand_has_help_that_gives_each_option_and_its_default():
    commands = subcommands()
    assert {"run", "simulate", "replay", "rerun", "shadow", "topics", "schema"} <= set(commands)
    wide = {**os.environ, "COLUMNS": "200"}  # no help wrapped in the middle of a default
    listed = wayfinder("--help", env=wide)
    for name in commands:
        assert re.search(rf"^    {re.escape(name)}\s", listed, re.MULTILINE), name
    problems = []
    for name, parser in commands.items():
        text = wayfinder(name, "--help", env=wide)
        assert text.startswith(f"usage: wayfinder {name}"), name
        entries = help_entries(text)
        for action in parser._actions:
            names = frozenset(action.option_strings or [str(action.metavar or action.dest)])
            said = entries.get(names)
            if said is None:
                problems.append(f"wayfinder {name} --help does not list {sorted(names)}")
            elif says_its_default(action) and not (
                "default" in said and str(action.default) in said
            ):
                problems.append(
                    f"wayfinder {name} --help: {sorted(names)} does not say its default "
                    f"{action.default!r}: {said!r}"
                )
    assert problems == []


def test_importing_the_cli_loads_neither_the_flow_nor_the_models_libraries():
    """`wayfinder --help` imports the CLI and builds every parser: none of that may load
    the dataflow's or the models' libraries (they take seconds to import)."""
    heavy = ("bytewax", "confluent_kafka", "kafka", "river", "scipy", "numpy", "rocksdict")
    probe = (
        "import sys, json, flows.cli\n"
        "from flows.cli.main import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "flows" in loaded and "argparse" in loaded  # the probe did import the CLI
    assert sorted(loaded & set(heavy)) == []


def test_make_run_is_the_readme_command(tmp_path: Path):
    out = tmp_path / "out"
    done = subprocess.run(
        ["make", "run", f"RUN_ARGS=--customers 200 --hours 6 --out {out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert 150 < summary(out)["customers"] <= 200
    assert "Wayfinder run" in done.stdout


def test_replay_of_an_events_file_gives_the_map_the_run_gives(tmp_path):
    """Same events, same map. (Identified customers' events: a device's anonymous events
    forwarded through the loop reach the run's customer a little later than the replay's,
    which can change the path an open journey shows at the end.)"""
    simulated = tmp_path / "simulated.jsonl"
    wayfinder("simulate", *SMALL, "--out", str(simulated))
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(line for line in simulated.open("rb") if b'"customer_id"' in line))
    run, replay = tmp_path / "run", tmp_path / "replay"
    wayfinder("run", "--events", str(events), "--out", str(run), "--no-progress")
    wayfinder("replay", "--events", str(events), "--out", str(replay))
    ran = (run / "contact_map.json").read_bytes()
    assert b"money_transfer" in ran
    assert (replay / "contact_map.json").read_bytes() == ran
    assert (replay / "contact_map_edges.csv").read_bytes() == (
        run / "contact_map_edges.csv"
    ).read_bytes()
    assert (run / "report.html").exists() and (replay / "report.html").exists()


@pytest.fixture
def recorded_run(tmp_path: Path) -> Path:
    """An embedded run's folder with decision inputs (run in this process)."""
    out = tmp_path / "recorded"
    run_embedded(ENTRY_POINTS["run_main"], simulated(150, 24, 11), out)
    return out


def test_rerun_reports_every_decision_explains_one_and_names_what_it_cannot_find(
    recorded_run, tmp_path
):
    report_file = tmp_path / "rerun.json"
    args = ["--out", str(recorded_run)]
    stdout = wayfinder("rerun", "--all", "--latest", *args, "--json", str(report_file))
    report = json.loads(report_file.read_text())
    assert (
        report["decisions"] == report["identical"] == len(lines(recorded_run / "decisions.jsonl"))
    )
    assert report["differ"] == [] and report["missing"] == []
    assert "propensity@" in report["latest_version"] and "identical" in stdout

    asked = next(
        msgspec.json.decode(r, type=Decision)
        for r in lines(recorded_run / "decisions.jsonl")
        if b"xpected response" in r and b'"outcome":"sent"' in r
    )
    shown = " ".join(wayfinder("rerun", asked.decision_id, *args).split())  # any width
    assert f"models {asked.model_version}" in shown
    assert "re-run with the same versions: identical" in shown

    status, said = wayfinder_fails("rerun", "dec-unknown", *args)
    assert status == 1 and "no recorded input for decision dec-unknown" in said


def test_rerun_skips_and_counts_records_that_are_not_records_of_their_topic(recorded_run, tmp_path):
    """A topic is written by whoever may write to it: a stray record stops no re-run."""
    with (recorded_run / "decisions.jsonl").open("ab") as out:
        out.write(b'{"decision_id": 7}\n[[[[[[[[\n')
    with gzip.open(recorded_run / "models.examples.jsonl.gz", "ab") as out:
        out.write(b'"not a batch"\n')
    with gzip.open(recorded_run / "decisions.inputs.jsonl.gz", "ab") as out:
        out.write(b"\xff\xfe\n")
    report_file = tmp_path / "rerun.json"
    stdout = wayfinder("rerun", "--all", "--out", str(recorded_run), "--json", str(report_file))
    report = json.loads(report_file.read_text())
    assert report["unreadable"] == {"decisions": 2, "models.examples": 1, "decisions.inputs": 1}
    assert report["decisions"] == report["identical"] > 0 and report["differ"] == []
    assert "skipped 2 records of decisions" in " ".join(stdout.split())


def test_rerun_refuses_a_run_made_with_no_decision_inputs(tmp_path):
    bare = tmp_path / "bare"
    wayfinder("run", *TINY, "--no-decision-inputs", "--out", str(bare))
    assert lines(bare / "decisions.jsonl") and not (bare / "decisions.inputs.jsonl.gz").exists()
    status, said = wayfinder_fails("rerun", "--all", "--out", str(bare))
    assert status == 2 and "decisions.inputs.jsonl does not exist" in said
    assert "--no-decision-inputs" in said


def test_run_with_a_challenger_writes_the_shadow_report(tmp_path):
    challenger = tmp_path / "challenger.toml"
    challenger.write_text(
        (REPO / "flows" / "playbook.toml")
        .read_text()
        .replace("holdout_share = 0.05", "holdout_share = 0.3")
    )
    out = tmp_path / "out"
    stdout = wayfinder("run", *TINY, "--out", str(out), "--challenger", str(challenger))
    report = json.loads((out / "shadow_report.json").read_text())
    assert report["triggers"] > 0 and lines(out / "decisions.shadow.jsonl")
    assert report["versions"]["champion"] != report["versions"]["challenger"]
    said = " ".join(stdout.split())
    assert f"challenger vs champion: {report['different_action']:,} of" in said
    assert summary(out)["outputs"]["shadow report"] == str(out / "shadow_report.json")


def test_outputs_do_not_depend_on_the_hash_seed(tmp_path):
    """Two runs of the same input in processes with different PYTHONHASHSEED (set and
    iteration orders differ) record the same decision inputs (opened: each run makes its
    customers' keys anew) and the same outputs."""
    runs = []
    for seed in ("1", "2"):
        out = tmp_path / f"hashseed-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        sim = ["--customers", "150", "--hours", "24", "--seed", "11"]
        wayfinder("run", *sim, "--out", str(out), "--no-progress", env=env)
        runs.append(out)
    first, second = (
        opened_inputs(file_lines(out / "decisions.inputs.jsonl.gz"), out / "keys") for out in runs
    )
    assert len(first) > 100 and first == second
    assert comparable_outputs(runs[0]) == comparable_outputs(runs[1])


def test_shadow_command_compares_on_a_replayed_log(tmp_path):
    challenger = tmp_path / "challenger.toml"
    challenger.write_text(
        (REPO / "flows" / "playbook.toml").read_text().replace("value = 100.0", "value = 1.0")
    )
    events = tmp_path / "events.jsonl"
    wayfinder("simulate", *SMALL, "--out", str(events))
    out = tmp_path / "shadow"
    wayfinder("shadow", "--challenger", str(challenger), "--events", str(events), "--out", str(out))
    report = json.loads((out / "shadow_report.json").read_text())
    assert report["violations"] == {"champion": 0, "challenger": 0}
    assert (
        report["triggers"] > 0
        and report["versions"]["champion"] != report["versions"]["challenger"]
    )


def test_evaluate_writes_every_policy_and_the_true_intent_ablation(tmp_path):
    target = tmp_path / "evaluation.json"
    stdout = wayfinder("evaluate", "--customers", "120", "--hours", "48", "--json", str(target))
    document = json.loads(target.read_text())
    assert set(document["policies"]) == {"learned", "rules", "random", "oracle"}
    for name, result in document["policies"].items():
        assert {"reward", "goals_reached", "customers", "violations"} <= set(result), name
        assert result["customers"] == 120
        assert result["violations"] == 0, (name, result["violations_by_policy"])
    assert 0.0 <= document["policies"]["learned"]["intent_accuracy"] <= 1.0
    told = document["diagnostics"]["learned_true_intent"]
    assert told["intent_accuracy"] == 1.0
    assert told["models"]["propensity"]["examples"] > 0  # it learns what it is not told
    rules = document["policies"]["rules"]["reward"]
    assert document["ratios"]["learned_vs_rules"] == round(
        document["policies"]["learned"]["reward"] / rules, 3
    )
    assert "learned / rules-only reward" in stdout and "told the true intent" in stdout


def test_customer_prints_their_context_view_with_the_latest_decisions_and_why(recorded_run):
    """`wayfinder customer ID` reads the view the run kept: the customer with the most
    decisions, whose five latest are those of the decisions topic, with their reasons."""
    decided: dict[str, list[Decision]] = {}
    for raw in lines(recorded_run / "decisions.jsonl"):
        decision = msgspec.json.decode(raw, type=Decision)
        decided.setdefault(decision.customer, []).append(decision)
    vault = VaultReader(recorded_run / "keys")
    try:
        known = {p: vault.customer(p) for p in decided}
    finally:
        vault.close()
    pseudonym = max(
        (p for p, who in known.items() if who and not who.startswith("anon:")),
        key=lambda p: len(decided[p]),
    )
    customer = known[pseudonym]
    assert customer is not None and len(decided[pseudonym]) > 5
    latest = sorted(decided[pseudonym], key=lambda d: d.created_at, reverse=True)[:5]

    view = json.loads(wayfinder("customer", customer, "--out", str(recorded_run), "--json"))
    assert view["customer"] == pseudonym and view["id"] == customer and view["known"]
    assert sorted((d["at"], d["outcome"]) for d in view["decisions"]) == sorted(
        (d.created_at.timestamp(), d.outcome) for d in latest
    )
    text = wayfinder("customer", customer, "--out", str(recorded_run))
    assert customer in text and "view written" in text and "Latest decisions" in text
    for decision in view["decisions"]:
        assert all(reason in text for reason in decision["reasons"])
    for journey in view["journeys"]:
        assert f"{journey['journey']}: {journey['status']}" in text
    done = run_failing("customer", "nobody-at-all", "--out", str(recorded_run))
    assert done.returncode == 1 and "no customer 'nobody-at-all'" in done.stdout + done.stderr
