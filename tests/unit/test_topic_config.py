"""What each topic is created with: the retention settings, and the table of uses."""

import pytest

from flows.runtime.settings import FOREVER, KafkaSettings, SettingsError, TopicRetention
from flows.runtime.topics import ACTIONS, describe_use, topic_uses, use_of
from schemas.topics import BALANCE, CORE_TOPICS, kafka_topics

DAY_MS = 86_400_000


def test_retention_defaults_are_an_audit_horizon_and_a_month_of_dead_letters():
    assert TopicRetention.from_env({}) == TopicRetention(
        decisions_ms=90 * DAY_MS, dlq_ms=30 * DAY_MS
    )
    assert TopicRetention() == TopicRetention.from_env({})


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("12w", 84 * DAY_MS),
        ("36h", 36 * 3_600_000),
        ("1d12h", 36 * 3_600_000),
        ("forever", FOREVER),
    ],
)
def test_retention_is_a_duration_or_forever(value, ms):
    retention = TopicRetention.from_env(
        {"WAYFINDER_DECISIONS_RETENTION": value, "WAYFINDER_DLQ_RETENTION": value}
    )
    assert retention == TopicRetention(decisions_ms=ms, dlq_ms=ms)


@pytest.mark.parametrize("name", ["WAYFINDER_DECISIONS_RETENTION", "WAYFINDER_DLQ_RETENTION"])
@pytest.mark.parametrize("value", ["soon", "90", "-5d", "10m", "20000d"])
def test_a_bad_retention_names_the_variable_and_what_it_takes(name, value):
    with pytest.raises(SettingsError, match=f"{name}=.*forever"):
        TopicRetention.from_env({name: value})


def test_every_topic_has_a_use():
    uses = topic_uses(KafkaSettings(), TopicRetention())
    assert set(uses) == {*CORE_TOPICS, BALANCE, ACTIONS}
    for name in kafka_topics(("web", "call_centre")):
        assert use_of(uses, name).purpose


def test_each_topic_is_configured_for_its_use():
    settings = KafkaSettings(partitions=6)
    uses = topic_uses(settings, TopicRetention(decisions_ms=2 * DAY_MS, dlq_ms=DAY_MS))

    def config(topic: str) -> dict[str, str]:
        return {key: s.value for key, s in uses[topic].config.items()}

    assert config("audiences")["cleanup.policy"] == "compact"
    for audit in ("decisions", "decisions.inputs", "decisions.shadow"):
        assert config(audit) == {
            "cleanup.policy": "delete",
            "retention.ms": str(2 * DAY_MS),
            "retention.bytes": "-1",
        }
    assert config("dlq") == {"cleanup.policy": "delete", "retention.ms": str(DAY_MS)}
    assert config("models.examples") == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
    }
    assert uses["models.examples"].partitions == 1 and not uses["models.examples"].scaled
    # A cluster's balance: one partition, every report read by every process, for an hour.
    assert config("cluster.balance") == {"cleanup.policy": "delete", "retention.ms": "3600000"}
    assert uses["cluster.balance"].partitions == 1 and not uses["cluster.balance"].scaled
    # Every other topic has the events topic's partitions; those without a config of
    # their own keep the cluster's defaults.
    assert {name for name, use in uses.items() if use.partitions != 6} == {
        "models.examples",
        "cluster.balance",
    }
    assert {name for name, use in uses.items() if not use.config} == {
        "events",
        "actions",
        "journeys",
        "analytics",
    }
    assert describe_use(uses["audiences"]) == (
        "6 partitions, cleanup.policy=compact, min.compaction.lag.ms=1d, "
        "max.compaction.lag.ms=7d, delete.retention.ms=7d"
    )
    assert describe_use(uses["models.examples"]) == (
        "1 partition, cleanup.policy=delete, retention.ms=forever, retention.bytes=-1"
    )
