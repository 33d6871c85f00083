"""The contact-point map of a Kafka run equals the one a replay of the same events computes.

The Kafka flow runs in this process, bounded, on one worker and on two worker threads.
"""

import pytest

from flows.dataflow.kafka import kafka_flow
from flows.lab.simulator import SimulationConfig, simulate
from flows.runtime.map_files import canonical_json, map_from_snapshots
from operators.analytics import map_of
from operators.replay import Replay
from schemas.codec import BadInput, EventDecoder
from schemas.journey import JourneyTransition
from tests.helpers import default_playbook
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration


def known_customers_events(
    customers: int, seed: int, hours: float
) -> list[tuple[bytes | None, bytes]]:
    """A simulated population's events of identified customers, as (key, value) messages.

    Anonymous visits are left out: their merges come back through the events topic,
    after a bounded Kafka run has stopped reading it (see the README on merges).
    """
    decoder = EventDecoder()
    messages: list[tuple[bytes | None, bytes]] = []
    for _ts, raw in simulate(SimulationConfig(customers=customers, seed=seed, hours=hours)):
        try:
            event = decoder.decode(raw)
        except BadInput:
            continue
        if event.customer_id is not None:
            messages.append((event.customer_id.encode(), raw))
    return messages


def test_kafka_map_and_kpis_equal_the_replay_of_the_same_events(kafka, entry_point):
    messages = known_customers_events(customers=200, seed=5, hours=24)
    produce(kafka, "events", messages)
    entry_point(kafka_flow(kafka))
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
