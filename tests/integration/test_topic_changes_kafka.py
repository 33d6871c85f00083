"""The events topic changing under the flow, as operators change it.

Partitions added while the service runs (the topic scaled out): keyed records, the
flow's own loop events too, land on them at once. The merged reader (the default) reads
them from their start; a reader of single partitions, fixed when the flow was built,
cannot, and says so on `/livez` until a restart reads them. Either way nothing written
there is left unread.

Records deleted before the flow read them (retention, while it was down): it reads on
from the earliest the topic still holds, never from its end, and says what was lost.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewPartitions
from kafka.structs import TopicPartition

from flows.runtime.settings import KafkaSettings
from tests.conftest import kafka_env
from tests.e2e.cli import REPO
from tests.helpers import http_get
from tests.kafka_io import free_ports, live_flow, logged, read_all

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
    """Scale the events topic out to `total` partitions, and return once the broker's
    metadata lists them (the controller accepts the change first: a client that asks
    the broker at once may still be told the count before, and kafka-python's producer
    refuses a record for a partition it has not heard of)."""
    admin = KafkaAdminClient(**settings.kafka_python_config())
    topic = settings.topic("events")
    try:
        admin.create_partitions({topic: NewPartitions(total_count=total)})
        deadline = time.monotonic() + WITHIN
        while len(admin.describe_topics([topic])[0]["partitions"]) < total:
            assert time.monotonic() < deadline, "the broker never listed the new partitions"
            time.sleep(0.1)
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


def _bounded(env: dict[str, str], recovery: Path, log: Path) -> str:
    """A bounded run as deployed, resuming from `recovery`: what it said on stderr."""
    command = logged("bytewax.run", "flows.dataflow.kafka:flow", "-r", str(recovery))
    with log.open("wb") as err:
        done = subprocess.run(
            [*command, "-s", "1", "-b", "0"],
            check=False,
            env=env,
            cwd=REPO,
            stderr=err,
            timeout=300,
        )
    said = log.read_text(errors="replace")
    assert done.returncode == 0, said[-3000:]
    return said


def test_records_deleted_before_they_were_read_are_said_and_what_is_left_is_read(
    kafka, tmp_path: Path
):
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    env = kafka_env(kafka)
    _send(kafka, [(n, 0, f"cust-{n}") for n in range(5)])  # offsets 0 to 4
    _bounded(env, recovery, tmp_path / "first.err")
    assert _decided(kafka) == {f"grow-{n}" for n in range(5)}

    # While the flow is away, 10 more come, and the first 5 of them are deleted (as
    # retention deletes them): offsets 5 to 9.
    _send(kafka, [(n, 0, f"cust-{n}") for n in range(5, 15)])
    admin = KafkaAdminClient(**kafka.kafka_python_config())
    try:
        admin.delete_records({TopicPartition(kafka.topic("events"), 0): 10})
    finally:
        admin.close()
    said = _bounded(env, recovery, tmp_path / "resumed.err")
    decided = _decided(kafka)
    assert {f"grow-{n}" for n in range(10, 15)} <= decided, "what the topic holds was skipped"
    assert not decided & {f"grow-{n}" for n in range(5, 10)}
    assert "5 record(s) (offsets 5 to 9) were deleted from the topic" in said, said[-3000:]
