"""An erasure on Kafka shreds what the topics cannot forget.

Two customers ask for a decision; one of them, with devices, is then erased. Their
decisions' inputs stay on `decisions.inputs` (append-only), sealed under keys the flow
made for them: the erased customer's key is gone from the flow's key vault, so none of
their inputs opens and `wayfinder rerun` says they were erased, while the other
customer's decision re-runs identically. Every output topic names customers by
pseudonym, which the vault resolves for the other customer and no longer for them: no
record or key of an output topic names them, whenever it was written, and neither does
any of the loop's own records on the input topic (requests, merges, the devices' sealed
forwards, their erasures): only what the channels wrote there does.
"""

import json

import pytest

from flows.runtime.settings import state_key
from operators.identity import instance_name
from schemas.topics import all_topics
from state.key_vault import VaultReader
from tests.conftest import kafka_env
from tests.e2e.cli import WAYFINDER, run, wayfinder
from tests.helpers import default_playbook
from tests.integration.test_loop_kafka import keyed
from tests.kafka_io import produce, read_all

pytestmark = pytest.mark.integration

DEVICES = [f"dev-E-{i}" for i in range(5)]


def _event(n: int, minute: int, type_: str, channel: str = "web", **fields: str) -> bytes:
    at = f"2026-05-04T{10 + minute // 60:02d}:{minute % 60:02d}:00+00:00"
    body = {"event_id": f"ek-{n}", "ts": at, "type": type_, "channel": channel, **fields}
    return json.dumps(body).encode()


def _events() -> list[bytes]:
    # The requests come before the logins: a customer waiting for a device's answer
    # holds what comes next, and an erasure drops what it holds.
    rows = [
        _event(40 + n, 5, "decision_request", "app", customer_id=customer, request_id=f"r{n}")
        for n, customer in enumerate(("cust-E", "cust-K"))
    ]
    for i, device in enumerate(DEVICES):
        rows.append(_event(10 + i, i, "page_view", anonymous_id=device, touchpoint="phones"))
        rows.append(_event(20 + i, 10 + i, "identify", customer_id="cust-E", anonymous_id=device))
        rows.append(_event(30 + i, 20 + i, "page_view", anonymous_id=device, touchpoint="plans"))
    for n, customer in enumerate(("cust-E", "cust-K")):  # a transfer each, in trouble
        failed = json.loads(_event(60 + n, 30, "transfer_failed", "app", customer_id=customer))
        failed |= {"touchpoint": "transfers", "properties": {"transfer_id": f"trf-{customer}"}}
        rows.append(json.dumps(failed).encode())
    rows.append(_event(50, 120, "erase", customer_id="cust-E"))  # 12:00
    rows.append(_event(51, 150, "page_view", customer_id="cust-K", touchpoint="plans"))
    return rows


def _names_them(value: bytes) -> bool:
    return b"cust-E" in value or b"dev-E-" in value  # (their transfer too: trf-cust-E)


def test_an_erasure_on_kafka_leaves_the_erased_customers_inputs_unreadable(kafka, tmp_path):
    produce(kafka, "events", [keyed(line) for line in _events()])
    wayfinder("run", "--kafka", "--no-progress", env=kafka_env(kafka))

    inputs = [json.loads(v) for _, v in read_all(kafka, "decisions.inputs") if v]
    of = {r["customer"]: r["decision_id"] for r in inputs}
    erased_one, kept_one = state_key("cust-E"), state_key("cust-K")
    assert {erased_one, kept_one} <= of.keys()
    assert kafka.key_vault is not None
    vault = VaultReader(kafka.key_vault)
    try:
        assert vault.secret(erased_one) is None and vault.customer(erased_one) is None
        assert vault.secret(kept_one) is not None
        assert vault.customer(kept_one) == "cust-K"  # as a channel resolves an action's
        transfer = state_key(instance_name("cust-K", "trf-cust-K"))  # and its transfer
        assert vault.instance(kept_one, transfer) == "trf-cust-K"
        assert vault.instance(erased_one, state_key(instance_name("cust-E", "trf-cust-E"))) is None
    finally:
        vault.close()

    erased = run([WAYFINDER, "rerun", "--kafka", of[erased_one]], env=kafka_env(kafka))
    said = " ".join((erased.stdout + erased.stderr).split())
    assert erased.returncode == 2 and "its customer was erased" in said, said[-2000:]
    kept = run([WAYFINDER, "rerun", "--kafka", of[kept_one]], env=kafka_env(kafka))
    assert kept.returncode == 0 and "identical" in kept.stdout, kept.stdout + kept.stderr

    produced = set(_events())
    named = loop = 0
    for topic in all_topics(default_playbook().channels):
        for key, value in read_all(kafka, topic):
            if topic == "events" and value in produced:
                continue  # the channels' own records: what they wrote, for the retention
            # No output, and none of the loop's own records, names anyone: keys, values.
            assert not _names_them(key or b"") and not _names_them(value or b""), topic
            named += (key or b"") in (erased_one.encode(), kept_one.encode())
            loop += topic == "events" and b'"forward"' in (value or b"")
    assert named and loop  # (the search finds records: by pseudonym, forwards sealed)
    # Their transfer's journey was published before the erasure, by token, which no
    # longer resolves (above).
    entered = [json.loads(v) for _, v in read_all(kafka, "journeys") if v and b"entered" in v]
    token = state_key(instance_name("cust-E", "trf-cust-E"))
    assert any(t["customer"] == erased_one and t.get("instance") == token for t in entered)
