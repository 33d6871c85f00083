"""The production flow on Kafka: the events topic in, every output topic out.

`python -m bytewax.run flows.dataflow.kafka:flow` runs it, configured from the
environment (`flows.runtime.settings.KafkaSettings`); `wayfinder run --kafka`
runs the same flow in the foreground with a progress display.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from flows.dataflow.clock import EventClock
from flows.dataflow.decode import AheadLimit, unpack_kafka
from flows.dataflow.delivery import DeliveredKafkaSink
from flows.dataflow.flow import INPUT, Challenger, build_flow
from flows.dataflow.kafka_input import KafkaInput, published_since
from flows.dataflow.learner import LEARNER, resume_ceilings
from flows.dataflow.ledger import LoopLedger
from flows.dataflow.replica import ModelReplica
from flows.dataflow.routing import Routed
from flows.dataflow.stopping import StopRequest
from flows.runtime.kafka_check import EXIT_KAFKA_UNAVAILABLE, KafkaUnavailable, check_connection
from flows.runtime.published import read_published
from flows.runtime.recovery_store import (
    UnusableRecoveryFolder,
    check,
    hold,
    resumed_snapshots,
)
from flows.runtime.runner import summarise_at_exit
from flows.runtime.settings import (
    KafkaSettings,
    SettingsError,
    allowed_lateness_seconds,
    deployment_secret,
    load_compiled,
    load_default_playbook,
    max_ahead_seconds,
    models_catch_up_seconds,
    redelivery_horizon_seconds,
)
from operators.identity import MergeSeal
from operators.models import ModelSet
from operators.playbook import CompiledPlaybook
from schemas.topics import DLQ, EVENTS
from state.key_vault import KeyVaultError

logger = logging.getLogger(__name__)


def kafka_flow(
    settings: KafkaSettings,
    *,
    playbook: CompiledPlaybook | None = None,
    stop: StopRequest | None = None,
    models: ModelSet | None = None,
    recovery: Path | None = None,
) -> Dataflow:
    """The production flow: the events topic in, every output topic out.

    Time is event time either way. Tailing the topic is a service, whose watermark
    follows the wall clock once it has caught up; a bounded run
    (WAYFINDER_KAFKA_TAIL=false) ends where the topic ends. `stop`: what ends the
    input cleanly (the caller turns signals into it).

    The models are this process's replica (`models`, a fresh set when not given),
    learned from the example log: it catches up with the log before this returns
    (WAYFINDER_MODELS_CATCH_UP), then follows it while the flow runs. `recovery`: the
    snapshot folder the run resumes from (one process); its learner snapshots say how
    far the models had learned, and the replica learns the rest as the replay does;
    what was published after its snapshot is read back, and the replay repeats the
    decisions and intent changes among it (`operators.published`).
    """
    seal = MergeSeal(deployment_secret(required=True))  # refuse to start without one
    if settings.decision_inputs and settings.key_vault is None:
        logger.warning(
            "WAYFINDER_KEY_VAULT is not set: decision inputs are sealed under keys that only "
            "the flow's state holds, so `wayfinder rerun` cannot open them"
        )
    playbook = playbook or load_default_playbook()
    config = settings.librdkafka_config()
    clock = EventClock(lateness=allowed_lateness_seconds(), follows_wall=settings.tail, stop=stop)
    challenger = None
    if settings.challenger_playbook:
        challenger = Challenger(
            load_compiled(Path(settings.challenger_playbook)), settings.challenger_models
        )
    ceilings = None
    published = shadow_published = None
    if recovery is not None:
        hold(recovery)  # no second run snapshots into it meanwhile
    if recovery is not None and recovery.is_dir() and any(recovery.iterdir()):
        check(recovery)  # one sentence, not bytewax's panic
        ceilings = resume_ceilings(resumed_snapshots(recovery, LEARNER))
        since = published_since(resumed_snapshots(recovery, INPUT))
        if since is not None:
            published, shadow_published = read_published(settings, since)
    loop = LoopLedger(consumers=2 if challenger is not None else 1)
    source = KafkaInput(
        settings.bootstrap_servers,
        settings.topic(EVENTS),
        clock=clock,
        group=settings.group,
        ledger=loop,
        tail=settings.tail,
        ordered=settings.ordered,
        starting_offset=OFFSET_BEGINNING if settings.start_at == "earliest" else OFFSET_END,
        config=config,
        replaying=published.replaying if published is not None else lambda: False,
        batch=settings.batch,
    )
    sink = DeliveredKafkaSink(
        settings.brokers, config, settings.topic(DLQ), loop=(settings.topic(EVENTS), loop)
    )
    prefix = settings.topic_prefix

    def shape(out: Routed) -> KafkaSinkMessage[bytes | None, bytes | None]:
        topic, key, value = out
        return KafkaSinkMessage(
            key=key.encode() if key is not None else None, value=value, topic=prefix + topic
        )

    models = models if models is not None else ModelSet(playbook)
    replica = ModelReplica(models, settings, ceilings)
    replica.start(models_catch_up_seconds())  # before the flow decides anything
    return build_flow(
        source,
        sink,
        unpack=unpack_kafka,
        shape=shape,
        playbook=playbook,
        clock=clock,
        timers=True,
        loop=loop,
        models=models,
        example_log=replica,
        challenger=challenger,
        seal=seal,
        ahead=AheadLimit(max_ahead_seconds()),
        redelivery_horizon=redelivery_horizon_seconds(),
        decision_inputs=settings.decision_inputs,
        key_vault=settings.key_vault if settings.decision_inputs else None,
        published=published,
        shadow_published=shadow_published,
    )


def _single_process_recovery() -> Path | None:
    """The recovery folder `python -m bytewax.run` was given (`-r`, or its environment
    variable) when it runs one process. In a cluster the processes' learners replay in
    no one order, so a replica follows the log as it is."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", type=Path)
    parser.add_argument("-a", "--addresses")
    known, _ = parser.parse_known_args(sys.argv[1:])
    folder = known.recovery_directory or os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    addresses = known.addresses or os.environ.get("BYTEWAX_ADDRESSES") or ""
    return Path(folder) if folder and ";" not in addresses else None


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
            return kafka_flow(settings, stop=stop, recovery=_single_process_recovery())
        except KafkaUnavailable as exc:  # one line, never the secret
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_KAFKA_UNAVAILABLE) from None
        except (SettingsError, UnusableRecoveryFolder, KeyVaultError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    raise AttributeError(name)
