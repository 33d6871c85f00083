"""Topic set-up with kafka-python's admin client (idempotent, safe to run at every start),
and reading a topic to its end (tools and tests)."""

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from flows.runtime.kafka_check import explain
from flows.runtime.settings import KafkaSettings, load_default_playbook
from schemas.topics import all_topics


def ensure_topics(
    settings: KafkaSettings, channels: tuple[str, ...] | None = None
) -> tuple[list[str], list[str]]:
    """Create every missing Wayfinder topic; return (created, already there), prefixed.

    There is an action topic per playbook channel (the default playbook's unless
    `channels` is given).
    """
    if channels is None:
        channels = load_default_playbook().channels
    wanted = [settings.topic(name) for name in all_topics(channels)]
    try:
        return _create_missing(settings, wanted)
    except KafkaError as exc:  # one line saying why, no traceback
        raise explain(settings, exc, "setting up the topics") from exc


def _create_missing(settings: KafkaSettings, wanted: list[str]) -> tuple[list[str], list[str]]:
    admin = KafkaAdminClient(client_id="wayfinder-topics", **settings.kafka_python_config())
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name=topic,
                            num_partitions=settings.partitions,
                            replication_factor=settings.replication_factor,
                        )
                    ]
                )
                created.append(topic)
            except TopicAlreadyExistsError:  # created meanwhile by another starter
                pass
        return created, [t for t in wanted if t not in created]
    finally:
        admin.close()


def read_topic(
    settings: KafkaSettings, topic: str, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes]]:
    """Every message on the topic now, (key, value), partition by partition."""
    try:
        return _read_to_end(settings, settings.topic(topic), timeout_s)
    except KafkaError as exc:  # one line saying why, no traceback
        raise explain(settings, exc, f"reading {settings.topic(topic)}") from exc


def _read_to_end(
    settings: KafkaSettings, name: str, timeout_s: float
) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_python_config(),
    )
    try:
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        out: list[tuple[bytes | None, bytes]] = []
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                raise TimeoutError(
                    f"{name}: no message within {timeout_s}s, {len(remaining)} partitions short"
                )
            for tp, records in polled.items():
                out += [(r.key, r.value) for r in records]
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        consumer.close()
