"""The contact-point map of a Kafka run equals the one a replay of the same events computes."""

import pytest

from flows.lab.simulator import SimulationConfig, simulate
from flows.runtime.map_files import canonical_json, map_from_snapshots
from operators.analytics import map_of
from operators.replay import Replay
from schemas.codec import BadInput, EventDecoder
from schemas.journey import JourneyTransition
from tests.conftest import kafka_env
from tests.e2e.cli import wayfinder
from tests.helpers import default_playbook
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration


def known_customers_events(customers: int, seed: int) -> list[tuple[bytes, bytes]]:
    """A simulated population's events of identified customers, as (key, value) messages.

    Anonymous visits are left out: their merges come back through the events topic,
    after a bounded Kafka run has stopped reading it (see the README on merges).
    """
    decoder = EventDecoder()
    messages = []
    for _ts, raw in simulate(SimulationConfig(customers=customers, seed=seed)):
        try:
            event = decoder.decode(raw)
        except BadInput:
            continue
        if event.customer_id is not None:
            messages.append((event.customer_id.encode(), raw))
    return messages


def test_kafka_map_and_kpis_equal_the_replay_of_the_same_events(kafka):
    messages = known_customers_events(customers=250, seed=5)
    produce(kafka, "events", messages)
    wayfinder("run", "--kafka", "--no-progress", env=kafka_env(kafka))
    live = map_from_snapshots(v for _, v in read_all(kafka, "analytics"))

    decoder = EventDecoder()
    events = sorted((decoder.decode(raw) for _, raw in messages), key=lambda e: e.ts)
    replay = Replay(default_playbook())
    replay.run(events, until=max(e.ts.timestamp() for e in events))
    finished = (o for o in replay.outputs if type(o) is JourneyTransition)
    replayed = map_of(finished, replay.in_flight())

    assert sorted(live.scopes) == sorted(replayed.scopes)
    assert len(live.scopes) > 3
    assert live.edge_rows() == replayed.edge_rows()
    for scope in live.scopes:
        assert live.kpis(scope) == replayed.kpis(scope), scope
    assert canonical_json(live) == canonical_json(replayed)
