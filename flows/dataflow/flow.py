"""The orchestrate dataflow: events in; actions, decisions, journeys, audiences out.

    input ─► decode ──bad──► dead letters ──────────────────────┐
               │                                               ├─► output
               ▼ keyed by customer (identify: both keys)       │   (topics, or
         customer step (fold, journeys, segments, decide) ─────┘    topic files)
               │
               ├─► learner (one key per model) ─► models.examples
               └─► analytics (one key per scope) ─► analytics

`build_flow` is the one flow: the embedded run (`embedded_flow`: an event file or
the lab's simulator in, JSON-lines files out, event time) and the Kafka service
(`flows.dataflow.kafka`) only choose its source, its sink and its clock.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import Sink

from flows.dataflow.analytics import ScopeLogic, finished_journeys
from flows.dataflow.clock import WATERMARK_KEY, EventClock, EventTime, WatermarkLogic
from flows.dataflow.cold_tier import ColdTier, open_cold_tier
from flows.dataflow.customer import CustomerLogic, Keyed, StepOutput
from flows.dataflow.decode import AheadLimit, Decoded, Unpacked, make_decoder, unpack_raw
from flows.dataflow.epochs import EpochSource
from flows.dataflow.key_sink import KeyVaultSink, VaultChange, resumes_with_vault
from flows.dataflow.learner import LEARNER, ExampleLog, LearningRounds, examples, learner
from flows.dataflow.ledger import FlowLedger, LoopLedger
from flows.dataflow.loopback import EmbeddedSource
from flows.dataflow.rounds import Rounds
from flows.dataflow.routing import (
    Routed,
    route_analytics,
    route_batch,
    route_dead_letter,
    route_learned,
    route_shadow,
)
from flows.dataflow.run_stores import open_views
from flows.dataflow.sinks import TopicFileSink
from flows.dataflow.sources import Records
from flows.runtime import metrics
from flows.runtime.collector import set_collector
from flows.runtime.recovery_store import resume_epoch
from flows.runtime.run_files import CONTEXT_VIEW, KEY_VAULT
from flows.runtime.settings import (
    ColdSettings,
    deployment_secret,
    load_default_playbook,
    max_ahead_seconds,
    redelivery_horizon_seconds,
    state_key,
)
from operators.customer_step import CustomerStep
from operators.identity import LoopSeal
from operators.models import ModelSet
from operators.playbook import CompiledPlaybook
from operators.published import Published
from schemas.codec import DEFAULT_MAX_EVENT_BYTES, encode
from schemas.deadletter import DeadLetter
from schemas.topics import all_topics
from state.context import DEFAULT_REDELIVERY_HORIZON
from state.context_view import ContextViewStore
from state.key_vault import CustomerKey, InstanceName, KeyDestroyed

#: The input step's name (its snapshots are found by it in a recovery folder).
INPUT = "events"

#: What the input source yields, and what the sink takes.
R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True)
class Challenger:
    """A second playbook deciding beside the live one; `models`: "shared" (read the live
    models) or "none" (rules only)."""

    playbook: CompiledPlaybook
    models: str = "shared"


def build_flow(
    source: FixedPartitionedSource[R, Any],
    sink: Sink[S],
    *,
    unpack: Callable[[R], Unpacked],
    shape: Callable[[Routed], S],
    playbook: CompiledPlaybook,
    clock: EventClock,
    timers: bool,
    rounds: Rounds | None = None,
    loop: FlowLedger | None = None,
    models: ModelSet | None = None,
    example_log: ExampleLog | None = None,
    challenger: Challenger | None = None,
    seal: LoopSeal,
    ahead: AheadLimit,
    redelivery_horizon: float = DEFAULT_REDELIVERY_HORIZON,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    flow_id: str = "wayfinder",
    decision_inputs: bool = True,
    key_vault: Path | None = None,
    published: Published | None = None,
    shadow_published: Published | None = None,
    cold: ColdTier | None = None,
    first_epoch: int = 1,
    views: ContextViewStore | None = None,
    process: int | None = None,
    read_all: Callable[[], bool] | None = None,
) -> Dataflow:
    """Wire input → decode → customer step → output; sources and sinks are parameters.

    `rounds`: an embedded run's lockstep; `loop`: the ledger of a run on Kafka, which
    keeps a bounded input open while its own events are on their way back.
    `clock`: the watermark, which the source tells how far its partitions have got;
    `timers`: wake customers when the watermark passes their deadlines (a service;
    an embedded run's rounds fire them on events and at the end instead).
    `models`: this process's online models (the learner step feeds them, the customer
    step reads them); a new set when not given. `example_log` (Kafka): the learner step
    only numbers and publishes, and `models` is this process's replica, which follows
    the published log (`flows.dataflow.replica`). `seal`: signs and checks the merges
    (the deployment's secret); `ahead`: how far ahead an event's time may be;
    `redelivery_horizon`: how long (event time) a redelivery is recognised.
    `decision_inputs`: publish what each decision was made from, sealed under each
    customer's key, so it can be re-run (`wayfinder rerun`); `key_vault`: the folder
    where a copy of the customers' keys and ids is kept, for it and for channels to
    resolve the pseudonyms the records name customers by (none: in the state alone).
    `published`, `shadow_published`: what the live step and the challenger published
    after the snapshot a run resumes from, which the replay repeats. `cold`: the cold
    tier idle customers leave memory for; `first_epoch`: the run's first bytewax epoch
    (a resumed run's is the one it resumes from), which the input counts on from.
    `views`: where each customer's context view is kept, for other processes to read.
    `process`: this process's id in a cluster (its cold tier's wakes come from a
    partition of its own); `read_all`: for a bounded cluster run, whether the cluster has
    read and folded all its input (its cold customers then come back for the end).
    """
    set_collector(service=clock.follows_wall)  # (it will hold many customers' objects)
    models = models if models is not None else ModelSet(playbook)
    step = CustomerStep(
        playbook,
        models,
        record_inputs=decision_inputs,
        seal=seal,
        redelivery_horizon=redelivery_horizon,
        published=published,
        pseudonym_of=state_key,  # the records name a customer by their state key
    )
    lock = models.lock.read()  # many customer steps at once; learning waits
    flow = Dataflow(flow_id)
    metrics.FRESHNESS.set_function(clock.freshness)  # (this process's latest flow's clock)
    metrics.start_at_zero((j.name for j in playbook.journeys), playbook.channels)
    ledger = rounds if rounds is not None else loop
    raw = op.input(
        INPUT,
        flow,
        EpochSource(
            source, first_epoch, cold=cold, ledger=ledger, process=process, read_all=read_all
        ),
    )
    decoder = make_decoder(
        max_event_bytes,
        unpack,
        clock,
        ledger,
        ahead,
        playbook.channels,
        coming=cold.coming if cold is not None else None,
    )
    decoded = op.flat_map_batch("decode", raw, decoder)
    split = op.branch("valid", decoded, _is_keyed)
    rest = op.branch("dead_or_time", split.falses, _is_dead_letter)
    ticks = op.map("event_time", rest.falses, _watermark_tick)
    op.stateful_batch("watermark", ticks, lambda resume: WatermarkLogic(clock, resume))
    customers = op.stateful_batch(
        "customer",
        split.trues,
        lambda resume: CustomerLogic(
            step,
            resume,
            timers=timers,
            clock=clock,
            ledger=ledger,
            models_lock=lock,
            cold=cold,
            views=views,
        ),
    )
    # Each step on the customers' outputs takes them a batch at a time: most outputs
    # are for one of them only (an example an event), and a call each is the cost.
    results = op.flat_map_batch("route", customers, route_batch)
    to_learn = op.flat_map_batch("examples", customers, examples)
    paced: LearningRounds | None = rounds
    if isinstance(loop, LoopLedger) and loop.rounds:
        paced = loop  # a Kafka replay in rounds
    learned = op.stateful_batch(LEARNER, to_learn, learner(models, paced, example_log))
    finished = op.flat_map_batch("finished_journeys", customers, finished_journeys)
    snapshots = op.stateful_batch("analytics", finished, ScopeLogic)
    analytics = op.map("analytics_out", snapshots, route_analytics)
    dead = op.map("dead_letter", rest.trues, route_dead_letter)
    streams = [results, analytics, dead, op.map("learned_out", learned, route_learned)]
    if challenger is not None:
        # Beside the live step, on the same stream: decisions to the shadow topic only.
        predictors = models if challenger.models == "shared" else None
        shadow_step = CustomerStep(
            challenger.playbook,
            None,
            predictors,
            seal=seal,
            redelivery_horizon=redelivery_horizon,
            published=shadow_published,
            pseudonym_of=state_key,
        )
        shadow_lock = lock if predictors is not None else None
        shadow = op.stateful_batch(
            "challenger",
            split.trues,
            lambda resume: CustomerLogic(
                shadow_step,
                resume,
                timers=timers,
                clock=clock,
                ledger=ledger,
                models_lock=shadow_lock,
                shadow=True,
            ),
        )
        streams.append(op.filter_map("shadow_decisions", shadow, route_shadow))
    if key_vault is not None:
        keys = op.flat_map_batch("customer_keys", customers, _customer_keys)
        op.output("key_vault", keys, KeyVaultSink(key_vault))
    merged = op.merge("all_outputs", *streams)
    op.output("out", op.map("shape", merged, shape), sink)
    return flow


def _is_keyed(item: Decoded) -> TypeGuard[tuple[str, Keyed]]:
    return type(item) is tuple


def _is_dead_letter(item: Decoded) -> TypeGuard[DeadLetter]:
    return type(item) is DeadLetter


def _customer_keys(batch: list[tuple[str, StepOutput]]) -> list[tuple[str, VaultChange]]:
    """The key vault's changes, by the state key the customer step holds them under."""
    return [
        (pseudonym, value)
        for pseudonym, value in batch
        if isinstance(value, CustomerKey | KeyDestroyed | InstanceName)
    ]


def _watermark_tick(item: Decoded) -> tuple[str, EventTime]:
    assert isinstance(item, EventTime)  # neither keyed nor a dead letter: the batch's time
    return (WATERMARK_KEY, item)


def embedded_flow(
    primary: Records,
    out_dir: Path,
    *,
    playbook: CompiledPlaybook | None = None,
    models: ModelSet | None = None,
    challenger: Challenger | None = None,
    decision_inputs: bool = True,
    cold: ColdSettings | None = None,
    recovery: Path | None = None,
) -> tuple[Dataflow, TopicFileSink]:
    """The flow with local JSON-lines files for topics (an event file, or the lab's
    simulator, in); the input may read back what the run writes (`primary.feedback`).
    `cold`: the cold tier's settings (None: from the environment); `recovery`: the
    folder the run snapshots to and resumes from (the cold tier goes back with it)."""
    playbook = playbook or load_default_playbook()
    consumers = 2 if challenger is not None else 1
    rounds = Rounds(primary.list_parts(), primary.feedback, consumers)
    sink = TopicFileSink(out_dir, all_topics(playbook.channels), rounds=rounds)
    span = primary.span()
    clock = EventClock()
    if recovery is not None:
        resumes_with_vault(recovery, out_dir / KEY_VAULT)
    tier = open_cold_tier(
        cold if cold is not None else ColdSettings.from_env(),
        recovery=recovery,
        clock=clock,
        timers=False,
    )
    flow = build_flow(
        EmbeddedSource(primary, rounds, sink.written),
        sink,
        unpack=unpack_raw,
        shape=lambda out: (out[0], out[2] if out[2] is not None else _file_tombstone(out[1])),
        playbook=playbook,
        clock=clock,
        timers=False,
        rounds=rounds,
        models=models,
        challenger=challenger,
        seal=LoopSeal(deployment_secret()),
        ahead=AheadLimit(max_ahead_seconds(), span[1] if span is not None else float("-inf")),
        redelivery_horizon=redelivery_horizon_seconds(),
        decision_inputs=decision_inputs,
        key_vault=out_dir / KEY_VAULT,
        cold=tier,
        first_epoch=(resume_epoch(recovery) if recovery is not None else None) or 1,
        views=open_views(out_dir / CONTEXT_VIEW),
    )
    return flow, sink


def _file_tombstone(key: str | None) -> bytes:
    """A topic file has no null value: a tombstone is a line naming the erased key."""
    return encode({"tombstone": key})
