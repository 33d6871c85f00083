"""The production flow on Kafka: the events topic in, every output topic out.

`python -m bytewax.run flows.dataflow.kafka:flow` runs it, configured from the
environment (`flows.runtime.settings.KafkaSettings`); `wayfinder run --kafka`
runs the same flow in the foreground with a progress display.
"""

from pathlib import Path

from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from flows.dataflow.decode import AheadLimit, unpack_kafka
from flows.dataflow.delivery import DeliveredKafkaSink
from flows.dataflow.flow import Challenger, build_flow
from flows.dataflow.routing import Routed
from flows.runtime.kafka_check import KafkaUnavailable, check_connection
from flows.runtime.settings import (
    KafkaSettings,
    SettingsError,
    deployment_secret,
    load_compiled,
    load_default_playbook,
    max_ahead_seconds,
    redelivery_horizon_seconds,
)
from operators.identity import MergeSeal
from operators.playbook import CompiledPlaybook
from schemas.topics import DLQ


def kafka_flow(settings: KafkaSettings, *, playbook: CompiledPlaybook | None = None) -> Dataflow:
    """The production flow: the events topic in, every output topic out.

    Tailing the topic is a live service (wall-clock timers); a bounded run
    (WAYFINDER_KAFKA_TAIL=false) is a replay in event time.
    """
    seal = MergeSeal(deployment_secret(required=True))  # refuse to start without one
    playbook = playbook or load_default_playbook()
    config = settings.librdkafka_config()
    source = KafkaSource(
        settings.brokers,
        [settings.topic("events")],
        tail=settings.tail,
        starting_offset=OFFSET_BEGINNING if settings.start_at == "earliest" else OFFSET_END,
        add_config=config,
    )
    sink = DeliveredKafkaSink(settings.brokers, config, settings.topic(DLQ))
    prefix = settings.topic_prefix

    def shape(out: Routed) -> KafkaSinkMessage[bytes | None, bytes | None]:
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
        unpack=unpack_kafka,
        shape=shape,
        playbook=playbook,
        live=settings.tail,
        challenger=challenger,
        seal=seal,
        ahead=AheadLimit(max_ahead_seconds()),
        redelivery_horizon=redelivery_horizon_seconds(),
        decision_inputs=settings.decision_inputs,
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access, from the environment at that moment, so
    # importing this module (the CLI does) never needs a broker or settings.
    if name == "flow":
        try:
            settings = KafkaSettings.from_env()
            check_connection(settings)  # the connector would retry a refused login for ever
            return kafka_flow(settings)
        except (SettingsError, KafkaUnavailable) as exc:  # one line, never the secret
            raise SystemExit(f"error: {exc}") from None
    raise AttributeError(name)
