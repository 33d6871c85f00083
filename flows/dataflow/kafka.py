"""The production flow on Kafka: the events topic in, every output topic out.

`python -m bytewax.run flows.dataflow.kafka:flow` runs it, configured from the
environment (`flows.runtime.settings.KafkaSettings`); `wayfinder run --kafka`
runs the same flow in the foreground with a progress display.
"""

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from flows.dataflow.clock import EventClock
from flows.dataflow.cold_tier import open_cold_tier
from flows.dataflow.decode import AheadLimit, unpack_kafka
from flows.dataflow.delivery import DeliveredKafkaSink
from flows.dataflow.flow import INPUT, Challenger, build_flow
from flows.dataflow.kafka_input import KafkaInput, published_since
from flows.dataflow.key_sink import resumes_with_vault
from flows.dataflow.learner import LEARNER, resume_ceilings
from flows.dataflow.ledger import LoopLedger
from flows.dataflow.replica import ModelReplica
from flows.dataflow.routing import Routed
from flows.dataflow.run_stores import Place, open_views
from flows.dataflow.stopping import StopRequest
from flows.runtime import metrics
from flows.runtime.balance import ClusterBalance
from flows.runtime.collector import survivors_frozen_until_exit
from flows.runtime.kafka_check import EXIT_KAFKA_UNAVAILABLE, KafkaUnavailable, check_connection
from flows.runtime.metrics_endpoint import MetricsEndpoint, kafka_readiness, serve
from flows.runtime.published import read_published
from flows.runtime.recovery_store import (
    UnusableRecoveryFolder,
    check,
    drop_abandoned,
    earlier_start,
    forget_start,
    hold,
    holds_snapshots,
    resume_epoch,
    resumed_snapshots,
)
from flows.runtime.runner import summarise_at_exit
from flows.runtime.settings import (
    ColdSettings,
    KafkaSettings,
    SettingsError,
    allowed_lateness_seconds,
    context_view_folder,
    deployment_secret,
    load_compiled,
    load_default_playbook,
    max_ahead_seconds,
    metrics_settings,
    models_catch_up_seconds,
    redelivery_horizon_seconds,
)
from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from flows.runtime.topics import ensure_topics
from operators.identity import LoopSeal
from operators.models import ModelSet
from operators.playbook import CompiledPlaybook
from operators.published import Published
from schemas.topics import BALANCE, DLQ, EVENTS
from state.key_vault import KeyVaultError

logger = logging.getLogger(__name__)


def kafka_flow(
    settings: KafkaSettings,
    *,
    playbook: CompiledPlaybook | None = None,
    stop: StopRequest | None = None,
    models: ModelSet | None = None,
    recovery: Path | None = None,
    process: int | None = None,
    processes: int = 1,
    workers: int = 1,
) -> Dataflow:
    """The production flow: the events topic in, every output topic out.

    Time is event time either way. Tailing the topic is a service, whose watermark
    follows the wall clock once it has caught up; a bounded run
    (WAYFINDER_KAFKA_TAIL=false) ends where the topic ends. `stop`: what ends the
    input cleanly (the caller turns signals into it).

    The models are this process's replica (`models`, a fresh set when not given),
    learned from the example log: it catches up with the log before this returns
    (WAYFINDER_MODELS_CATCH_UP), then follows it while the flow runs. `recovery`: the
    snapshot folder the run resumes from; what was published after its snapshot is
    read back, and the replay repeats the decisions and intent changes among it
    (`operators.published`). `process`: this process's id, when it is one of a
    cluster's (of `processes`), which share the folder; `workers`: this process's. A
    bounded cluster run ends when the balance of every process says that nothing is in
    flight (`flows.runtime.balance`). A process alone has
    its learner snapshots say how far the models had learned, and its replica learns
    the rest as the replay does; in a cluster the processes' learners replay in no one
    order, so a replica follows the log as it is.
    """
    secret = deployment_secret(required=True)  # refuse to start without one
    seal, signature = LoopSeal(secret), RecordSignature(secret)
    if settings.key_vault is None:
        logger.warning(
            "WAYFINDER_KEY_VAULT is not set: the records name customers by pseudonym, which "
            "only the key vault resolves (for channels), and decision inputs are sealed under "
            "keys that only the flow's state holds, so `wayfinder rerun` cannot open them"
        )
    playbook = playbook or load_default_playbook()
    config = settings.librdkafka_config()
    clock = EventClock(lateness=allowed_lateness_seconds(), follows_wall=settings.tail, stop=stop)
    challenger = None
    if settings.challenger_playbook:
        challenger = Challenger(
            load_compiled(Path(settings.challenger_playbook)), settings.challenger_models
        )
    resumed = _Resumed()
    if recovery is not None:
        hold(recovery, process)  # no second run snapshots into it meanwhile
        resumes_with_vault(recovery, settings.key_vault)
        resumed = _resume(settings, recovery, process, signature)
    published, since = resumed.published, resumed.since
    # A replay on one process goes in rounds, as an embedded run does: the same outputs
    # every run, and the embedded run's on the same input.
    in_rounds = not settings.tail and settings.ordered and process is None
    loop = LoopLedger(consumers=2 if challenger is not None else 1, rounds=in_rounds)
    source = KafkaInput(
        settings.bootstrap_servers,
        settings.topic(EVENTS),
        clock=clock,
        group=settings.group,
        ledger=loop,
        tail=settings.tail,
        ordered=settings.ordered,
        starting_offset=OFFSET_BEGINNING if settings.start_at == "earliest" else OFFSET_END,
        resuming=resumed.from_snapshots,
        signature=signature,
        config=config,
        replaying=_replaying(published, alone=process is None and workers == 1),
        since=since,
        snapshotted=(lambda: forget_start(recovery)) if recovery is not None else None,
        batch=settings.batch,
        rounds=in_rounds,
    )
    if process is not None:
        ensure_topics(settings, playbook.channels)  # the balance topic may be new
        balance = ClusterBalance(
            config | {"bootstrap.servers": settings.bootstrap_servers},
            settings.topic(BALANCE),
            group=settings.group,
            process=process,
            processes=processes,
            partitions=source.partitions(),
            signature=signature,
            counts=loop.counts,
        )
        loop.in_cluster(balance)
        balance.start()
    sink = DeliveredKafkaSink(
        settings.brokers, config, settings.topic(DLQ), loop=(settings.topic(EVENTS), loop)
    )
    prefix = settings.topic_prefix

    def shape(out: Routed) -> KafkaSinkMessage[bytes | None, bytes | None]:
        topic, key, value = out
        raw_key = key.encode() if key is not None else None
        signed = [(SIGNATURE_HEADER, signature.of(topic, raw_key, value))] if value else []
        return KafkaSinkMessage(key=raw_key, value=value, topic=prefix + topic, headers=signed)

    models = models if models is not None else ModelSet(playbook)
    replica = ModelReplica(models, settings, signature, resumed.ceilings)
    replica.start(models_catch_up_seconds())  # before the flow decides anything
    cold = ColdSettings.from_env()
    place = Place(process, processes, workers) if process is not None else None
    tier = open_cold_tier(cold, recovery=recovery, clock=clock, timers=not in_rounds, place=place)
    view_folder = context_view_folder()
    return build_flow(
        source,
        sink,
        unpack=unpack_kafka,
        shape=shape,
        playbook=playbook,
        clock=clock,
        timers=not in_rounds,  # (rounds fire them on events and at the end, as embedded)
        loop=loop,
        models=models,
        example_log=replica,
        challenger=challenger,
        seal=seal,
        ahead=AheadLimit(max_ahead_seconds()),
        redelivery_horizon=redelivery_horizon_seconds(),
        decision_inputs=settings.decision_inputs,
        key_vault=settings.key_vault,
        published=published,
        shadow_published=resumed.shadow_published,
        cold=tier,
        first_epoch=(resume_epoch(recovery) if recovery is not None else None) or 1,
        views=open_views(view_folder, place) if view_folder is not None else None,
        process=process,
        # (a bounded cluster's end: the balance of every process says all is read and folded)
        read_all=loop.even if process is not None and not settings.tail else None,
    )


class _Resumed(NamedTuple):
    """What a run resuming from a recovery folder starts with."""

    #: A process alone: how far its replica may learn before the replay brings more.
    ceilings: dict[str, int] | None = None
    #: Since when what was published may be what the replay comes to.
    since: float | None = None
    published: Published | None = None
    shadow_published: Published | None = None
    #: Whether the folder holds snapshots the run resumes from.
    from_snapshots: bool = False


def _resume(
    settings: KafkaSettings, recovery: Path, process: int | None, signature: RecordSignature
) -> _Resumed:
    """What the folder's snapshots (or the start of a run in it that crashed before its
    first) say, and what was published since then."""
    resuming = recovery.is_dir() and any(recovery.iterdir())
    if resuming:
        check(recovery)  # one sentence, not bytewax's panic
        drop_abandoned(recovery)  # a crashed run's epochs, which this run runs again
        resuming = holds_snapshots(recovery)
        if resuming:
            metrics.RESUMES.inc()
    ceilings = None
    if resuming and process is None:
        ceilings = resume_ceilings(resumed_snapshots(recovery, LEARNER))
    positions = resumed_snapshots(recovery, INPUT) if resuming else []
    if positions:
        forget_start(recovery)
        since = published_since(positions)
    elif resuming and process is not None:
        forget_start(recovery)  # (the process with the input's snapshots reads back)
        logger.warning(
            "%s holds no snapshot of the input: this process resumes without reading "
            "back what the cluster published before the crash, and may decide some "
            "of it again differently; give every process of a cluster the same folder",
            recovery,
        )
        since = None
    else:
        since = earlier_start(recovery, time.time())
    if since is None:
        return _Resumed(ceilings, from_snapshots=resuming)
    published, shadow = read_published(settings, since, signature)
    return _Resumed(ceilings, since, published, shadow, resuming)


def _replaying(published: Published | None, *, alone: bool) -> Callable[[], bool]:
    """Whether the replay may still come to what was published, as far as the decisions
    say: a worker alone has gone past once it makes one that was not published (it
    reads its input in order); one of several (workers, processes of a cluster) cannot
    tell for the others, and the input's position says (`KafkaInputPartition`)."""
    if published is None:
        return lambda: False
    return published.replaying if alone else lambda: len(published) > 0


class ThisProcess(NamedTuple):
    """Where a process of `python -m bytewax.run` stands."""

    #: The recovery folder (`-r`, or its environment variable).
    recovery: Path | None
    #: This process's id when it is one of a cluster's, None when it runs alone.
    process: int | None
    #: The cluster's processes (1: alone).
    processes: int
    #: This process's workers (`-w`).
    workers: int


def this_process(argv: Sequence[str], env: Mapping[str, str]) -> ThisProcess:
    """From `python -m bytewax.run`'s arguments and environment (`-i/-a`, their
    environment variables, or the Helm chart's pod name and host file, as bytewax
    reads them)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", type=Path)
    parser.add_argument("-i", "--process-id", type=int)
    parser.add_argument("-a", "--addresses")
    parser.add_argument("-w", "--workers-per-process", type=int)
    known, _ = parser.parse_known_args(argv)
    folder = known.recovery_directory or env.get("BYTEWAX_RECOVERY_DIRECTORY")
    process = known.process_id
    if process is None and env.get("BYTEWAX_PROCESS_ID", "").isdigit():
        process = int(env["BYTEWAX_PROCESS_ID"])
    pod, statefulset = env.get("BYTEWAX_POD_NAME", ""), env.get("BYTEWAX_STATEFULSET_NAME")
    if process is None and statefulset and pod.removeprefix(statefulset + "-").isdigit():
        process = int(pod.removeprefix(statefulset + "-"))
    addresses = known.addresses or env.get("BYTEWAX_ADDRESSES") or ""
    if not addresses and env.get("BYTEWAX_HOSTFILE_PATH"):
        with contextlib.suppress(OSError):
            addresses = ";".join(Path(env["BYTEWAX_HOSTFILE_PATH"]).read_text().split())
    processes = len([a for a in addresses.split(";") if a.strip()])
    alone = process is None or processes < 2
    workers = known.workers_per_process
    if workers is None and env.get("BYTEWAX_WORKERS_PER_PROCESS", "").isdigit():
        workers = int(env["BYTEWAX_WORKERS_PER_PROCESS"])
    return ThisProcess(
        Path(folder) if folder else None,
        None if alone else process,
        1 if alone else processes,
        workers or 1,
    )


def serve_metrics(
    settings: KafkaSettings, process: int = 0, processes: int = 1, *, port: int | None = None
) -> MetricsEndpoint | None:
    """This process's metrics endpoint (WAYFINDER_METRICS_*, or `port`), ready once
    caught up with the events topic; None when it is off."""
    where = metrics_settings(port=port)
    if where is None:
        return None
    ready = kafka_readiness(settings.topic(EVENTS), where.ready_lag)
    return serve(where.address, where.port, process=process, processes=processes, ready=ready)


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access, from the environment at that moment, so
    # importing this module (the CLI does) never needs a broker or settings.
    if name == "flow":
        try:
            settings = KafkaSettings.from_env()
            check_connection(settings)  # the connector would retry a refused login for ever
            stop = StopRequest()
            stop.on_signals()  # SIGTERM, Ctrl-C: finish the batch, flush, snapshot, exit 0
            summarise_at_exit(f"wayfinder on Kafka {settings.bootstrap_servers}")
            here = this_process(sys.argv[1:], os.environ)
            flow = kafka_flow(
                settings,
                stop=stop,
                recovery=here.recovery,
                process=here.process,
                processes=here.processes,
                workers=here.workers,
            )
            serve_metrics(settings, here.process or 0, here.processes)
            survivors_frozen_until_exit()  # (bytewax.run runs the flow, then the process ends)
            return flow
        except KafkaUnavailable as exc:  # one line, never the secret
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_KAFKA_UNAVAILABLE) from None
        except (SettingsError, UnusableRecoveryFolder, KeyVaultError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    raise AttributeError(name)
