"""Builders for events in tests: readable scenarios instead of JSON blobs."""

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from flows.runtime.settings import DEFAULT_PLAYBOOK, deployment_secret, load_compiled, state_key
from operators.identity import LoopSeal, instance_name
from operators.models import Response
from operators.playbook import CompiledPlaybook
from operators.replay import Replay
from schemas.action import Action
from schemas.codec import encode
from schemas.decision import Decision
from schemas.event import Consent, Event, HandoverRequest
from schemas.journey import JourneyTransition
from state.context import CustomerContext, new_context, to_snapshot

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
#: A kind of output of the cores (Action, Decision, JourneyTransition, ...).
Output = TypeVar("Output")
#: Data shared by the team lives beside the repository, in ../shared.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
_ids = count()


def request(minutes: float, request_id: str = "r-1", channel: str = "web") -> Event:
    """cust-1's decision request on `channel`, `minutes` after T0."""
    return Event(
        event_id=f"req-{request_id}",
        ts=T0 + timedelta(minutes=minutes),
        type="decision_request",
        channel=channel,
        customer_id="cust-1",
        touchpoint="home",
        request_id=request_id,
    )


def ev(
    type_: str,
    channel: str,
    *,
    minutes: float = 0.0,
    customer: str | None = "cust-1",
    anon: str | None = None,
    touchpoint: str | None = None,
    event_id: str | None = None,
    consent: Consent | None = None,
    **properties: Any,
) -> Event:
    """An event `minutes` after T0."""
    return Event(
        event_id=event_id or f"e{next(_ids)}",
        ts=T0 + timedelta(minutes=minutes),
        type=type_,
        channel=channel,
        customer_id=customer,
        anonymous_id=anon,
        touchpoint=touchpoint,
        properties=properties,
        consent=consent,
    )


def shared_dataset(name: str) -> Path:
    """A data set of the shared folder; a test that needs one fails (never skips) when
    it is not there, saying where it looked."""
    path = SHARED_DATASETS / name
    if not path.is_file():
        pytest.fail(
            f"shared data set {name} is missing: looked for {path} "
            "(the team's shared folder is ../shared beside the repository)",
            pytrace=False,
        )
    return path


def wire(event: Event) -> bytes:
    return encode(event)


def key_of(event: Event) -> bytes:
    """The Kafka key a producer gives an event: its customer, else its device."""
    key = event.customer_id or event.anonymous_id
    assert key is not None, f"event {event.event_id} names neither customer nor device"
    return key.encode()


def profile(tier: str, *, minutes: float = -120.0, customer: str = "cust-1") -> Event:
    """A login carrying the customer's profile (value tier, time zone, preference)."""
    return ev(
        "login",
        "app",
        minutes=minutes,
        customer=customer,
        value_tier=tier,
        lifetime_value=12000.0 if tier == "high" else 800.0,
        timezone="Europe/London",
        preferred_channel="app",
    )


def stuck_transfer(
    *,
    tier: str = "high",
    web_at: float | None = 10.0,
    ivr_at: float | None = 30.0,
    chat_at: float = 50.0,
    customer: str = "cust-1",
    transfer: str = "tx-77",
) -> list[Event]:
    """Failed app transfer → web help → IVR → chat, at the given minutes after T0."""
    events = [
        profile(tier, customer=customer),
        ev(
            "transfer_failed",
            "app",
            minutes=0,
            customer=customer,
            touchpoint="transfers",
            transfer_id=transfer,
            amount=2500,
        ),
    ]
    if web_at is not None:
        events.append(
            ev(
                "page_view",
                "web",
                minutes=web_at,
                customer=customer,
                touchpoint="help_transfers",
                transfer_id=transfer,
            )
        )
    if ivr_at is not None:
        events.append(
            ev(
                "ivr_call",
                "ivr",
                minutes=ivr_at,
                customer=customer,
                touchpoint="ivr_payments",
                transfer_id=transfer,
            )
        )
    events.append(
        ev("chat_started", "chat", minutes=chat_at, customer=customer, touchpoint="chat_support")
    )
    return sorted(events, key=lambda e: e.ts)


def instance_token(value: str, customer: str = "cust-1") -> str:
    """What the records name a customer's journey instance (`value`) by."""
    return state_key(instance_name(customer, value))


def default_playbook() -> CompiledPlaybook:
    return load_compiled(DEFAULT_PLAYBOOK)


class StubPredictors:
    """Predictions set by the test instead of learned: intent probabilities from a
    function of the context, one propensity for everything, no next step."""

    def __init__(self, intent: Callable[[CustomerContext], dict[str, float] | None]) -> None:
        self._intent = intent

    def intent(self, ctx: CustomerContext) -> dict[str, float] | None:
        return self._intent(ctx)

    def propensity(self, ctx: CustomerContext, action: object, channel: str) -> Response:
        return Response(0.5)

    def next_step(self, ctx: CustomerContext) -> tuple[str, float] | None:
        return None

    def version(self) -> str:
        return "stub"


class Harness:
    """The cores over a list of events in event time, with readable accessors."""

    def __init__(
        self, playbook: CompiledPlaybook | None = None, predictors: StubPredictors | None = None
    ) -> None:
        playbook = playbook or default_playbook()
        if predictors is None:
            self.replay = Replay(playbook, pseudonym_of=state_key)
        else:
            self.replay = Replay(
                playbook, learn=False, predictors=predictors, pseudonym_of=state_key
            )

    def run(self, events: list[Event], *, until_minutes: float | None = None) -> "Harness":
        until = None if until_minutes is None else (T0 + timedelta(minutes=until_minutes))
        self.replay.run(events, until=None if until is None else until.timestamp())
        return self

    def of(self, kind: type[Output]) -> list[Output]:
        """The outputs of exactly this kind, in order."""
        return [o for o in self.replay.outputs if isinstance(o, kind) and type(o) is kind]

    def actions(self, name: str | None = None, customer: str | None = None) -> list[Action]:
        return [
            a
            for a in self.of(Action)
            if (name is None or a.action == name)
            and (customer is None or a.customer == state_key(customer))
        ]

    def decisions(self, action: str | None = None) -> list[Decision]:
        return [
            d
            for d in self.of(Decision)
            if action is None or any(c.action == action for c in d.candidates)
        ]

    def transitions(
        self, journey: str | None = None, kind: str | None = None, customer: str | None = None
    ) -> list[JourneyTransition]:
        return [
            t
            for t in self.of(JourneyTransition)
            if (journey is None or t.journey == journey)
            and (kind is None or t.kind == kind)
            and (customer is None or t.customer == state_key(customer))
        ]

    def context(self, key: str = "cust-1") -> CustomerContext:
        """The context held for `key` (the test fails if there is none)."""
        ctx = self.replay.contexts.get(key)
        assert ctx is not None, f"no context for {key}; held: {sorted(self.replay.contexts)}"
        return ctx


def hostile_records(customer: str, device: str, at: datetime) -> list[tuple[bytes, str]]:
    """Records that each stopped a run once, and more of their kinds, with the reason
    each must be dead-lettered for."""
    stamp = at.isoformat()
    base = {"ts": stamp, "type": "page_view", "channel": "web", "customer_id": customer}

    def record(**fields: Any) -> bytes:
        return json.dumps({**base, **fields}).encode()

    def loop(**fields: Any) -> bytes:  # the loop's records name a state by pseudonym alone
        written = {**base, **fields}
        del written["customer_id"]
        return json.dumps(written).encode()

    customer_state, device_state = state_key(customer), state_key("anon:" + device)
    visitor = ev("consent", "web", customer=None, anon=device, consent=Consent(granted=True))
    context = to_snapshot(new_context("anon:" + device, visitor, device_state))
    forged = {
        "source": device_state,
        "login_id": "h-login",
        "sealed_to": base64.b64encode(b"\x09" * 32).decode(),
        "context": base64.b64encode(context).decode(),
    }
    seal = LoopSeal(deployment_secret())
    nowhere = bytes(32)  # signed, but no key can be agreed with it (a low-order point)
    signed_unusable = seal.signed(
        Event(
            event_id="h-ask-ok",
            ts=at,
            type="handover_request",
            channel="web",
            to=device_state,
            handover=HandoverRequest(
                customer=customer_state, login_id="h-login", public_key=nowhere
            ),
        )
    )
    assert signed_unusable.handover is not None
    forged_ask = msgspec.structs.replace(
        signed_unusable,
        event_id="h-ask",
        handover=msgspec.structs.replace(signed_unusable.handover, public_key=b"\x09" * 32),
    )
    forwarded = {"source": device_state, "event": base64.b64encode(encode(visitor)).decode()}
    deep_list = b"[" * 1000 + b"]" * 1000
    deep_map = b'{"a":' * 3000 + b"1" + b"}" * 3000
    return [
        (record(event_id="h-deep")[:-1] + b', "x": ' + deep_list + b"}", "too_deep"),
        (record(event_id="h-deep2")[:-1] + b', "y": ' + deep_map + b"}", "too_deep"),
        (record(event_id="h-y10k", ts="9999-12-31T23:59:59-05:00"), "out_of_range"),
        (record(event_id="h-year1", ts="0001-01-01T00:00:00+14:00"), "out_of_range"),
        (record(event_id="h-future", ts="2090-01-01T00:00:00Z"), "too_far_ahead"),
        (loop(event_id="h-merge", type="profile_merge", to=customer_state, merge=forged), "forged"),
        (encode(signed_unusable), "fold_failed"),
        (encode(forged_ask), "forged"),
        (
            loop(
                event_id="h-fwd",
                type="forward",
                to=customer_state,
                forward={**forwarded, "sealed": False},
                signature="0" * 64,
            ),
            "forged",
        ),
        (loop(event_id="h-erase", type="erase", to=customer_state), "forged"),
        (record(event_id="h-fwd2", type="forward", forward=forwarded), "invalid_event"),
        (record(event_id="h-to", to=customer_state), "invalid_event"),
        (
            record(event_id="h-fax", type="decision_request", channel="fax", request_id="r1"),
            "unknown_channel",
        ),
        (
            record(
                event_id="h-anon",
                customer_id="anon:" + device,
                type="consent",
                consent={"granted": True},
            ),
            "invalid_event",
        ),
        (record(event_id="h-\ud800"), "invalid_utf8"),
        (record(event_id="h-big", text="x" * 900_000), "too_large"),
        (record(event_id="h-nan", score=float("nan")), "malformed_json"),
        (b"[1, 2, 3]", "invalid_event"),
        (b"\x00\x01\x02", "malformed_json"),
        (record(event_id="h-list", properties={"n": [1]}), "invalid_event"),
    ]


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """A GET's status and body; status 0 when nothing serves there (yet, or any more)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
    except OSError:
        return 0, ""


def files_holding(directory: Path, needle: bytes) -> list[str]:
    """The files of a folder whose bytes hold `needle` (an erasure test's search)."""
    return [f.name for f in directory.iterdir() if f.is_file() and needle in f.read_bytes()]
