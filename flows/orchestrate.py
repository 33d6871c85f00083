"""The orchestrate dataflow: events in; actions, decisions, journeys, audiences out.

    input ─► decode ──bad──► dead letters ──────────────────────┐
               │                                               ├─► output
               ▼ keyed by customer (identify: both keys)       │   (topics, or
         customer step (fold, journeys, segments, decide) ─────┘    topic files)

The same flow runs embedded (simulator or event file in, JSON-lines files out,
event time) and on Kafka (live: wall-clock timers). `python -m bytewax.run
flows.orchestrate:flow` runs the Kafka flow configured from the environment.
"""

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END
from msgspec import Struct

from flows import metrics
from flows.analytics_step import ScopeLogic, finished_journeys
from flows.clock import WATERMARK_KEY, EventClock, EventTime, WatermarkLogic
from flows.learning import ModelLogic, examples
from flows.loopback import LOOP_TOPIC, EmbeddedSource, Loopback
from flows.settings import (
    FAULT_EXIT_CODE,
    KafkaSettings,
    all_topics,
    fault_after_events,
    load_compiled,
    load_default_playbook,
    state_key,
)
from flows.sinks import TopicFileSink
from flows.sources import RawRecord, Records
from operators.analytics import InFlight, in_flight
from operators.customer_step import CustomerStep
from operators.identity import ANONYMOUS_PREFIX, customer_key
from operators.models import ModelSet
from operators.playbook import CompiledPlaybook
from schemas.action import Action
from schemas.analytics import AnalyticsSnapshot
from schemas.audience import AudienceChange, Tombstone
from schemas.codec import DEFAULT_MAX_EVENT_BYTES, BadInput, EventDecoder, encode
from schemas.deadletter import DeadLetter
from schemas.decision import Decision, DecisionInput
from schemas.event import Event
from schemas.journey import IntentTransition, JourneyTransition
from schemas.learning import Example, LearnedExamples
from state.context import CustomerContext, from_snapshot, to_snapshot

#: What leaves the flow before it is shaped for a sink: (topic, key, JSON bytes or
#: None for a tombstone).
Output = tuple[str, str | None, bytes | None]
Keyed = tuple[str, Event]
#: Event types the step acts on without folding them into the context.
_NOT_FOLDED = frozenset({"identify", "profile_merge"})


class CustomerLogic(StatefulBatchLogic[Keyed, Struct, bytes]):
    """bytewax state for one customer: the context, snapshotted as msgpack bytes.

    `live`: wake the customer with bytewax timers on the wall clock. Otherwise
    time is event time: due stalls fire on the customer's next event or, for a
    customer who goes quiet, at the end of the input against the watermark.
    `models_lock`: held while the step runs, so the models it asks do not learn meanwhile.
    `shadow`: a challenger's step, whose outputs never come back as input.
    """

    def __init__(
        self,
        step: CustomerStep,
        resume_state: bytes | None,
        *,
        live: bool,
        clock: EventClock,
        loop: Loopback | None,
        models_lock: AbstractContextManager | None = None,
        shadow: bool = False,
    ) -> None:
        self._step = step
        self._shadow = shadow
        self._models_lock = models_lock if models_lock is not None else nullcontext()
        self._live = live
        self._clock = clock
        self._loop = loop
        self._ctx: CustomerContext | None = (
            from_snapshot(resume_state) if resume_state is not None else None
        )

    def on_batch(self, values: list[Keyed]) -> tuple[Iterable[Struct], bool]:
        emitted: list[Struct] = []
        with self._models_lock:
            ctx = self._step_batch(values, emitted)
        self._ctx = ctx
        self._account(len(values), emitted)
        return emitted, ctx is None

    def _step_batch(self, values: list[Keyed], emitted: list[Struct]) -> CustomerContext | None:
        step = self._step
        ctx = self._ctx
        for key, event in values:
            if ctx is None:
                kind = "anonymous" if key.startswith(ANONYMOUS_PREFIX) else "known"
                metrics.CONTEXTS_CREATED.labels(kind).inc()
                folded_before = -1
            else:
                folded_before = ctx.events
            ctx, outputs = step.on_event(key, ctx, event)
            if ctx is None:
                metrics.ERASURES.inc()
            elif (
                ctx.events == folded_before
                and ctx.alias_of is None
                and event.type not in _NOT_FOLDED
            ):
                metrics.DUPLICATE_EVENTS.inc()
            if outputs:
                emitted.extend(outputs)
        return ctx

    def on_notify(self) -> tuple[Iterable[Struct], bool]:
        return self._wake(datetime.now(UTC).timestamp())

    def on_eof(self) -> tuple[Iterable[Struct], bool]:
        if self._live:
            return [], self._ctx is None
        outputs, discard = self._wake(self._clock.watermark)
        if self._ctx is not None:
            # Where this customer is when the input ends, for the contact-point map.
            outputs = [*outputs, *in_flight(self._ctx)]
        return outputs, discard

    def notify_at(self) -> datetime | None:
        if not self._live:
            return None
        due = self._step.next_deadline(self._ctx)
        return None if due is None else datetime.fromtimestamp(due, UTC)

    def snapshot(self) -> bytes:
        assert self._ctx is not None  # a discarded logic is never snapshotted
        return to_snapshot(self._ctx)

    def _wake(self, now: float) -> tuple[Iterable[Struct], bool]:
        if self._ctx is None:
            return [], True
        with self._models_lock:
            outputs = self._step.on_time(self._ctx, now)
        self._account(0, outputs)
        return outputs, False

    def _account(self, consumed: int, emitted: list[Struct]) -> None:
        loop = self._loop
        if loop is None:
            return
        if not self._shadow:
            back = examples = 0
            for output in emitted:
                if type(output) is Example:
                    examples += 1
                elif _comes_back(loop, output):
                    back += 1
            loop.emitted(back, examples)
        loop.settled(consumed)


def _comes_back(loop: Loopback, output: Struct) -> bool:
    """Whether the input reads this output back (so the next batch waits for it)."""
    kind = type(output)
    if kind is Event:
        return True
    return kind is Action and loop.fed_back("actions." + output.channel)  # type: ignore[attr-defined]


def _route(item: tuple[str, Struct]) -> Output | None:
    """Send one customer-step output to its topic, encoded once (None: for analytics only)."""
    _state_key, value = item
    kind = type(value)
    if kind is Decision:
        metrics.DECISIONS.labels(value.outcome).inc()  # type: ignore[attr-defined]
        return ("decisions", value.customer_id, encode(value))  # type: ignore[attr-defined]
    if kind is JourneyTransition:
        metrics.TRANSITIONS.labels(value.kind).inc()  # type: ignore[attr-defined]
        return ("journeys", value.customer_id, encode(value))  # type: ignore[attr-defined]
    if kind is Action:
        metrics.ACTIONS.labels(value.channel, value.action).inc()  # type: ignore[attr-defined]
        topic = f"actions.{value.channel}"  # type: ignore[attr-defined]
        return (topic, value.customer_id, encode(value))  # type: ignore[attr-defined]
    if kind is AudienceChange:
        metrics.AUDIENCE_CHANGES.labels(value.change).inc()  # type: ignore[attr-defined]
        return ("audiences", value.customer_id, encode(value))  # type: ignore[attr-defined]
    if kind is Event:
        customer = value.customer_id or value.anonymous_id  # type: ignore[attr-defined]
        return (LOOP_TOPIC, customer, encode(value))
    if kind is Tombstone:
        return ("audiences", value.customer_id, None)  # type: ignore[attr-defined]
    if kind is InFlight or kind is Example:
        return None
    if kind is IntentTransition:
        metrics.INTENT_CHANGES.inc()
        return ("journeys", value.customer_id, encode(value))  # type: ignore[attr-defined]
    if kind is DecisionInput:
        return (DECISION_INPUTS_TOPIC, value.customer_id, encode(value))  # type: ignore[attr-defined]
    raise TypeError(f"customer step emitted an unroutable {kind.__name__}")


def _learned_output(item: tuple[str, LearnedExamples]) -> Output:
    model, learned = item
    return (MODEL_EXAMPLES_TOPIC, model, encode(learned))


def _analytics_output(item: tuple[str, AnalyticsSnapshot]) -> Output:
    scope, snapshot = item
    return ("analytics", scope, encode(snapshot))


@dataclass(frozen=True)
class Challenger:
    """A second playbook deciding beside the live one; `models`: "shared" (read the live
    models) or "none" (rules only)."""

    playbook: CompiledPlaybook
    models: str = "shared"


SHADOW_TOPIC = "decisions.shadow"
#: What each decision was made from, and every example the models learned, in order:
#: together, any decision can be re-run with the model versions it used.
DECISION_INPUTS_TOPIC = "decisions.inputs"
MODEL_EXAMPLES_TOPIC = "models.examples"
#: Written as gzip in embedded runs (a decision's input is a few kilobytes).
AUDIT_TOPICS = frozenset({DECISION_INPUTS_TOPIC, MODEL_EXAMPLES_TOPIC})


def _shadow_output(item: tuple[str, Struct]) -> Output | None:
    _key, value = item
    if type(value) is Decision:
        return (SHADOW_TOPIC, value.customer_id, encode(value))  # type: ignore[attr-defined]
    return None  # a challenger never acts, merges or forwards


def _dead_letter_output(letter: DeadLetter) -> Output:
    return ("dlq", None, encode(letter))


Unpacked = tuple[bytes | None, str, int | None, int | None, datetime | None]


def _make_decoder(
    max_bytes: int, unpack: Callable[[Any], Unpacked], clock: EventClock, loop: Loopback | None
) -> Callable[[list[Any]], list[tuple[str, Keyed] | DeadLetter | EventTime]]:
    """Decode a batch of raw inputs into keyed events or dead letters.

    Batch-wise, so the per-record work is the decode itself. An identify event
    goes to both its keys: the customer folds it, the visitor hands over. Each
    batch also says how far in event time it reached (for the watermark's state).
    """
    decoder = EventDecoder(max_bytes)
    received = metrics.EVENTS_RECEIVED
    dead = metrics.DEAD_LETTERS
    crash_after = fault_after_events()
    seen = [0]

    def decode(batch: list[Any]) -> list[tuple[str, Keyed] | DeadLetter | EventTime]:
        received.inc(len(batch))
        if crash_after is not None:
            seen[0] += len(batch)
            if seen[0] >= crash_after:
                os._exit(FAULT_EXIT_CODE)  # a crash, on purpose: no clean-up, no flush
        out: list[tuple[str, Keyed] | DeadLetter | EventTime] = []
        latest = float("-inf")
        bad = extra = 0
        for item in batch:
            raw, source, partition, offset, received_at = unpack(item)
            try:
                event = decoder.decode(raw)
            except BadInput as exc:
                dead.labels(exc.reason).inc()
                bad += 1
                out.append(
                    DeadLetter(
                        reason=exc.reason,
                        detail=exc.detail,
                        raw=raw or b"",
                        source=source,
                        partition=partition,
                        offset=offset,
                        received_at=received_at,
                    )
                )
                continue
            ts = event.ts.timestamp()
            latest = max(latest, ts)
            key = customer_key(event)
            out.append((state_key(key), (key, event)))
            if event.type == "identify":
                visitor = ANONYMOUS_PREFIX + event.anonymous_id  # type: ignore[operator]
                out.append((state_key(visitor), (visitor, event)))
                extra += 1
        clock.advance(latest)
        if latest > float("-inf"):
            out.append(EventTime(latest))
        if loop is not None:
            loop.started(extra)
            loop.settled(bad, all_consumers=True)
        return out

    return decode


def _unpack_raw(record: RawRecord) -> Unpacked:
    return record.value, record.source, None, record.position, None


def _unpack_kafka(msg: KafkaSourceMessage) -> Unpacked:
    _kind, ts_ms = msg.timestamp
    received_at = datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms > 0 else None
    return msg.value, msg.topic or "", msg.partition, msg.offset, received_at


def build_flow(
    source: Source,
    sink: Sink,
    *,
    unpack: Callable[[Any], Unpacked],
    shape: Callable[[Output], Any],
    playbook: CompiledPlaybook,
    live: bool,
    loop: Loopback | None = None,
    models: ModelSet | None = None,
    challenger: Challenger | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    flow_id: str = "wayfinder",
    decision_inputs: bool = True,
) -> Dataflow:
    """Wire input → decode → customer step → output; sources and sinks are parameters.

    `models`: this process's online models (the learner step feeds them, the customer
    step reads them); a new set when not given. `decision_inputs`: publish what each
    decision was made from, so it can be re-run (`wayfinder rerun`).
    """
    models = models if models is not None else ModelSet(playbook)
    step = CustomerStep(playbook, models, record_inputs=decision_inputs)
    lock = models.lock
    clock = EventClock()
    flow = Dataflow(flow_id)
    raw = op.input("events", flow, source)
    decoded = op.flat_map_batch("decode", raw, _make_decoder(max_event_bytes, unpack, clock, loop))
    split = op.branch("valid", decoded, lambda x: type(x) is tuple)
    rest = op.branch("dead_or_time", split.falses, lambda x: type(x) is DeadLetter)
    ticks = op.map("event_time", rest.falses, lambda t: (WATERMARK_KEY, float(t)))
    op.stateful_batch("watermark", ticks, lambda resume: WatermarkLogic(clock, resume))
    customers = op.stateful_batch(
        "customer",
        split.trues,
        lambda resume: CustomerLogic(
            step, resume, live=live, clock=clock, loop=loop, models_lock=lock
        ),
    )
    results = op.filter_map("route", customers, _route)
    to_learn = op.flat_map("examples", customers, examples)
    learned = op.stateful_batch("learn", to_learn, lambda resume: ModelLogic(models, resume, loop))
    finished = op.flat_map("finished_journeys", customers, finished_journeys)
    snapshots = op.stateful_batch("analytics", finished, ScopeLogic)
    analytics = op.map("analytics_out", snapshots, _analytics_output)
    dead = op.map("dead_letter", rest.trues, _dead_letter_output)
    streams = [results, analytics, dead, op.map("learned_out", learned, _learned_output)]
    if challenger is not None:
        # Beside the live step, on the same stream: decisions to the shadow topic only.
        predictors = models if challenger.models == "shared" else None
        shadow_step = CustomerStep(challenger.playbook, None, predictors)
        shadow_lock = lock if predictors is not None else None
        shadow = op.stateful_batch(
            "challenger",
            split.trues,
            lambda resume: CustomerLogic(
                shadow_step,
                resume,
                live=live,
                clock=clock,
                loop=loop,
                models_lock=shadow_lock,
                shadow=True,
            ),
        )
        streams.append(op.filter_map("shadow_decisions", shadow, _shadow_output))
    merged = op.merge("all_outputs", *streams)
    op.output("out", op.map("shape", merged, shape), sink)
    return flow


def embedded_flow(
    primary: Records,
    out_dir: Path,
    *,
    playbook: CompiledPlaybook | None = None,
    models: ModelSet | None = None,
    challenger: Challenger | None = None,
    decision_inputs: bool = True,
) -> tuple[Dataflow, TopicFileSink]:
    """The flow with local JSON-lines files for topics (an event file, or the lab's
    simulator, in); the input may read back what the run writes (`primary.feedback`)."""
    playbook = playbook or load_default_playbook()
    consumers = 2 if challenger is not None else 1
    loop = Loopback(primary.list_parts(), primary.feedback, consumers)
    sink = TopicFileSink(
        out_dir,
        all_topics(playbook.channels),
        loop=loop,
        compressed=AUDIT_TOPICS,
    )
    flow = build_flow(
        EmbeddedSource(primary, loop, sink.written),
        sink,
        unpack=_unpack_raw,
        shape=lambda out: (out[0], out[2] if out[2] is not None else _file_tombstone(out[1])),
        playbook=playbook,
        live=False,
        loop=loop,
        models=models,
        challenger=challenger,
        decision_inputs=decision_inputs,
    )
    return flow, sink


def _file_tombstone(key: str | None) -> bytes:
    """A topic file has no null value: a tombstone is a line naming the erased key."""
    return encode({"tombstone": key})


def kafka_flow(settings: KafkaSettings, *, playbook: CompiledPlaybook | None = None) -> Dataflow:
    """The production flow: the events topic in, every output topic out.

    Tailing the topic is a live service (wall-clock timers); a bounded run
    (WAYFINDER_KAFKA_TAIL=false) is a replay in event time.
    """
    playbook = playbook or load_default_playbook()
    config = settings.librdkafka_config()
    source = KafkaSource(
        settings.brokers,
        [settings.topic("events")],
        tail=settings.tail,
        starting_offset=OFFSET_BEGINNING if settings.start_at == "earliest" else OFFSET_END,
        add_config=config,
    )
    sink = KafkaSink(settings.brokers, None, add_config=config)
    prefix = settings.topic_prefix

    def shape(out: Output) -> KafkaSinkMessage:
        topic, key, value = out
        return KafkaSinkMessage(
            key=key.encode() if key is not None else None, value=value, topic=prefix + topic
        )

    challenger = None
    if settings.challenger_playbook:
        challenger = Challenger(
            load_compiled(Path(settings.challenger_playbook)), settings.challenger_models
        )
    return build_flow(
        source,
        sink,
        unpack=_unpack_kafka,
        shape=shape,
        playbook=playbook,
        live=settings.tail,
        challenger=challenger,
        decision_inputs=settings.decision_inputs,
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access, from the environment at that moment, so
    # importing this module (the CLI does) never needs a broker or settings.
    if name == "flow":
        return kafka_flow(KafkaSettings.from_env())
    raise AttributeError(name)
