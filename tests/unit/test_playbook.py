"""Playbook loading: the default one is valid, and every error names file, entry and field."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flows.settings import DEFAULT_PLAYBOOK
from schemas.playbook import PlaybookError, load_playbook, parse_playbook, seconds
from tests.e2e.cli import REPO

BASE = tomllib.loads(DEFAULT_PLAYBOOK.read_text())


def edited(**sections) -> dict:
    """The default playbook with some sections replaced."""
    raw = {k: v for k, v in BASE.items()}
    raw.update(sections)
    return raw


def journey(name: str, **fields) -> dict:
    entry = {
        "name": name,
        "category": "sales",
        "priority": 10,
        "entry": [{"types": ["page_view"]}],
        "goal": [{"types": ["purchase"]}],
        "abandon": "7d",
    }
    entry.update(fields)
    return entry


def error(raw: dict) -> PlaybookError:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(raw, "pb.toml")
    return info.value


def test_default_playbook_is_valid_and_covers_the_scenarios():
    pb = load_playbook(DEFAULT_PLAYBOOK)
    journeys = {j.name for j in pb.journeys}
    assert {"money_transfer", "device_activation", "network_fault", "car_purchase"} <= journeys
    assert {j.category for j in pb.journeys} >= {"service", "support", "onboarding", "partner"}
    assert any(cp.owner == "partner" for cp in pb.contact_points)


@pytest.mark.parametrize(
    ("text", "expected"), [("90s", 90), ("15m", 900), ("48h", 172800), ("1h30m", 5400)]
)
def test_durations(text, expected):
    assert seconds(text) == expected


def test_bad_duration_names_entry_and_field():
    exc = error(edited(journeys=[journey("j1", stall="48hours")]))
    assert exc.file == "pb.toml"
    assert exc.entry == "journeys 'j1'"
    assert exc.field == "stall"
    assert "bad duration '48hours'" in str(exc)


def test_unknown_contact_point_is_named():
    j = journey("j1", milestones=[{"name": "m", "when": [{"touchpoints": ["nowhere"]}]}])
    exc = error(edited(journeys=[j]))
    assert (exc.entry, exc.field) == ("journeys 'j1'", "milestones[0].when[0].touchpoints")
    assert "unknown contact point 'nowhere'" in str(exc)


def test_goal_that_can_never_match_is_rejected():
    # bill_online is only on the web: a goal on the IVR at that contact point never happens.
    j = journey("j1", goal=[{"channels": ["ivr"], "touchpoints": ["bill_online"]}])
    exc = error(edited(journeys=[j]))
    assert exc.field == "goal[0]" and "can never match" in str(exc)


def test_goal_matching_every_event_is_rejected():
    exc = error(edited(journeys=[journey("j1", goal=[{}])]))
    assert exc.field == "goal" and "every event" in str(exc)


def test_cycle_in_suppression_is_rejected_with_the_journeys_involved():
    journeys = [
        journey("selling", category="sales", suppresses=["support"]),
        journey("fixing", category="support", suppresses=["sales"]),
    ]
    exc = error(edited(journeys=journeys, actions=[], segments=[]))
    assert exc.field == "suppresses"
    assert "cycle in suppression: sales -> support -> sales" in str(exc)
    assert "fixing" in str(exc) and "selling" in str(exc)


def test_wrong_type_names_the_entry_and_field():
    exc = error(edited(journeys=[journey("j1", priority="high")]))
    assert (exc.entry, exc.field) == ("journeys 'j1'", "priority")


def test_unknown_field_is_named():
    exc = error(edited(journeys=[journey("j1", stal="1h")]))
    assert exc.entry == "journeys 'j1'" and "stal" in str(exc)


def test_action_referring_to_unknown_journey_or_segment():
    action = {
        "name": "a1",
        "category": "sales",
        "purpose": "marketing",
        "channels": ["email"],
        "when": [{"segment_entered": "ghosts"}],
    }
    exc = error(edited(actions=[action]))
    assert exc.entry == "actions 'a1'" and "unknown segment 'ghosts'" in str(exc)
    action["when"] = [{"transitions": ["stalled"], "journey": "nope"}]
    exc = error(edited(actions=[action]))
    assert exc.field == "when[0].journey" and "unknown journey 'nope'" in str(exc)


def test_intent_change_trigger_names_unknown_intents_and_needs_to_be_the_only_on():
    action = {
        "name": "a1",
        "category": "support",
        "purpose": "service",
        "channels": ["email"],
        "when": [{"intent_changed": ["teleport"]}],
    }
    exc = error(edited(actions=[action]))
    assert (exc.entry, exc.field) == ("actions 'a1'", "when[0].intent_changed")
    assert "unknown intent 'teleport'" in str(exc)
    action["when"] = [{"intent_changed": ["get_support"], "on_request": True}]
    exc = error(edited(actions=[action]))
    assert exc.field == "when[0]" and "intent_changed" in str(exc)


def test_unknown_channel_is_named():
    cp = {"name": "kiosk", "channels": ["hologram"]}
    exc = error(edited(contact_points=[*BASE["contact_points"], cp]))
    assert (exc.entry, exc.field) == ("contact_points 'kiosk'", "channels")


def test_duplicate_names_are_rejected():
    exc = error(edited(journeys=[journey("j1"), journey("j1")], actions=[]))
    assert exc.entry == "journeys 'j1'" and "declared twice" in str(exc)


def test_stall_must_come_before_abandon():
    exc = error(edited(journeys=[journey("j1", stall="8d", abandon="7d")]))
    assert exc.field == "stall"


def test_file_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "broken.toml"
    bad.write_text("version = [")
    with pytest.raises(PlaybookError, match=r"broken\.toml: file: not valid TOML"):
        load_playbook(bad)


def test_cli_validates_a_playbook_and_reports_the_error(tmp_path: Path):
    wayfinder = str(Path(sys.executable).parent / "wayfinder")
    ok = subprocess.run(
        [wayfinder, "playbook", str(DEFAULT_PLAYBOOK)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "pb.toml"
    bad.write_text(DEFAULT_PLAYBOOK.read_text().replace('stall = "48h"', 'stall = "2 days"'))
    done = subprocess.run(
        [wayfinder, "playbook", str(bad)], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert done.returncode == 2
    assert "journeys 'device_activation': field 'stall': bad duration '2 days'" in done.stderr
