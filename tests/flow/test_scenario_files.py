"""Every shipped scenario file through the embedded flow, as `wayfinder run --events FILE`
runs it (scenarios/README.md), on one worker and on two."""

from pathlib import Path

import pytest

from flows.dataflow.sources import EventFileSource
from scenarios.check import Record, load_expected, problems, read_outputs
from tests.e2e.cli import REPO, lines
from tests.flow_helpers import EntryPoint, run_embedded

FOLDERS = sorted(p.parent for p in (REPO / "scenarios").glob("*/expected.json"))


def run_file(entry_point: EntryPoint, events: Path, out: Path) -> dict[str, list[Record]]:
    run = run_embedded(entry_point, EventFileSource(events), out)
    assert run.summary.events == len(lines(events))  # every line was read
    return read_outputs(out)


def test_every_shipped_scenario_is_run():
    assert len(FOLDERS) >= 8, FOLDERS


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_scenario_file_gives_its_expected_transitions_and_actions(entry_point, folder, tmp_path):
    """What expected.json promises is in the topic files, and nothing it forbids."""
    out = tmp_path / "out"
    outputs = run_file(entry_point, folder / "events.jsonl", out)
    assert problems(load_expected(folder), outputs) == []
    assert lines(out / "dlq.jsonl") == []  # every line of a shipped scenario is valid


def test_events_right_after_a_login_move_the_journey_the_visitor_started(entry_point, tmp_path):
    """Scenario 6, with the login and the next step in one file: one journey, in the cart."""
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id": "x-1", "ts": "2026-03-09T20:00:00Z", "type": "page_view", '
        '"channel": "web", "anonymous_id": "laptop-9", "touchpoint": "phones"}\n'
        '{"event_id": "x-2", "ts": "2026-03-10T12:30:00Z", "type": "identify", '
        '"channel": "web", "customer_id": "cust-x", "anonymous_id": "laptop-9"}\n'
        '{"event_id": "x-3", "ts": "2026-03-10T12:35:00Z", "type": "add_to_cart", '
        '"channel": "app", "customer_id": "cust-x", "touchpoint": "cart"}\n'
    )
    outputs = run_file(entry_point, events, tmp_path / "out")
    in_cart = {
        "topic": "journeys",
        "customer_id": "cust-x",
        "journey": "phone_upgrade",
        "milestone": "in_cart",
    }
    assert problems({"required": [in_cart]}, outputs) == []
