"""Partitions added to the events topic while the service runs (an operator scaling the
topic out): keyed records, the flow's own loop events too, land on them at once. The
merged reader (the default) reads them from their start; a reader of single partitions,
fixed when the flow was built, cannot, and says so on `/livez` until a restart reads
them. Either way nothing written there is left unread."""

import json
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewPartitions

from flows.runtime.settings import KafkaSettings
from tests.conftest import kafka_env
from tests.helpers import http_get
from tests.kafka_io import free_ports, live_flow, read_all

pytestmark = pytest.mark.integration

#: How long the service is given to answer (it looks for new partitions every 5 s).
WITHIN = 60.0


def _request(n: int, customer: str) -> bytes:
    body = {
        "event_id": f"grow-{n}",
        "ts": f"2026-05-04T10:{n:02d}:00+00:00",
        "type": "decision_request",
        "channel": "app",
        "customer_id": customer,
        "request_id": f"r{n}",
    }
    return json.dumps(body).encode()


def _send(settings: KafkaSettings, rows: list[tuple[int, int, str]]) -> None:
    """(n, partition, customer): a decision request each, on that partition."""
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    for n, partition, customer in rows:
        producer.send(
            settings.topic("events"),
            key=customer.encode(),
            value=_request(n, customer),
            partition=partition,
        )
    producer.flush()
    producer.close()


def _add_partitions(settings: KafkaSettings, total: int) -> None:
    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        admin.create_partitions({settings.topic("events"): NewPartitions(total_count=total)})
    finally:
        admin.close()


def _decided(settings: KafkaSettings) -> set[str]:
    """The triggers of the decisions on the decisions topic."""
    return {json.loads(value)["trigger_id"] for _key, value in read_all(settings, "decisions", 10)}


def _wait_for(
    settings: KafkaSettings, wanted: set[str], flows: list[subprocess.Popen[bytes]]
) -> set[str]:
    deadline = time.monotonic() + WITHIN
    decided = _decided(settings)
    while not wanted <= decided and time.monotonic() < deadline:
        assert all(f.poll() is None for f in flows), "the service ended"
        time.sleep(0.5)
        decided = _decided(settings)
    return decided


def test_the_merged_reader_reads_partitions_added_while_it_runs(kafka, tmp_path: Path):
    env = {**kafka_env(kafka), "WAYFINDER_KAFKA_TAIL": "true"}
    first = [(n, n % kafka.partitions, f"cust-{n}") for n in range(kafka.partitions)]
    _send(kafka, first)
    with live_flow(env, tmp_path / "flow.err") as flows:
        before = {f"grow-{n}" for n, _p, _c in first}
        assert before <= _wait_for(kafka, before, flows), "the service never answered"
        _add_partitions(kafka, kafka.partitions + 2)
        added = [(10 + i, kafka.partitions + i, f"cust-new-{i}") for i in range(2)]
        _send(kafka, added)
        wanted = {f"grow-{n}" for n, _p, _c in added}
        decided = _wait_for(kafka, wanted, flows)
    assert wanted <= decided, f"not read from the new partitions: {sorted(wanted - decided)}"
    assert flows[0].returncode == 0, (tmp_path / "flow.err").read_text()[-2000:]
    assert "added to the topic; read from their start" in (tmp_path / "flow.err").read_text()


def test_readers_of_single_partitions_say_they_need_a_restart_which_reads_them(
    kafka, tmp_path: Path
):
    (port,) = free_ports(1)
    env = {
        **kafka_env(kafka),
        "WAYFINDER_KAFKA_TAIL": "true",
        "WAYFINDER_KAFKA_ORDERED": "false",
        "WAYFINDER_METRICS_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}/livez"
    first = [(n, n % kafka.partitions, f"cust-{n}") for n in range(kafka.partitions)]
    _send(kafka, first)
    added = [(10, kafka.partitions, "cust-new-0")]
    with live_flow(env, tmp_path / "flow.err") as flows:
        before = {f"grow-{n}" for n, _p, _c in first}
        assert before <= _wait_for(kafka, before, flows), "the service never answered"
        assert http_get(url) == (200, "ok\n")
        _add_partitions(kafka, kafka.partitions + 1)
        _send(kafka, added)
        deadline = time.monotonic() + WITHIN
        while http_get(url)[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        status, body = http_get(url)
    assert status == 503 and "1 partition(s) added" in body, body
    assert flows[0].returncode == 0, (tmp_path / "flow.err").read_text()[-2000:]
    with live_flow(env, tmp_path / "again.err") as flows:  # (a restart: read again)
        wanted = {"grow-10"}
        decided = _wait_for(kafka, wanted, flows)
        assert http_get(url) == (200, "ok\n")
    assert wanted <= decided, "the restart did not read the added partition"
