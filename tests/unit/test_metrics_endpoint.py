"""The metrics endpoint: Prometheus's `/metrics` with every `wayfinder_*` family, and the
probes Kubernetes asks (`/livez`, `/readyz` saying why not), where the settings say."""

import json
import math
import socket
import weakref

import pytest
from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from prometheus_client import REGISTRY

from flows.dataflow import kafka_reach
from flows.dataflow.kafka_reach import ConsumerReach, waiting_on_the_cluster
from flows.runtime.metrics import INPUT_CAUGHT_UP
from flows.runtime.metrics_endpoint import kafka_readiness, serve
from flows.runtime.settings import MetricsSettings, SettingsError, metrics_settings
from tests.helpers import http_get


def test_the_endpoint_serves_the_metrics_and_answers_the_probes():
    why: list[str | None] = ["catching up"]
    endpoint = serve("127.0.0.1", 0, process=1, processes=2, ready=lambda: why[0])
    try:
        status, text = http_get(endpoint.url + "/metrics")
        assert status == 200 and 'wayfinder_process_info{process="1",processes="2"} 1.0' in text
        assert "wayfinder_dead_letters_total" in text or "wayfinder_events_received" in text
        assert http_get(endpoint.url + "/livez") == (200, "ok\n")
        assert http_get(endpoint.url + "/readyz") == (503, "not ready: catching up\n")
        why[0] = None
        assert http_get(endpoint.url + "/readyz") == (200, "ready\n")
        assert http_get(endpoint.url + "/")[0] == 404
    finally:
        endpoint.close()


def test_a_port_taken_is_one_sentence_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match="WAYFINDER_METRICS_PORT"):
            serve("127.0.0.1", port, ready=lambda: None)


def test_the_settings_default_to_loopback_and_can_turn_the_endpoint_off():
    assert metrics_settings({}) == MetricsSettings("127.0.0.1", 9464, 1000)
    assert metrics_settings({"WAYFINDER_METRICS_PORT": "off"}) is None
    assert metrics_settings({"WAYFINDER_METRICS_PORT": "off"}, port=9501) == (
        MetricsSettings("127.0.0.1", 9501, 1000)
    )  # a command's --metrics-port
    where = {"WAYFINDER_METRICS_ADDRESS": "0.0.0.0", "WAYFINDER_METRICS_PORT": "9500"}
    assert metrics_settings(where) == MetricsSettings("0.0.0.0", 9500, 1000)
    for wrong in ("70000", "-1", "metrics"):
        with pytest.raises(SettingsError, match="WAYFINDER_METRICS_PORT"):
            metrics_settings({"WAYFINDER_METRICS_PORT": wrong})


def test_a_kafka_process_is_ready_once_it_has_read_to_the_end_and_while_caught_up():
    topic = "readiness-test.events"
    ready = kafka_readiness(topic, max_lag=100)
    assert "not started" in (ready() or "")
    first, second = (INPUT_CAUGHT_UP.labels(topic=topic, partition=p) for p in ("0", "1"))
    lag = BYTEWAX_CONSUMER_LAG_GAUGE.labels(step_id="input", topic=topic, partition="0")
    try:
        first.set(1)
        second.set(0)
        lag.set(0)  # (a lag of 0 before anything is fetched says nothing)
        assert "1 partition(s)" in (ready() or "")
        second.set(1)
        assert ready() is None
        lag.set(5000)
        assert "5000 messages behind" in (ready() or "")
    finally:
        BYTEWAX_CONSUMER_LAG_GAUGE.remove("input", topic, "0")
        INPUT_CAUGHT_UP.remove(topic, "0")
        INPUT_CAUGHT_UP.remove(topic, "1")


def _stats(*brokers: tuple[str, int, str]) -> str:
    """librdkafka's statistics JSON, as a consumer's `stats_cb` receives it (the parts
    read; the real one has many more)."""
    return json.dumps(
        {
            "name": "rdkafka#consumer-1",
            "type": "consumer",
            "brokers": {
                name: {"name": name, "nodeid": node, "state": state, "rtt": {"avg": 120}}
                for name, node, state in brokers
            },
        }
    )


def test_a_kafka_process_is_not_ready_while_no_broker_of_the_cluster_is_reachable(monkeypatch):
    monkeypatch.setattr(kafka_reach, "_CONSUMERS", weakref.WeakSet())
    topic = "unreachable.events"
    ready = kafka_readiness(topic, max_lag=100)
    INPUT_CAUGHT_UP.labels(topic, "0").set(1)
    internal, bootstrap = (":0/internal", -1, "UP"), ("127.0.0.1:9092/bootstrap", -1, "UP")
    reach = ConsumerReach()
    try:
        assert math.isnan(_brokers())  # (no statistics yet: not known)
        reach.stats(_stats(internal, bootstrap, ("127.0.0.1:9092/1", 1, "UP")))
        assert _brokers() == 1
        assert ready() is None
        # Stopped: the connections drop; the bootstrap address and the client's own
        # internal broker are not brokers of the cluster.
        reach.stats(_stats(internal, bootstrap, ("127.0.0.1:9092/1", 1, "CONNECT")))
        assert ready() == "no broker of the Kafka cluster is reachable"
        reach.stats("{not the statistics}")  # (said in the log, never fatal)
        assert ready() is not None
        reach.stats(_stats(("127.0.0.1:9092/1", 1, "UP")))
        assert ready() is None
    finally:
        INPUT_CAUGHT_UP.remove(topic, "0")


def test_a_consumer_not_polled_any_more_has_no_say_in_whether_the_cluster_is_reached(
    monkeypatch,
):
    """A consumer's statistics come only when it is polled: one whose last are seconds
    older than another's is not polled (its thread waits elsewhere), and its word is out
    of date; if none is current, the newest word stands."""
    monkeypatch.setattr(kafka_reach, "_CONSUMERS", weakref.WeakSet())
    polled, waiting = ConsumerReach(), ConsumerReach()
    up, down = _stats(("127.0.0.1:9092/1", 1, "UP")), _stats(("127.0.0.1:9092/1", 1, "DOWN"))
    waiting.stats(up)
    polled.stats(down)
    assert _brokers() == 1  # (both current: one of them reaches a broker)
    waiting.said -= 10
    assert _brokers() == 0
    polled.said -= 60
    assert _brokers() == 1  # (neither current: the newest word)


def test_a_wait_on_the_cluster_that_finds_no_broker_says_so_while_it_lasts(monkeypatch):
    monkeypatch.setattr(kafka_reach, "_CONSUMERS", weakref.WeakSet())
    reach = ConsumerReach()  # (a consumer's: held while the consumer lives)
    reach.stats(_stats(("127.0.0.1:9092/1", 1, "UP")))  # (its last word)
    found_none = [False]
    with waiting_on_the_cluster(lambda: found_none[0]):
        assert _brokers() == 1
        found_none[0] = True
        assert _brokers() == 0
    assert _brokers() == 1


def _brokers() -> float:
    value = REGISTRY.get_sample_value("wayfinder_kafka_brokers_connected")
    assert value is not None
    return value
