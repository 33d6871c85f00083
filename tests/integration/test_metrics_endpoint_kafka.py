"""The metrics endpoint while a run goes on: the embedded run with `--metrics-port`, and
the Kafka service by default (here on a port of the test's own), each serving the
`wayfinder_*` families Prometheus scrapes, and the Kafka service ready once caught up."""

import re
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from flows.dataflow.clock import EventClock
from flows.dataflow.kafka_input import KafkaInput
from flows.dataflow.ledger import LoopLedger
from flows.dataflow.replica import ModelReplica
from flows.runtime import metrics
from flows.runtime.metrics_endpoint import kafka_readiness, serve
from flows.runtime.settings import deployment_secret
from flows.runtime.signature import RecordSignature
from operators.models import ModelSet
from tests.conftest import kafka_env
from tests.e2e.cli import REPO, WAYFINDER, wayfinder
from tests.helpers import default_playbook, http_get
from tests.integration.test_loop_kafka import keyed
from tests.kafka_io import free_ports, produce

pytestmark = pytest.mark.integration

SIM = ["--customers", "200", "--hours", "24", "--seed", "5"]


def _events_read(text: str) -> float:
    found = re.search(r"^wayfinder_events_received_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def _scrape_while(
    flow: subprocess.Popen[bytes], url: str, enough: Callable[[str], bool], within: float = 120
) -> str:
    """Scrape `url` until `enough(text)`, the flow ends or `within` seconds pass; the last
    text scraped."""
    text = ""
    deadline = time.monotonic() + within
    while flow.poll() is None and time.monotonic() < deadline:
        status, body = http_get(url)
        if status == 200:
            text = body
            if enough(text):
                return text
        time.sleep(0.05)
    return text


def _total(text: str, family: str) -> float:
    """A gauge's value, summed over its labels."""
    found = re.findall(rf"^{family}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.MULTILINE)
    return sum(float(n) for n in found)


def _replies(text: str) -> float:
    """Replies to decision requests timed from their event (answers and no-actions)."""
    found = re.findall(
        r'^wayfinder_event_to_action_seconds_count\{kind="(?:reply|no_action)"\} ([0-9.]+)$',
        text,
        re.MULTILINE,
    )
    return sum(float(n) for n in found)


def test_an_embedded_run_serves_its_metrics_while_it_lasts(tmp_path):
    (port,) = free_ports(1)
    day = ["--customers", "1000", "--hours", "24", "--seed", "5"]  # (5 s of run to scrape)
    command = [WAYFINDER, "run", *day, "--out", str(tmp_path / "out"), "--no-progress"]
    flow = subprocess.Popen(
        [*command, "--metrics-port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    text = _scrape_while(flow, url + "/metrics", lambda t: _events_read(t) > 0)
    assert http_get(url + "/readyz")[0] in (200, 0)  # (0: the run has just ended)
    _, err = flow.communicate(timeout=300)
    assert flow.returncode == 0, err.decode()[-2000:]
    assert _events_read(text) > 0, "no scrape saw an event read"
    assert 'wayfinder_process_info{process="0",processes="1"} 1.0' in text
    assert http_get(url + "/metrics")[0] == 0  # gone with the run


def test_the_kafka_service_serves_its_metrics_and_is_ready_once_caught_up(kafka, tmp_path):
    events = tmp_path / "events.jsonl"
    wayfinder("simulate", "--out", str(events), *SIM)
    produce(kafka, "events", [keyed(line) for line in events.read_bytes().splitlines()])
    (port,) = free_ports(1)
    env = {
        **kafka_env(kafka),
        "WAYFINDER_KAFKA_TAIL": "true",
        "WAYFINDER_METRICS_PORT": str(port),
        # (caught up, the watermark follows the wall clock, and the simulated day is long
        # past: customers would leave memory for the cold tier as soon as they are read)
        "WAYFINDER_COLD_AFTER": "3650d",
    }
    flow = subprocess.Popen(
        [WAYFINDER, "run", "--kafka", "--no-progress"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # (a 503 says why not yet: only a 200's body is kept)
        ready = _scrape_while(flow, url + "/readyz", lambda body: body == "ready\n")
        assert ready == "ready\n", http_get(url + "/readyz")
        # What the input has read is being folded and answered: scraped until it shows.
        text = _scrape_while(flow, url + "/metrics", lambda t: _replies(t) > 0)
        assert _events_read(text) > 0 and _replies(text) > 0, "no reply was timed"
        lag = rf'^bytewax_kafka_consumer_lag\{{[^}}]*topic="{re.escape(kafka.topic("events"))}"'
        assert re.search(lag, text, re.MULTILINE), "no lag of the events topic"
        assert http_get(url + "/livez") == (200, "ok\n")
        # What the customers' state holds: each worker thread counts its keys', the
        # gauges add them up when scraped. (Open journeys are none by then: the day's
        # abandonments are due once the watermark follows the wall clock.)
        held = ("wayfinder_customers_in_state", "wayfinder_state_bytes")
        text = _scrape_while(flow, url + "/metrics", lambda t: all(_total(t, f) for f in held))
        assert all(_total(text, family) > 0 for family in held), text
        # Known once events are read: the simulated day's distance, or (caught up, the
        # watermark following the wall clock) the allowed lateness.
        fresh = re.search(r"^wayfinder_freshness_seconds ([0-9.e+]+)$", text, re.MULTILINE)
        assert fresh is not None and float(fresh[1]) >= 59
    finally:
        flow.send_signal(signal.SIGTERM)
        _, err = flow.communicate(timeout=120)
    assert flow.returncode == 0, err.decode()[-2000:]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_models_replica_that_stops_on_an_error_fails_the_probes(kafka, monkeypatch):
    """A follower that stopped never comes back by itself, and the process would go on
    deciding with models that learn nothing from the others: `/livez` fails, so the
    orchestrator restarts it (it resumes and follows again), and an alert says so."""
    replica = ModelReplica(
        ModelSet(default_playbook()), kafka, RecordSignature(deployment_secret(required=True))
    )
    endpoint = serve("127.0.0.1", 0, ready=kafka_readiness(kafka.topic("events"), 1000))
    try:
        assert replica.start(30.0)
        assert http_get(endpoint.url + "/livez") == (200, "ok\n")

        def broken(messages: list[object]) -> None:
            raise RuntimeError("a fault injected into the follower")

        monkeypatch.setattr(replica, "_take", broken)  # (its next poll fails)
        deadline = time.monotonic() + 30
        while http_get(endpoint.url + "/livez")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, body = http_get(endpoint.url + "/livez")
        assert status == 503 and "models replica stopped" in body
        status, body = http_get(endpoint.url + "/readyz")
        assert status == 503 and "models replica stopped" in body
        assert REGISTRY.get_sample_value("wayfinder_model_replica_stopped") == 1
    finally:
        replica.close()
        endpoint.close()
        metrics.MODEL_REPLICA_STOPPED.set(0)  # (the registry is this test process's)


def test_a_kafka_process_is_ready_once_its_input_has_read_to_the_end_and_while_caught_up(
    kafka,
):
    """`/readyz` from what the real input says of the events topic: not before it
    reads, not until each partition is read to its end, ready then, and not while it is
    more than `WAYFINDER_READY_LAG` messages behind (its lag, asked at each snapshot)."""
    topic = kafka.topic("events")
    ready = kafka_readiness(topic, max_lag=100)
    assert "not started" in (ready() or "")
    produce(kafka, "events", [(f"c{i}".encode(), b"{}") for i in range(30)])
    source = KafkaInput(
        kafka.bootstrap_servers,
        topic,
        clock=EventClock(),
        group=f"{kafka.topic_prefix}readiness",
        ledger=LoopLedger(),
        batch=1,  # (one record a poll: behind for a while below)
    )
    (part,) = (source.build_part("input", name, None) for name in source.list_parts())
    try:
        assert "3 partition(s) of the events topic not yet read" in (ready() or ""), ready()

        def read(until: Callable[[str | None], bool]) -> bool:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                part.next_batch()
                part.snapshot()
                if until(ready()):
                    return True
                time.sleep(0.05)
            return False

        assert read(lambda why: why is None), ready()
        produce(kafka, "events", [(None, b"{}") for _ in range(500)])
        assert read(lambda why: "messages behind the events topic" in (why or "")), ready()
    finally:
        part.close()
