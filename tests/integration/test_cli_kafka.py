"""`wayfinder simulate --kafka`, then `wayfinder run --kafka`: the embedded outputs, on Kafka."""

import sys

import msgspec
import pytest

from flows.runtime.recovery_store import hold, release
from schemas.action import Action
from schemas.deadletter import DeadLetter
from schemas.decision import Decision
from tests.conftest import kafka_env
from tests.e2e.cli import WAYFINDER, lines, run, wayfinder
from tests.kafka_io import read_all

pytestmark = pytest.mark.integration

SIM = ["--customers", "300", "--hours", "24", "--seed", "11"]


def test_kafka_run_gives_the_same_decisions_as_the_embedded_run(kafka, tmp_path):
    env = kafka_env(kafka)
    produced = wayfinder("simulate", "--kafka", *SIM, env=env)
    assert "produced" in produced
    stdout = wayfinder("run", "--kafka", "--no-progress", env=env)
    assert "Wayfinder run" in stdout

    out = tmp_path / "embedded"
    wayfinder("run", *SIM, "--out", str(out), "--no-progress", "--no-reactions")

    kafka_actions = sorted(
        msgspec.json.decode(v, type=Action).action_id for _, v in read_all(kafka, "actions.chat")
    )
    embedded_actions = sorted(
        msgspec.json.decode(raw, type=Action).action_id for raw in lines(out / "actions.chat.jsonl")
    )
    assert kafka_actions == embedded_actions
    assert len(kafka_actions) > 0

    # Priority-agent decisions are rule-driven and do not depend on anonymous browsing,
    # whose merges come back through the events topic after a bounded Kafka run has
    # stopped reading it (decisions a model took part in may differ with arrival order).
    def transfer_decisions(values: list[bytes]) -> list[str]:
        decisions = [msgspec.json.decode(v, type=Decision) for v in values]
        return sorted(
            d.decision_id
            for d in decisions
            if any(c.action == "priority_agent" for c in d.candidates)
        )

    kafka_decisions = transfer_decisions([v for _, v in read_all(kafka, "decisions")])
    assert kafka_decisions == transfer_decisions(lines(out / "decisions.jsonl"))
    assert kafka_decisions

    kafka_dead = sorted(
        msgspec.json.decode(v, type=DeadLetter).raw for _, v in read_all(kafka, "dlq")
    )
    embedded_dead = sorted(
        msgspec.json.decode(raw, type=DeadLetter).raw for raw in lines(out / "dlq.jsonl")
    )
    assert kafka_dead == embedded_dead


def test_a_recovery_folder_or_key_vault_that_cannot_be_used_is_refused_on_kafka(kafka, tmp_path):
    """As embedded (tests/e2e/test_recovery.py): `wayfinder run --kafka` and the flow
    bytewax runs refuse a partition that is not one, a folder another run holds, and a
    key vault that does not open, exit status 2, no traceback."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "part-0.sqlite3").write_bytes(b"not sqlite at all")
    env = kafka_env(kafka)
    ran = run(
        [WAYFINDER, "run", "--kafka", "--no-progress", "--recovery-dir", str(damaged)], env=env
    )
    bytewax = [sys.executable, "-m", "bytewax.run", "flows.dataflow.kafka:flow", "-r", str(damaged)]
    for done in (ran, run([*bytewax, "-s", "1", "-b", "0"], env=env)):
        said = done.stdout + done.stderr
        assert done.returncode == 2, said[-2000:]
        assert "is not a bytewax recovery partition" in said and "Traceback" not in said

    # A folder another run holds (here this test, as another process would).
    (damaged / "part-0.sqlite3").unlink()
    hold(damaged)
    try:
        for done in (
            run(
                [WAYFINDER, "run", "--kafka", "--no-progress", "--recovery-dir", str(damaged)],
                env=env,
            ),
            run([*bytewax, "-s", "1", "-b", "0"], env=env),
        ):
            said = done.stdout + done.stderr
            assert done.returncode == 2 and "is in use by another run" in said, said[-2000:]
    finally:
        release(damaged)

    # A key vault that does not open (a file where its folder should be), as embedded.
    (tmp_path / "vault").write_text("not a folder")
    env["WAYFINDER_KEY_VAULT"] = str(tmp_path / "vault")
    runs = (["run", "--kafka", "--no-progress"], ["-m", "bytewax.run", "flows.dataflow.kafka:flow"])
    for done in (run([WAYFINDER, *runs[0]], env=env), run([sys.executable, *runs[1]], env=env)):
        said = done.stdout + done.stderr
        assert done.returncode == 2 and "is a file" in said and "Traceback" not in said, said
