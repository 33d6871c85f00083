"""The embedded flow in this process, on bytewax's testing entry points.

Each test taking `entry_point` runs on `run_main` (one worker) and on `cluster_main`
with two worker threads; what the flow writes is read from its topic files. (What
`wayfinder run` adds around the flow, its arguments, summary, report and exit codes,
is tested through the command in tests/e2e/test_cli.py.)
"""

import msgspec
import pytest

from flows.analysis.rerun import rerun
from flows.analysis.shadow import compare, decisions_in
from flows.dataflow.flow import Challenger
from flows.dataflow.sources import EventFileSource
from flows.runtime.settings import load_compiled, state_key
from operators.rerun import RerunError
from schemas.action import Action
from schemas.deadletter import DeadLetter
from schemas.decision import Decision
from tests.e2e.cli import REPO
from tests.flow_helpers import (
    ENTRY_POINTS,
    EntryPoint,
    cluster_main_threads,
    comparable_outputs,
    every_output,
    run_embedded,
    simulated,
)
from tests.helpers import default_playbook, stuck_transfer, wire

#: Big enough for identity merges, dead letters, outcomes learned and actions on every
#: channel (some 10,000 records and 1,800 decisions), small enough to run in 1-2 s.
CUSTOMERS, HOURS, SEED = 300, 24.0, 11


def test_same_input_gives_byte_identical_outputs_on_one_two_and_three_workers(tmp_path):
    """The closed loop (customers react to what they are sent) on 1, 2 and 3 workers:
    every topic but the analytics windows, the recorded decision inputs (opened: each run
    makes its customers' keys anew), the example log, the models and the final map are
    the same bytes; only the order of lines may differ."""
    shapes: dict[str, EntryPoint] = {
        "1": ENTRY_POINTS["run_main"],
        "2": cluster_main_threads(2),
        "3": cluster_main_threads(3),
    }
    outputs = {}
    for workers, entry_point in shapes.items():
        out = tmp_path / workers
        run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), out)
        outputs[workers] = every_output(out)
    one = outputs["1"]
    assert all(one[name] for name in one), [name for name in one if not one[name]]
    for workers in ("2", "3"):
        for name, expected in one.items():
            assert outputs[workers][name] == expected, f"{name} on {workers} workers"


def test_bad_lines_of_an_events_file_go_to_the_dead_letters_with_their_line(entry_point, tmp_path):
    good = stuck_transfer(customer="cust-F", transfer="tx-F")
    bad = [b'{"event_id": "broken"', b'{"event_id":"n1","ts":"2026-03-02T12:00:00Z"}', b"\xff\xfe"]
    body = [wire(good[0]), bad[0], *[wire(e) for e in good[1:3]], bad[1], b"", bad[2]]
    body += [wire(e) for e in good[3:]]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(body) + b"\n")

    run = run_embedded(entry_point, EventFileSource(events), tmp_path / "out")

    (action,) = [msgspec.json.decode(r, type=Action) for r in run.lines("actions.chat.jsonl")]
    assert action.customer == state_key("cust-F")
    assert action.trigger_event_id == good[-1].event_id
    letters = [msgspec.json.decode(r, type=DeadLetter) for r in run.lines("dlq.jsonl")]
    assert [(d.raw, d.offset) for d in letters] == [(bad[0], 2), (bad[1], 5), (bad[2], 7)]
    assert [d.reason for d in letters] == ["malformed_json", "invalid_event", "invalid_utf8"]
    assert run.summary.events == len(good) + len(bad)  # the blank line is no record
    assert run.summary.dead_letters == {"invalid_event": 1, "invalid_utf8": 1, "malformed_json": 1}


def test_simulated_customers_react_and_the_models_learn_from_it(entry_point, tmp_path):
    run = run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), tmp_path / "out")
    models = run.models_json()
    assert models["propensity"]["examples"] > 0  # outcomes came back and were learned
    assert models["intent"]["examples"] > 0 and models["next_step"]["examples"] > 1000
    decisions = [msgspec.json.decode(r, type=Decision) for r in run.lines("decisions.jsonl")]
    assert any(d.model_version and "propensity@" in d.model_version for d in decisions)
    assert any(d.holdout for d in decisions)
    assert run.summary.loop_events > 0  # identity merges and forwards came round the loop


def test_every_decision_reruns_the_same_with_the_model_versions_it_names(entry_point, tmp_path):
    """However many workers learn beside the customer step, each decision names the model
    versions it asked; rebuilt to them from the example log, they decide the same."""
    out = tmp_path / "out"
    run = run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), out)
    report = rerun(default_playbook(), out, None, latest=True)
    decided = len(run.lines("decisions.jsonl"))
    assert report.decisions == report.identical == decided > 500
    assert report.differ == [] and report.missing == []
    assert report.latest_version is not None and "propensity@" in report.latest_version


def test_a_run_without_decision_inputs_decides_the_same_and_cannot_be_rerun(entry_point, tmp_path):
    recorded = run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), tmp_path / "rec")
    bare = run_embedded(
        entry_point, simulated(CUSTOMERS, HOURS, SEED), tmp_path / "bare", decision_inputs=False
    )
    assert comparable_outputs(bare.out) == comparable_outputs(recorded.out)
    assert recorded.lines("decisions.inputs.jsonl.gz")
    assert not (bare.out / "decisions.inputs.jsonl.gz").exists()
    with pytest.raises(RerunError, match=r"decisions\.inputs\.jsonl does not exist"):
        rerun(default_playbook(), bare.out, None)


def test_challenger_decides_in_the_shadow_and_never_acts(entry_point, tmp_path):
    challenger = tmp_path / "challenger.toml"
    challenger.write_text(
        (REPO / "flows" / "playbook.toml")
        .read_text()
        .replace("holdout_share = 0.05", "holdout_share = 0.3")
    )
    alone = run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), tmp_path / "alone")
    beside = run_embedded(
        entry_point,
        simulated(CUSTOMERS, HOURS, SEED),
        tmp_path / "beside",
        challenger=Challenger(load_compiled(challenger)),
    )
    # Everything live is unchanged, the closed loop's reactions included.
    assert comparable_outputs(beside.out) == comparable_outputs(alone.out)
    shadow = decisions_in(beside.out / "decisions.shadow.jsonl")
    assert shadow and any(d.holdout for d in shadow)
    report = compare(decisions_in(beside.out / "decisions.jsonl"), shadow)
    assert isinstance(report["different_action"], int) and report["different_action"] > 0
    value = report["expected_value"]
    assert isinstance(value, dict) and value["challenger"] < value["champion"]
