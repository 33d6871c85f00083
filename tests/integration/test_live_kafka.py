"""The live flow on the real broker: timers, identity through the events topic.

Scenarios run through `python -m bytewax.run flows.dataflow.kafka:flow` tailing Kafka,
with a playbook whose device-activation stall is seconds instead of 48 hours. Once the
flow has caught up, its watermark follows the wall clock, so a stall with no event after
it fires on time. The same events replayed in event time (operators/replay.py) give the
same transitions. With the cold tier on (a second idle and a customer leaves memory),
the stall and the abandonment fire on time while the customer is out of memory.
"""

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flows.runtime.settings import DEFAULT_PLAYBOOK, load_compiled, state_key
from operators.replay import Replay
from schemas.action import Action
from schemas.event import Consent, Event
from schemas.journey import JourneyTransition
from state.rocks_customer_store import RocksCustomerStore
from tests.conftest import kafka_env
from tests.e2e.cli import WAYFINDER, run
from tests.helpers import key_of, wire
from tests.kafka_io import live_flow, produce, read_all

pytestmark = pytest.mark.integration

STALL_S, ABANDON_S = 3, 8


def short_playbook(tmp_path: Path) -> Path:
    text = DEFAULT_PLAYBOOK.read_text()
    text = text.replace(
        'stall = "48h"\nabandon = "14d"', f'stall = "{STALL_S}s"\nabandon = "{ABANDON_S}s"'
    )
    assert f'stall = "{STALL_S}s"' in text
    path = tmp_path / "playbook.toml"
    path.write_text(text)
    return path


def scenario(base: datetime) -> list[Event]:
    """Device activation that stalls (K1) and an anonymous laptop joining a customer (K2)."""
    n = iter(range(1000))

    def e(seconds: float, type_: str, channel: str, **kw) -> Event:
        props = kw.pop("properties", {})
        return Event(
            event_id=f"live-{next(n)}",
            ts=base + timedelta(seconds=seconds),
            type=type_,
            channel=channel,
            properties=props,
            **kw,
        )

    return [
        e(
            0.0,
            "login",
            "app",
            customer_id="cust-K1",
            properties={"value_tier": "medium", "preferred_channel": "sms"},
        ),
        e(
            0.1,
            "consent",
            "web",
            customer_id="cust-K1",
            consent=Consent(granted=False, channel="sms", purpose="service"),
        ),
        e(0.2, "device_purchased", "store", customer_id="cust-K1", touchpoint="store_high_street"),
        e(0.3, "page_view", "web", anonymous_id="laptop-9", touchpoint="phones"),
        e(0.4, "page_view", "web", anonymous_id="laptop-9", touchpoint="phone_detail"),
        e(
            0.5,
            "identify",
            "app",
            customer_id="cust-K2",
            anonymous_id="phone-9",
            touchpoint="login",
        ),
        e(
            0.6,
            "page_view",
            "app",
            customer_id="cust-K2",
            anonymous_id="phone-9",
            touchpoint="phones",
        ),
        e(
            0.7,
            "identify",
            "web",
            customer_id="cust-K2",
            anonymous_id="laptop-9",
            touchpoint="login",
        ),
    ]


def wait_for(predicate, timeout: float, what: str, seen=lambda: None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; seen: {seen()}")


def view_of(customer: str, env: dict[str, str]) -> dict[str, Any] | None:
    """`wayfinder customer ID --json` while the flow runs (None: not in the view yet)."""
    done = run([WAYFINDER, "customer", customer, "--json"], env=env)
    return json.loads(done.stdout) if done.returncode == 0 else None


def transitions_on(kafka) -> list[JourneyTransition]:
    """Journey transitions on the journeys topic (intent transitions share it)."""
    return [
        msgspec.json.decode(v, type=JourneyTransition)
        for _, v in read_all(kafka, "journeys")
        if b'"intent_changed"' not in v
    ]


@pytest.mark.parametrize(
    ("cold_after", "hot_max", "processes", "workers"),
    [("off", "off", 1, 1), ("1s", "off", 1, 1), ("7d", "1", 1, 1), ("1s", "1", 2, 2)],
)
def test_live_timers_and_event_time_give_the_same_transitions(
    kafka, tmp_path, cold_after, hot_max, processes, workers
):
    """Everyone in memory; customers idle for a second leaving it; one customer in
    memory at most (the others leave as the next is seen); and on a cluster of two
    processes of two workers, each process with a cold tier of its own, a context view
    of its own, and one customer in memory at most."""
    playbook_file = short_playbook(tmp_path)
    events = scenario(datetime.now(UTC))
    browsing, logins = events[:5], events[5:]

    def send(batch: list[Event]) -> None:
        keyed: list[tuple[bytes | None, bytes]] = [(key_of(e), wire(e)) for e in batch]
        produce(kafka, "events", keyed)

    # The laptop browses first; the logins come once that has been seen. (Sent together,
    # they would sit on different partitions, keyed by device and by customer, and the
    # laptop's page views could be read after its login: then they are simply forwarded
    # to the customer and there is no visitor journey to merge.)
    send(browsing)

    env = {
        **kafka_env(kafka),
        "WAYFINDER_KAFKA_TAIL": "true",
        "WAYFINDER_PLAYBOOK": str(playbook_file),
        "WAYFINDER_LATENESS": "0s",  # the stall is seconds long: none to spare
        "WAYFINDER_COLD_AFTER": cold_after,
        "WAYFINDER_HOT_MAX": hot_max,
        "WAYFINDER_COLD_DIR": str(tmp_path / "cold"),
        "WAYFINDER_CONTEXT_VIEW": str(tmp_path / "view"),
    }
    with live_flow(env, tmp_path / "flow.log", processes=processes, workers=workers) as flows:
        wait_for(
            lambda: any(t.customer == state_key("anon:laptop-9") for t in transitions_on(kafka)),
            timeout=60,
            what="the anonymous laptop's journey",
        )
        send(logins)

        def settled():
            seen = transitions_on(kafka)
            abandoned = any(
                t.kind == "abandoned" and t.customer == state_key("cust-K1") for t in seen
            )
            merged = any(t.kind == "merged" for t in seen)
            return seen if abandoned and merged else None

        live = wait_for(
            settled,
            timeout=90,
            what="the stall, abandonment and merge",
            seen=lambda: [(t.customer, t.kind) for t in transitions_on(kafka)],
        )
        time.sleep(1.0)  # anything else the flow had in hand
        live = transitions_on(kafka)
        # Read while the flow runs (a secondary instance: the flow is not held up); the
        # view is written where an epoch ends (every second).
        k1 = wait_for(lambda: view_of("cust-K1", env), timeout=60, what="cust-K1's view")
        helped = [msgspec.json.decode(v, type=Action) for _, v in read_all(kafka, "actions.email")]
        helped += [msgspec.json.decode(v, type=Action) for _, v in read_all(kafka, "actions.push")]
        helped += [msgspec.json.decode(v, type=Action) for _, v in read_all(kafka, "actions.app")]

    assert [flow.returncode for flow in flows] == [0] * processes
    if cold_after != "off":  # stopped, not ended: the idle customer is still out of memory
        folders = [tmp_path / "cold"]
        if processes > 1:
            shape = f"{processes}x{workers}"
            folders = [tmp_path / f"cold.p{i}of{shape}" for i in range(processes)]
        tiers = [RocksCustomerStore(folder) for folder in folders]
        try:
            if hot_max == "off":
                assert any(tier.get(state_key("cust-K1")) is not None for tier in tiers)
            else:  # (idle for a week: none; only the bound sent them)
                assert all(len(tier) >= 1 for tier in tiers)
        finally:
            for tier in tiers:
                tier.close()

    # What another process reads of the customer: the help they were sent, and why.
    assert k1["id"] == "cust-K1" and k1["consent"] == {"sms/service": False}
    sent = [d for d in k1["decisions"] if d["action"] == "activation_help"]
    assert sent and "SMS: no service consent" in " ".join(sent[0]["reasons"])

    # Scenario 2 live: the stall fired on the wall clock, with no event after the purchase,
    # and activation help went to a consented channel (sms, preferred, was revoked).
    stalled = [t for t in live if t.kind == "stalled" and t.customer == state_key("cust-K1")]
    assert len(stalled) == 1
    assert stalled[0].at == events[2].ts + timedelta(seconds=STALL_S)
    (help_action,) = [a for a in helped if a.action == "activation_help"]
    assert help_action.customer == state_key("cust-K1") and help_action.channel != "sms"
    assert "SMS: no service consent" in " ".join(help_action.reasons)

    # Scenario 6 live: the laptop's journey merged into the customer's: one journey.
    upgrade = [t for t in live if t.journey == "phone_upgrade"]
    entered = [t for t in upgrade if t.kind == "entered"]
    merged = [t for t in upgrade if t.kind == "merged"]
    assert len(entered) - len(merged) == 1
    assert merged[0].customer == state_key("anon:laptop-9")
    assert merged[0].merged_into == state_key("cust-K2")

    # The same input in event time: exactly the same transitions.
    replay = Replay(load_compiled(playbook_file), pseudonym_of=state_key)
    until = (events[2].ts + timedelta(seconds=ABANDON_S + 1)).timestamp()
    replay.run(events, until=until)
    replayed = [o for o in replay.outputs if type(o) is JourneyTransition]
    assert sorted(msgspec.json.encode(t) for t in live) == sorted(
        msgspec.json.encode(t) for t in replayed
    )


def test_a_service_paused_past_a_deadline_first_reads_what_was_written_meanwhile(kafka, tmp_path):
    """A customer buys a device; the service is paused (SIGSTOP: a frozen machine) past
    the stall's deadline, and meanwhile the device is activated. On waking it knows
    nothing of what was written while it slept: it asks each partition's end before its
    watermark follows the wall clock again, so the activation is folded in its place
    and the journey completes; it never stalls."""
    stall = 10.0
    playbook_file = tmp_path / "paused.toml"
    playbook_file.write_text(
        DEFAULT_PLAYBOOK.read_text().replace(
            'stall = "48h"\nabandon = "14d"', f'stall = "{stall:.0f}s"\nabandon = "60s"'
        )
    )

    def event(n: int, at: datetime, type_: str, customer: str = "cust-P1") -> Event:
        return Event(
            event_id=f"pause-{n}",
            ts=at,
            type=type_,
            channel="store",
            customer_id=customer,
            touchpoint="store_high_street",
        )

    def kinds_of(customer: str) -> list[str]:
        return [t.kind for t in transitions_on(kafka) if t.customer == state_key(customer)]

    def send(e: Event) -> None:
        produce(kafka, "events", [(key_of(e), wire(e))])

    env = {
        **kafka_env(kafka),
        "WAYFINDER_KAFKA_TAIL": "true",
        "WAYFINDER_PLAYBOOK": str(playbook_file),
        "WAYFINDER_LATENESS": "0s",
    }
    with live_flow(env, tmp_path / "flow.log") as (flow,):
        send(event(0, datetime.now(UTC), "device_purchased", "cust-W"))  # (once started)
        wait_for(lambda: kinds_of("cust-W"), timeout=60, what="the flow started")
        bought = datetime.now(UTC)
        send(event(1, bought, "device_purchased"))
        wait_for(
            lambda: "entered" in kinds_of("cust-P1"),
            timeout=stall - 2,
            what="the journey entered",
        )
        os.kill(flow.pid, signal.SIGSTOP)
        try:
            send(event(2, bought + timedelta(seconds=1), "device_activated"))
            while datetime.now(UTC) < bought + timedelta(seconds=stall + 3):
                time.sleep(0.2)  # past the deadline, on the wall clock
        finally:
            os.kill(flow.pid, signal.SIGCONT)
        wait_for(
            lambda: "completed" in kinds_of("cust-P1"),
            timeout=60,
            what="the journey completed",
            seen=lambda: kinds_of("cust-P1"),
        )
        time.sleep(2.0)  # (a stall would have been said by now)
        kinds = kinds_of("cust-P1")
    assert "stalled" not in kinds, kinds
    assert flow.returncode == 0
