"""The orchestrate dataflow: events in, actions and decisions out.

    input ─► decode ──bad──► dead letters ─┐
               │                          ├─► output (topics or topic files)
               ▼ keyed by customer        │
         customer step (fold, decide) ────┘

The same flow runs embedded (simulator or event file in, JSON-lines files out)
and on Kafka. `python -m bytewax.run flows.orchestrate:flow` runs the Kafka
flow configured from the environment (see flows/settings.py).
"""

from collections.abc import Callable, Iterable
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
from flows.settings import DEFAULT_CHANNELS, KafkaSettings, all_topics
from flows.sinks import TopicFileSink
from flows.sources import RawRecord
from operators.customer_step import CustomerStep
from operators.identity import customer_key
from schemas.action import Action
from schemas.codec import DEFAULT_MAX_EVENT_BYTES, BadInput, EventDecoder, encode
from schemas.deadletter import DeadLetter
from schemas.decision import Decision
from schemas.event import Event
from schemas.journey import JourneyTransition
from state.context import CustomerContext, from_snapshot, to_snapshot

#: What leaves the flow before it is shaped for a sink: (topic, key, JSON bytes).
Output = tuple[str, str | None, bytes]


class CustomerLogic(StatefulBatchLogic[Event, Struct, bytes]):
    """bytewax state for one customer: the context, snapshotted as msgpack bytes."""

    def __init__(self, step: CustomerStep, resume_state: bytes | None) -> None:
        self._step = step
        self._ctx: CustomerContext | None = (
            from_snapshot(resume_state) if resume_state is not None else None
        )

    def on_batch(self, values: list[Event]) -> tuple[Iterable[Struct], bool]:
        step = self._step
        ctx = self._ctx
        emitted: list[Struct] = []
        for event in values:
            if ctx is None:
                if event.type == "erase":
                    continue
                kind = "known" if event.customer_id is not None else "anonymous"
                metrics.CONTEXTS_CREATED.labels(kind).inc()
                folded_before = 0
            else:
                folded_before = ctx.events
            ctx, outputs = step.on_event(ctx, event)
            if ctx is None:
                metrics.ERASURES.inc()
            elif ctx.events == folded_before:
                metrics.DUPLICATE_EVENTS.inc()
            if outputs:
                emitted.extend(outputs)
        self._ctx = ctx
        return emitted, ctx is None

    def snapshot(self) -> bytes:
        assert self._ctx is not None  # a discarded logic is never snapshotted
        return to_snapshot(self._ctx)


def _to_output(item: tuple[str, Struct]) -> Output:
    """Route one customer-step output to its topic and encode it once."""
    key, value = item
    if isinstance(value, Action):
        metrics.ACTIONS.labels(value.channel, value.action).inc()
        return (f"actions.{value.channel}", key, encode(value))
    if isinstance(value, Decision):
        metrics.DECISIONS.labels(value.outcome).inc()
        return ("decisions", key, encode(value))
    if isinstance(value, JourneyTransition):
        return ("journeys", key, encode(value))
    raise TypeError(f"customer step emitted an unroutable {type(value).__name__}")


def _dead_letter_output(letter: DeadLetter) -> Output:
    return ("dlq", None, encode(letter))


def _make_decoder(
    max_bytes: int,
    unpack: Callable[[Any], tuple[bytes | None, str, int | None, int | None, datetime | None]],
) -> Callable[[list[Any]], list[tuple[str, Event] | DeadLetter]]:
    """Decode a batch of raw inputs into (customer key, Event) or DeadLetter items.

    Batch-wise, so the per-record work is the decode itself: metrics are counted
    once per batch, not once per record.
    """
    decoder = EventDecoder(max_bytes)
    received = metrics.EVENTS_RECEIVED
    dead = metrics.DEAD_LETTERS

    def decode(batch: list[Any]) -> list[tuple[str, Event] | DeadLetter]:
        received.inc(len(batch))
        out: list[tuple[str, Event] | DeadLetter] = []
        for item in batch:
            raw, source, partition, offset, received_at = unpack(item)
            try:
                event = decoder.decode(raw)
            except BadInput as bad:
                dead.labels(bad.reason).inc()
                out.append(
                    DeadLetter(
                        reason=bad.reason,
                        detail=bad.detail,
                        raw=raw or b"",
                        source=source,
                        partition=partition,
                        offset=offset,
                        received_at=received_at,
                    )
                )
                continue
            out.append((customer_key(event), event))
        return out

    return decode


def _unpack_raw(record: RawRecord) -> tuple[bytes, str, None, int, None]:
    return record.value, record.source, None, record.position, None


def _unpack_kafka(msg: KafkaSourceMessage) -> tuple[bytes | None, str, int, int, datetime | None]:
    _kind, ts_ms = msg.timestamp
    received_at = datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms > 0 else None
    return msg.value, msg.topic or "", msg.partition, msg.offset, received_at


def build_flow(
    source: Source,
    sink: Sink,
    *,
    unpack: Callable[[Any], tuple],
    shape: Callable[[Output], Any],
    step: CustomerStep | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    flow_id: str = "wayfinder",
) -> Dataflow:
    """Wire input → decode → customer step → output; sources and sinks are parameters."""
    step = step or CustomerStep()
    flow = Dataflow(flow_id)
    raw = op.input("events", flow, source)
    decoded = op.flat_map_batch("decode", raw, _make_decoder(max_event_bytes, unpack))
    split = op.branch("valid", decoded, lambda x: type(x) is tuple)
    customers = op.stateful_batch(
        "customer", split.trues, lambda resume: CustomerLogic(step, resume)
    )
    results = op.map("route", customers, _to_output)
    dead = op.map("dead_letter", split.falses, _dead_letter_output)
    merged = op.merge("all_outputs", results, dead)
    op.output("out", op.map("shape", merged, shape), sink)
    return flow


def embedded_flow(
    source: Source,
    out_dir: Path,
    *,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    step: CustomerStep | None = None,
) -> tuple[Dataflow, TopicFileSink]:
    """The flow with local JSON-lines files for topics (simulator or event file in)."""
    sink = TopicFileSink(out_dir, all_topics(channels))
    flow = build_flow(
        source,
        sink,
        unpack=_unpack_raw,
        shape=lambda out: (out[0], out[2]),
        step=step,
    )
    return flow, sink


def kafka_flow(settings: KafkaSettings, *, step: CustomerStep | None = None) -> Dataflow:
    """The production flow: the events topic in, every output topic out."""
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

    return build_flow(source, sink, unpack=_unpack_kafka, shape=shape, step=step)


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access, from the environment at that moment, so
    # importing this module (the CLI does) never needs a broker or settings.
    if name == "flow":
        return kafka_flow(KafkaSettings.from_env())
    raise AttributeError(name)
