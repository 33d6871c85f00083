"""`wayfinder run --kafka`: the embedded run's outputs, on Kafka; and what it refuses."""

import re
import sys

import msgspec
import pytest

from flows.runtime.recovery_store import hold, release
from schemas.deadletter import DeadLetter
from tests.conftest import kafka_env
from tests.e2e.cli import WAYFINDER, lines, run, wayfinder
from tests.flow_helpers import comparable_loop
from tests.helpers import default_playbook
from tests.integration.test_loop_kafka import keyed
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration

CHANNELS = default_playbook().channels

SIM = ["--customers", "300", "--hours", "24", "--seed", "11"]
#: What the run writes, and the key of each record.
COMPARED = ["journeys", "audiences", "decisions", *(f"actions.{c}" for c in CHANNELS)]


def test_a_replay_on_kafka_gives_the_embedded_runs_outputs(kafka, tmp_path):
    """The same simulated file (known customers, anonymous visitors on several devices,
    logins, bad input), run embedded and replayed from Kafka as the README's steps do:
    the same journeys (intent changes included), audiences, decisions and actions, byte
    for byte; the same logins asked and answered, forwards and dead letters; and the
    summaries count the same. A replay goes in rounds of the embedded run's batches."""
    events = tmp_path / "events.jsonl"
    wayfinder("simulate", "--out", str(events), *SIM)
    # Line for line: a blank line, which a file's reader passes over, is an empty
    # message, so that batches hold the same records.
    produce(kafka, "events", [keyed(line) for line in events.read_bytes().splitlines()])
    on_kafka = wayfinder("run", "--kafka", "--no-progress", env=kafka_env(kafka))
    out = tmp_path / "embedded"
    embedded = wayfinder("run", "--events", str(events), "--out", str(out), "--no-progress")

    for topic in COMPARED:
        written = sorted(v for _, v in read_all(kafka, topic) if v is not None)
        assert written == sorted(lines(out / f"{topic}.jsonl")), topic
    assert any(b'"kind":"merged"' in line for line in lines(out / "journeys.jsonl"))
    assert any(b'"intent_changed"' in line for line in lines(out / "journeys.jsonl"))

    # The flow's own events: the same logins asked and answered, the same forwards.
    produced = set(lines(events))
    own = [v for _, v in read_all(kafka, "events") if v is not None and v not in produced]
    assert comparable_loop(own) == comparable_loop(lines(out / "events.jsonl")) and own

    def dead(letters: list[bytes]) -> list[tuple[str, bytes]]:
        decoded = [msgspec.json.decode(v, type=DeadLetter) for v in letters]
        return sorted((d.reason, d.raw) for d in decoded)

    kafka_dead = [v for _, v in read_all(kafka, "dlq") if v is not None]
    letters = [letter for letter in dead(kafka_dead) if letter[0] != "empty"]  # (blank lines)
    assert letters == dead(lines(out / "dlq.jsonl")) and letters

    # The summaries count the same, time aside (and the blank lines: empty messages are
    # events, and dead letters, on Kafka).
    blank = sum(1 for line in events.read_bytes().splitlines() if not line.strip())

    def counted(stdout: str) -> list[str]:
        rows = [" ".join(row.strip("│ ").split()) for row in stdout.splitlines()]
        skipped = ("elapsed", "events", "dead letters", "empty")
        return [row for row in rows if "│" in row and not row.startswith(skipped)]

    def count(stdout: str, row: str) -> int:
        found = re.search(rf"│\s+{row}\s+│\s+([\d,]+)\s+│", stdout)
        assert found is not None, stdout
        return int(found[1].replace(",", ""))

    assert counted(on_kafka) == counted(embedded)
    for row in ("events", "dead letters"):
        assert count(on_kafka, row) == count(embedded, row) + blank, row


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
