"""Topic set-up with kafka-python's admin client: idempotent, safe to run at every start."""

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from flows.settings import KafkaSettings, all_topics, load_default_playbook


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
