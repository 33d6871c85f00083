"""`wayfinder topics` on the real broker: each topic created with the configuration its
use needs, and existing topics checked (warned about, never altered)."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.admin import ConfigResource, KafkaAdminClient

from flows.runtime.settings import KafkaSettings, TopicRetention
from flows.runtime.topics import set_up_topics
from schemas.topics import kafka_topics
from tests.conftest import kafka_env
from tests.e2e.cli import wayfinder

pytestmark = pytest.mark.integration

CHANNELS = ("web", "chat")
DAY_MS = 86_400_000


@pytest.fixture
def admin(bootstrap_servers: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def settings(bootstrap_servers: str, admin: KafkaAdminClient) -> Iterator[KafkaSettings]:
    """Settings with a prefix of this test's own; its topics are deleted afterwards."""
    prefix = f"wf-topics-{uuid.uuid4().hex[:10]}."
    yield KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=prefix, partitions=3)
    ours = [t for t in admin.list_topics() if t.startswith(prefix)]
    if ours:
        admin.delete_topics(ours)


def configs(admin: KafkaAdminClient, topic: str, *keys: str) -> dict[str, str]:
    """The topic's configs as the broker reports them (defaults included)."""
    described: dict[str, dict[str, Any]] = admin.describe_configs(
        [ConfigResource("TOPIC", topic, list(keys))], config_filter="all"
    )["topic"][topic]
    return {key: described[key]["value"] for key in keys}


def partitions(admin: KafkaAdminClient, topic: str) -> int:
    (described,) = admin.describe_topics([topic])
    return len(described["partitions"])


def test_each_topic_is_created_configured_for_its_use(settings, admin):
    retention = TopicRetention.from_env(
        {"WAYFINDER_DECISIONS_RETENTION": "2d", "WAYFINDER_DLQ_RETENTION": "36h"}
    )
    done = set_up_topics(settings, CHANNELS, retention)
    assert done.created == [settings.topic(t) for t in kafka_topics(CHANNELS)]
    assert done.existing == [] and done.warnings == []

    # Segment changes and erasure tombstones: compacted.
    audiences = settings.topic("audiences")
    assert configs(admin, audiences, "cleanup.policy", "delete.retention.ms") == {
        "cleanup.policy": "compact",
        "delete.retention.ms": str(7 * DAY_MS),
    }
    # The audit trail and the dead letters: kept as long as their settings say.
    for topic in ("decisions", "decisions.inputs", "decisions.shadow"):
        assert configs(admin, settings.topic(topic), "retention.ms", "cleanup.policy") == {
            "retention.ms": str(2 * DAY_MS),
            "cleanup.policy": "delete",
        }
    assert configs(admin, settings.topic("dlq"), "retention.ms") == {
        "retention.ms": str(DAY_MS * 3 // 2)
    }
    # The example log models are rebuilt from: never loses a record, one order.
    examples = settings.topic("models.examples")
    assert configs(admin, examples, "retention.ms", "retention.bytes", "cleanup.policy") == {
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "cleanup.policy": "delete",
    }
    assert partitions(admin, examples) == 1
    # Everything else keyed by customer scales with the events topic.
    for topic in ("events", "audiences", "decisions", "actions.web", "dlq"):
        assert partitions(admin, settings.topic(topic)) == settings.partitions
    # The cluster's defaults where the use needs none.
    assert configs(admin, settings.topic("journeys"), "cleanup.policy") == {
        "cleanup.policy": "delete"
    }

    again = set_up_topics(settings, CHANNELS, retention)
    assert again.created == [] and again.warnings == []
    assert again.existing == done.created


def test_an_existing_topic_configured_otherwise_is_warned_about_and_left_alone(settings, admin):
    audiences, examples = settings.topic("audiences"), settings.topic("models.examples")
    admin.create_topics(
        {
            audiences: {"num_partitions": 2, "replication_factor": 1},
            examples: {
                "num_partitions": 1,
                "replication_factor": 1,
                "configs": {"retention.ms": str(7 * DAY_MS)},
            },
        },
        wait_for_metadata=True,
    )

    env = {**kafka_env(settings), "COLUMNS": "400"}
    out = wayfinder("topics", env=env)  # exits 0: warnings are not failures
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert any(
        w.startswith(f"warning: {audiences}: cleanup.policy is delete, expected compact (")
        and "kafka-configs.sh" in w
        for w in warnings
    ), out
    assert any(w.startswith(f"warning: {audiences}: 2 partitions, expected 3 (") for w in warnings)
    assert any(
        w.startswith(f"warning: {examples}: retention.ms is {7 * DAY_MS} (7d), expected -1")
        for w in warnings
    ), out
    # Only the two topics made otherwise are warned about, each difference once.
    assert {w.split(":")[1].strip() for w in warnings} == {audiences, examples}
    assert f"exists   {audiences}" in out and f"created  {settings.topic('events')}" in out
    assert f"{len(warnings)} warnings" in out

    # Nothing was altered.
    assert configs(admin, audiences, "cleanup.policy") == {"cleanup.policy": "delete"}
    assert configs(admin, examples, "retention.ms") == {"retention.ms": str(7 * DAY_MS)}
    assert partitions(admin, audiences) == 2
