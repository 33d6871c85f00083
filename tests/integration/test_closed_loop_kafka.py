"""The closed loop on Kafka: the flow acts, simulated customers react, the flow sees it.

`wayfinder simulate --kafka` produces the population's traffic, the live flow
(`python -m bytewax.run flows.dataflow.kafka:flow`, tailing the topic) decides, and
`wayfinder react` plays the customers: it reads the action topics and writes their
reactions (outcomes, and what a working action makes happen) to the events topic.
"""

import contextlib
import json

import msgspec
import pytest

from schemas.codec import BadInput, EventDecoder
from schemas.journey import JourneyTransition
from tests.conftest import kafka_env
from tests.e2e.cli import wayfinder
from tests.kafka_io import live_flow, read_all

pytestmark = pytest.mark.integration

SIM = ["--customers", "200", "--hours", "48", "--seed", "5"]


def test_reactions_come_back_into_the_live_flow(kafka, tmp_path):
    env = {**kafka_env(kafka), "WAYFINDER_KAFKA_TAIL": "true"}
    wayfinder("simulate", "--kafka", *SIM, env=env)
    with live_flow(env):
        stdout = wayfinder("react", "--seed", "5", "--idle", "20", env=env, timeout=600)
        assert "reactions" in stdout

    decoder = EventDecoder()
    events = []
    for _, value in read_all(kafka, "events"):
        with contextlib.suppress(BadInput):  # the simulation's own bad input is there too
            events.append(decoder.decode(value))
    outcomes = [e for e in events if e.type == "action_outcome"]
    assert outcomes and all(e.event_id.startswith("world-") for e in outcomes)
    transitions = [
        msgspec.json.decode(v, type=JourneyTransition)
        for _, v in read_all(kafka, "journeys")
        if b'"intent_changed"' not in v
    ]
    moved_by_reactions = [t for t in transitions if (t.trigger_event_id or "").startswith("world-")]
    assert moved_by_reactions  # an action worked, and its journey moved on

    # Every decision on the topic re-runs the same from the topics: its input, and the
    # models rebuilt from the example log to the versions it names.
    report_file = tmp_path / "rerun.json"
    wayfinder("rerun", "--all", "--kafka", "--json", str(report_file), env=env, timeout=600)
    report = json.loads(report_file.read_text())
    assert report["decisions"] == report["identical"] > 100
    assert report["differ"] == [] and report["missing"] == []
