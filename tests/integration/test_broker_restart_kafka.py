"""The broker stops and comes back in the middle of a run: nothing is lost.

A broker of its own (`scripts/kafka` on free ports beside the suite's), so stopping it
disturbs no other test. The flow runs as deployed (`python -m bytewax.run
flows.dataflow.kafka:flow`, tailing the topic) with a recovery folder; the broker is
stopped (`scripts/kafka down`, data kept) and started again while the flow runs, and
the second half of the input is produced after it is back. Every decision request of
both halves is answered and every bad record is a dead letter: nothing was dropped on
the way in or on the way out. Meanwhile `/readyz` says the cluster is unreachable, and
ready again once it is back.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from confluent_kafka import Consumer, TopicPartition

from flows.dataflow.delivery import DeliveredKafkaSink
from flows.dataflow.kafka_reach import ConsumerReach
from flows.dataflow.replica import ModelReplica
from flows.lab.simulator import SimulationConfig, simulate
from flows.runtime.metrics_endpoint import kafka_readiness
from flows.runtime.settings import KafkaSettings, deployment_secret, load_default_playbook
from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from flows.runtime.topics import ensure_topics
from operators.models import ModelSet
from schemas.action import Action
from schemas.learning import Example, LearnedExamples
from schemas.topics import MODEL_EXAMPLES
from tests.e2e.cli import REPO
from tests.helpers import http_get
from tests.kafka_io import free_ports, produce, read_all, stop_flows

pytestmark = [pytest.mark.integration, pytest.mark.recovery]

SCRIPT = REPO / "scripts" / "kafka"


def _scripts_kafka(command: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"scripts/kafka {command}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[KafkaSettings, dict[str, str]]]:
    port, controller = free_ports(2)
    env = {
        **os.environ,
        "WAYFINDER_KAFKA_DIR": str(tmp_path / "broker"),
        "WAYFINDER_KAFKA_PORT": str(port),
        "WAYFINDER_KAFKA_CONTROLLER_PORT": str(controller),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # set, scripts/kafka would start nothing
    _scripts_kafka("up", env)
    try:
        settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{port}", topic_prefix="restart.", partitions=3
        )
        ensure_topics(settings)
        yield settings, env
    finally:
        subprocess.run(
            [sys.executable, str(SCRIPT), "down", "--purge"], env=env, check=False, timeout=120
        )


def _requests(lines: list[bytes]) -> set[str]:
    found = set()
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("type") == "decision_request":
                found.add(record["request_id"])
    return found


def _answered(settings: KafkaSettings, channels: list[str]) -> set[str]:
    replies = set()
    for channel in channels:
        for _key, value in read_all(settings, f"actions.{channel}", timeout_s=5):
            action = msgspec.json.decode(value, type=Action)
            if action.request_id is not None:
                replies.add(action.request_id)
    return replies


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1.0)
    return False


def _freshness(port: int) -> float:
    """The process's wall clock minus its watermark, in seconds."""
    _status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    found = re.search(r"^wayfinder_freshness_seconds ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found is not None, text[-2000:]
    return float(found[1])


def test_a_broker_restart_mid_run_loses_no_input_and_no_output(own_broker, tmp_path):
    settings, env = own_broker
    lines = [raw for _ts, raw in simulate(SimulationConfig(customers=60, hours=12, seed=9))]
    first, second = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    channels = list(load_default_playbook().channels)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    (metrics_port,) = free_ports(1)
    readyz = f"http://127.0.0.1:{metrics_port}/readyz"
    flow_env = {
        **env,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYFINDER_TOPIC_PREFIX": settings.topic_prefix,
        "WAYFINDER_KAFKA_TAIL": "true",
        "WAYFINDER_METRICS_PORT": str(metrics_port),
    }
    produce(settings, "events", [(None, raw) for raw in first])
    log = (tmp_path / "flow.log").open("wb")
    command = [sys.executable, "-m", "bytewax.run", "flows.dataflow.kafka:flow"]
    command += ["-r", str(recovery), "-s", "1", "-b", "0"]
    flow = subprocess.Popen(command, env=flow_env, stdout=log, stderr=log, start_new_session=True)
    try:
        asked_first = _requests(first)
        assert asked_first and _wait_for(
            lambda: asked_first <= _answered(settings, channels) or flow.poll() is not None, 120
        ), "the first half was not answered"
        assert flow.poll() is None, (tmp_path / "flow.log").read_text()[-3000:]
        assert _wait_for(lambda: http_get(readyz)[0] == 200, 60), http_get(readyz)
        _scripts_kafka("down", env)  # data kept
        # Kubernetes would stop sending it work: the probe says why.
        assert _wait_for(lambda: "no broker" in http_get(readyz)[1], 60), http_get(readyz)
        assert http_get(readyz)[0] == 503
        # Nothing is known of the topic meanwhile (producers may write to it): the
        # watermark stops following the wall clock, and what they wrote comes as a
        # backlog, in event time.
        behind = _freshness(metrics_port)
        time.sleep(3)
        assert _freshness(metrics_port) >= behind + 2, "the watermark followed the wall clock"
        _scripts_kafka("up", env)
        produce(settings, "events", [(None, raw) for raw in second])
        asked = _requests(lines)
        answered = _wait_for(lambda: asked <= _answered(settings, channels), 180)
        assert flow.poll() is None, (tmp_path / "flow.log").read_text()[-3000:]
        assert answered, f"unanswered: {sorted(asked - _answered(settings, channels))[:10]}"
        assert _wait_for(lambda: http_get(readyz)[0] == 200, 60), http_get(readyz)
        # Caught up again (its partitions' ends asked anew): it follows the wall clock.
        assert _wait_for(lambda: _freshness(metrics_port) < behind, 60)
    finally:
        try:
            stop_flows([flow])
        finally:
            log.close()


def test_a_learner_reading_its_log_waits_out_the_broker_instead_of_stopping(
    own_broker, monkeypatch
):
    """A learner step reads what its model's log already holds at its first example; if
    that falls while the broker is down (seen in the run above: librdkafka had lost the
    partition from its metadata), it waits for the broker: raising stopped the flow."""
    settings, env = own_broker
    monkeypatch.setenv("WAYFINDER_KAFKA_TIMEOUT", "2s")  # (one ask fails within the outage)
    replica = ModelReplica(
        ModelSet(load_default_playbook()), settings, RecordSignature(deployment_secret())
    )
    answers: list[object] = []
    try:
        assert replica.start(30.0)
        _scripts_kafka("down", env)  # data kept
        reading = threading.Thread(
            target=lambda: answers.append(_outcome(replica.published_after, "next_step", 0))
        )
        reading.start()
        time.sleep(5)
        assert not answers, "it answered without a broker"
        _scripts_kafka("up", env)
        reading.join(120)
        assert answers == [{}]  # (nothing published in this log)
    finally:
        replica.close()


def test_a_learner_reading_its_log_waits_out_a_broker_gone_mid_read(own_broker, monkeypatch):
    """The broker goes between the lookup of the log's end and the read up to it, for
    several times the read's timeout (2 s here, 30 s by default): the read waits for the
    broker and ends with what the log holds (it raised after its timeout, and stopped
    the flow)."""
    settings, env = own_broker
    monkeypatch.setenv("WAYFINDER_KAFKA_TIMEOUT", "2s")
    signature = RecordSignature(deployment_secret())
    batch = msgspec.json.encode(
        LearnedExamples(1, [Example("next_step", "ex-1", "b", 1.0, prefix=("a",))])
    )
    header = (SIGNATURE_HEADER, signature.of(MODEL_EXAMPLES, b"next_step", batch))
    produce(settings, MODEL_EXAMPLES, [(b"next_step", batch)], headers=[header])
    replica = ModelReplica(ModelSet(load_default_playbook()), settings, signature)
    end_once_reachable = replica._end_once_reachable
    back = threading.Timer(10, _scripts_kafka, ("up", env))

    def end_then_gone(consumer: Consumer) -> int:
        end = end_once_reachable(consumer)
        _scripts_kafka("down", env)  # data kept
        back.start()
        return end

    answers: list[object] = []
    try:
        assert replica.start(30.0)
        monkeypatch.setattr(replica, "_end_once_reachable", end_then_gone)
        reading = threading.Thread(
            target=lambda: answers.append(_outcome(replica.published_after, "next_step", 0))
        )
        reading.start()
        reading.join(150)
        assert answers == [{1: "ex-1"}]
    finally:
        back.join(60)
        replica.close()


def _outcome(call: Callable[..., object], *args: object) -> object:
    try:
        return call(*args)
    except Exception as exc:  # (the test's thread: what stopped it, to assert on)
        return exc


def test_while_the_output_waits_for_a_broker_the_process_is_not_ready(
    own_broker, monkeypatch, caplog
):
    """One worker thread polls the input and writes the output. While the output waits
    for a broker that is gone (every delivery is waited for), the input is not polled,
    and its consumer's statistics stop with it: `/readyz` said ready a minute into an
    outage (the run above, once in three). The wait itself says the cluster is gone,
    and the log says the output waits, each Kafka timeout (2 s here) it lasts."""
    settings, env = own_broker
    monkeypatch.setenv("WAYFINDER_KAFKA_TIMEOUT", "2s")
    events = settings.topic("events")
    ready = kafka_readiness(events, max_lag=100)
    unreachable = "no broker of the Kafka cluster is reachable"
    reach = ConsumerReach()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "reach-test",
            "statistics.interval.ms": 1000,
            "stats_cb": reach.stats,
            **settings.librdkafka_config(),
        }
    )
    consumer.assign([TopicPartition(events, 0)])

    def polled_and_ready() -> bool:
        consumer.consume(10, 0.5)
        return reach.connected == 1 and ready() != unreachable

    out = settings.topic("actions.email")
    sink = DeliveredKafkaSink(
        [settings.bootstrap_servers], settings.librdkafka_config(), settings.topic("dlq")
    ).build("output", 0, 1)
    written: list[object] = []
    writing = threading.Thread(
        target=lambda: written.append(
            _outcome(sink.write_batch, [KafkaSinkMessage(b"c2", b"{}", topic=out)])
        )
    )
    down = False
    try:
        assert _wait_for(polled_and_ready, 30)
        sink.write_batch([KafkaSinkMessage(b"c1", b"{}", topic=out)])
        _scripts_kafka("down", env)  # data kept
        down = True
        writing.start()  # (the input is not polled from now on)
        assert _wait_for(lambda: ready() == unreachable, 30), ready()
        _scripts_kafka("up", env)
        down = False
        writing.join(120)
        assert written == [None]  # delivered, once the broker was back
        waits = [r.getMessage() for r in caplog.records if "not acknowledged" in r.getMessage()]
        assert waits and waits[0].startswith("Kafka output: 1 message(s) not acknowledged after")
        assert ready() != unreachable  # the wait is over; the consumer's last word stands
        assert _wait_for(polled_and_ready, 30)
    finally:
        if down:  # (else closing would wait for the delivery for minutes)
            _scripts_kafka("up", env)
        if writing.is_alive():
            writing.join(120)
        consumer.close()
        sink.close()
