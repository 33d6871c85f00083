"""The README commands, run as a user runs them."""

import contextlib
import json
import subprocess
from pathlib import Path

import msgspec
import pytest

from flows.lab.simulator import SimulationConfig, simulate
from schemas.action import Action
from schemas.codec import BadInput, EventDecoder
from schemas.deadletter import DeadLetter
from schemas.decision import Decision
from tests.e2e.cli import REPO, WAYFINDER, lines, summary, wayfinder
from tests.helpers import ev, stuck_transfer, wire

pytestmark = pytest.mark.e2e

SMALL = ["--customers", "300", "--hours", "24", "--seed", "11"]
#: Without the simulated customers' reactions: the input is exactly the simulation.
OPEN_LOOP = [*SMALL, "--no-reactions"]


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
    dead = lines(out / "dlq.jsonl")
    assert sum(result["dead_letters"].values()) == len(dead) > 0
    assert sum(result["decisions"].values()) == len(lines(out / "decisions.jsonl")) > 0
    by_channel = {
        path.name.removeprefix("actions.").removesuffix(".jsonl"): lines(path)
        for path in out.glob("actions.*.jsonl")
    }
    assert result["actions"] == {ch: len(actions) for ch, actions in by_channel.items()}
    chat = [msgspec.json.decode(raw, type=Action) for raw in by_channel["chat"]]
    assert chat and all(a.action == "priority_agent" for a in chat)
    transitions = lines(out / "journeys.jsonl")
    assert sum(result["transitions"].values()) + result["intent_changes"] == len(transitions)
    assert result["intent_changes"] > 0
    assert sum(result["audience_changes"].values()) == len(lines(out / "audiences.jsonl")) > 0
    for name in ("events", "customers", "actions on chat", "dead letters", "summary.json"):
        assert name in stdout
    assert str(out / "actions.chat.jsonl") in stdout


def test_run_on_an_events_file_dead_letters_bad_lines(tmp_path):
    good = stuck_transfer(customer="cust-F", transfer="tx-F")
    bad = [b'{"event_id": "broken"', b'{"event_id":"n1","ts":"2026-03-02T12:00:00Z"}', b"\xff\xfe"]
    body = [wire(good[0]), bad[0], *[wire(e) for e in good[1:3]], bad[1], b"", bad[2]]
    body += [wire(e) for e in good[3:]]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(body) + b"\n")
    out = tmp_path / "out"

    wayfinder("run", "--events", str(events), "--out", str(out), "--no-progress")

    (action,) = [msgspec.json.decode(r, type=Action) for r in lines(out / "actions.chat.jsonl")]
    assert action.customer_id == "cust-F"
    assert action.trigger_event_id == good[-1].event_id
    letters = [msgspec.json.decode(r, type=DeadLetter) for r in lines(out / "dlq.jsonl")]
    assert [(d.raw, d.offset) for d in letters] == [(bad[0], 2), (bad[1], 5), (bad[2], 7)]
    assert [d.reason for d in letters] == ["malformed_json", "invalid_event", "invalid_utf8"]
    assert summary(out)["events"] == len(good) + len(bad)


def test_same_input_gives_the_same_outputs_with_more_workers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    wayfinder("run", *OPEN_LOOP, "--out", str(one), "--no-progress")
    wayfinder("run", *OPEN_LOOP, "--out", str(two), "--no-progress", "--workers", "2")
    assert sorted(p.name for p in one.glob("*.jsonl")) == sorted(
        p.name for p in two.glob("*.jsonl")
    )
    # What the rules and the journeys decide is the same whatever the shape. (Not
    # compared: decisions a model took part in, since with more workers the learner
    # may take a batch of examples in before or after a prediction, nor the visitors'
    # contexts handed over in merges, which carry predictions; and analytics
    # snapshots inside a window, which are as of arrival; the final map is compared.)
    for name in (
        "dlq.jsonl",
        "audiences.jsonl",
        "contact_map_edges.csv",
        "contact_map.json",
    ):
        assert sorted(lines(one / name)) == sorted(lines(two / name)), name
    journeys = [
        sorted(line for line in lines(folder / "journeys.jsonl") if b'"journey"' in line)
        for folder in (one, two)
    ]
    assert journeys[0] == journeys[1]


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


def test_every_subcommand_has_help():
    for command in ("run", "simulate", "topics", "schema"):
        assert "usage: wayfinder" in wayfinder(command, "--help")


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


def test_simulated_customers_react_and_the_models_learn_from_it(tmp_path):
    out = tmp_path / "out"
    wayfinder("run", *SMALL, "--out", str(out), "--no-progress")
    models = json.loads((out / "models.json").read_text())
    assert models["propensity"]["examples"] > 0  # outcomes came back and were learned
    assert models["intent"]["examples"] > 0 and models["next_step"]["examples"] > 1000
    decisions = [msgspec.json.decode(r, type=Decision) for r in lines(out / "decisions.jsonl")]
    assert any(d.model_version and "propensity@" in d.model_version for d in decisions)
    assert any(d.holdout for d in decisions)


def test_every_decision_reruns_the_same_with_its_model_versions_with_two_workers(tmp_path):
    """With two workers the learner runs beside the customer step; each decision still
    names the model versions it asked, and rebuilt to them it decides the same."""
    out = tmp_path / "out"
    wayfinder("run", *SMALL, "--out", str(out), "--no-progress", "--workers", "2")
    report_file = tmp_path / "rerun.json"
    stdout = wayfinder("rerun", "--all", "--latest", "--out", str(out), "--json", str(report_file))
    report = json.loads(report_file.read_text())
    decided = len(lines(out / "decisions.jsonl"))
    assert report["decisions"] == report["identical"] == decided > 500
    assert report["differ"] == [] and report["missing"] == []
    assert "propensity@" in report["latest_version"] and "identical" in stdout
    asked = next(
        msgspec.json.decode(r, type=Decision)
        for r in lines(out / "decisions.jsonl")
        if b"xpected response" in r and b'"outcome":"sent"' in r
    )
    shown = wayfinder("rerun", asked.decision_id, "--out", str(out))
    shown = " ".join(shown.split())  # as read, whatever the terminal's width
    assert f"models {asked.model_version}" in shown
    assert "re-run with the same versions: identical" in shown
    unknown = subprocess.run(
        [WAYFINDER, "rerun", "dec-unknown", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1
    assert "no recorded input for decision dec-unknown" in unknown.stdout


def test_a_run_without_decision_inputs_decides_the_same_and_cannot_be_rerun(tmp_path):
    recorded, bare = tmp_path / "recorded", tmp_path / "bare"
    wayfinder("run", *OPEN_LOOP, "--out", str(recorded), "--no-progress")
    wayfinder("run", *OPEN_LOOP, "--out", str(bare), "--no-progress", "--no-decision-inputs")
    assert lines(bare / "decisions.jsonl") == lines(recorded / "decisions.jsonl")
    assert not (bare / "decisions.inputs.jsonl.gz").exists()
    refused = subprocess.run(
        [WAYFINDER, "rerun", "--all", "--out", str(bare)],
        check=False,
        capture_output=True,
        text=True,
    )
    said = refused.stdout.replace("\n", "")  # rich wraps long lines anywhere
    assert refused.returncode == 2 and "decisions.inputs.jsonl does not exist" in said


def test_challenger_decides_in_the_shadow_and_never_acts(tmp_path):
    challenger = tmp_path / "challenger.toml"
    challenger.write_text(
        (REPO / "flows" / "playbook.toml")
        .read_text()
        .replace("holdout_share = 0.05", "holdout_share = 0.3")
    )
    alone, beside = tmp_path / "alone", tmp_path / "beside"
    wayfinder("run", *OPEN_LOOP, "--out", str(alone), "--no-progress")
    wayfinder(
        "run", *OPEN_LOOP, "--out", str(beside), "--no-progress", "--challenger", str(challenger)
    )
    for path in alone.glob("actions.*.jsonl"):
        assert lines(beside / path.name) == lines(path), path.name  # the live ones, unchanged
    shadow = [
        msgspec.json.decode(r, type=Decision) for r in lines(beside / "decisions.shadow.jsonl")
    ]
    assert shadow and any(d.holdout for d in shadow)
    report = json.loads((beside / "shadow_report.json").read_text())
    assert report["different_action"] > 0
    assert report["expected_value"]["challenger"] < report["expected_value"]["champion"]


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
