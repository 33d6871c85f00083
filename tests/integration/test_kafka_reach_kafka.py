"""Whether the process reaches the Kafka cluster, from real consumers' librdkafka
statistics: one of the suite's broker, one of an address where no broker listens."""

import math
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from flows.dataflow.kafka_reach import ClusterReach, ConsumerReach, brokers_up
from flows.runtime.metrics_endpoint import kafka_readiness
from flows.runtime.settings import KafkaSettings
from tests.kafka_io import free_ports

pytestmark = pytest.mark.integration

UNREACHABLE = "no broker of the Kafka cluster is reachable"


def _consumer(servers: str, stats_cb: Callable[[str], None], topic: str) -> Consumer:
    """A consumer fetching `topic` (so it connects to the partition's leader), with its
    statistics every 200 ms."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "reach-test",
            "statistics.interval.ms": 200,
            "stats_cb": stats_cb,
        }
    )
    consumer.assign([TopicPartition(topic, 0)])
    return consumer


def _until(condition: Callable[[], bool], polled: list[Consumer], timeout: float = 30) -> bool:
    """Poll `polled` until `condition` holds (statistics come only with polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for consumer in polled:
            consumer.poll(0.1)
        if condition():
            return True
    return False


@pytest.fixture
def statistics(kafka: KafkaSettings) -> Iterator[tuple[str, str]]:
    """librdkafka's statistics of a consumer connected to the suite's broker, and of one
    given an address where no broker listens."""
    events = kafka.topic("events")
    (nowhere,) = free_ports(1)
    reached: list[str] = []
    lost: list[str] = []
    consumers = [
        _consumer(kafka.bootstrap_servers, reached.append, events),
        _consumer(f"127.0.0.1:{nowhere}", lost.append, events),
    ]
    try:
        assert _until(lambda: any(brokers_up(s) == 1 for s in reached) and bool(lost), consumers)
        yield next(s for s in reached if brokers_up(s) == 1), lost[-1]
    finally:
        for consumer in consumers:
            consumer.close()


def test_statistics_count_the_brokers_of_the_cluster_the_client_is_connected_to(statistics):
    reached, lost = statistics
    # (the bootstrap address and the client's internal broker are not brokers of it: the
    # suite's cluster has one)
    assert brokers_up(reached) == 1
    assert brokers_up(lost) == 0
    assert brokers_up("{not the statistics}") is None  # (said in the log, never fatal)


def test_a_consumer_not_polled_any_more_has_no_say_in_whether_the_cluster_is_reached(
    statistics,
):
    """A consumer's statistics come only when it is polled: one whose last are seconds
    older than another's is not polled (its thread waits elsewhere), and its word is out
    of date; if none is current, the newest word stands."""
    reached, lost = statistics
    cluster = ClusterReach()
    assert math.isnan(cluster.brokers_connected())  # (no statistics yet: not known)
    polled, waiting = ConsumerReach(cluster), ConsumerReach(cluster)
    waiting.stats(reached)
    polled.stats(lost)
    assert cluster.brokers_connected() == 1  # (both current: one of them reaches a broker)
    waiting.said -= 10
    assert cluster.brokers_connected() == 0
    polled.said -= 60
    assert cluster.brokers_connected() == 1  # (neither current: the newest word)


def test_a_wait_on_the_cluster_that_finds_no_broker_says_so_while_it_lasts(statistics):
    reached, _lost = statistics
    cluster = ClusterReach()
    reach = ConsumerReach(cluster)  # (a consumer's: held while the consumer lives)
    reach.stats(reached)  # (its last word)
    found_none = [False]
    with cluster.waiting(lambda: found_none[0]):
        assert cluster.brokers_connected() == 1
        found_none[0] = True
        assert cluster.brokers_connected() == 0
    assert cluster.brokers_connected() == 1


def test_the_process_is_not_ready_while_its_current_consumers_reach_no_broker(kafka):
    """`/readyz` from the process's gauge: a consumer of the cluster polled, ready; it
    is not polled any more and the one polled reaches nothing, not ready; polled again,
    ready."""
    events = kafka.topic("events")
    ready = kafka_readiness(events, max_lag=100)
    (nowhere,) = free_ports(1)
    reached, lost = ConsumerReach(), ConsumerReach()
    of_cluster = _consumer(kafka.bootstrap_servers, reached.stats, events)
    of_nowhere = _consumer(f"127.0.0.1:{nowhere}", lost.stats, events)
    try:
        assert _until(lambda: reached.connected == 1 and ready() != UNREACHABLE, [of_cluster])
        assert _until(lambda: ready() == UNREACHABLE, [of_nowhere]), ready()
        assert reached.connected == 1  # (its last word, out of date)
        both = [of_cluster, of_nowhere]
        assert _until(lambda: ready() != UNREACHABLE, both), ready()
    finally:
        of_cluster.close()
        of_nowhere.close()
