"""Settings from the environment reach every Kafka client, in each client's spelling."""

import pytest

from flows.runtime.settings import KafkaSettings, SettingsError
from schemas.topics import all_topics


def test_security_settings_pass_through_to_both_clients():
    settings = KafkaSettings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
            "WAYFINDER_TOPIC_PREFIX": "prod.",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "wayfinder",
            "KAFKA_SASL_PASSWORD": "secret",
            "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        }
    )
    assert settings.brokers == ["b1:9093", "b2:9093"]
    assert settings.topic("events") == "prod.events"
    assert settings.librdkafka_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "wayfinder",
        "sasl.password": "secret",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert settings.kafka_python_config() == {
        "bootstrap_servers": "b1:9093,b2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "wayfinder",
        "sasl_plain_password": "secret",
        "ssl_cafile": "/etc/ca.pem",
    }


def test_defaults_need_no_environment():
    settings = KafkaSettings.from_env({})
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic_prefix == "wayfinder."
    assert settings.tail and settings.partitions > 1
    assert settings.librdkafka_config() == {}
    assert settings.decision_inputs  # every decision can be re-run unless turned off
    assert not KafkaSettings.from_env({"WAYFINDER_DECISION_INPUTS": "false"}).decision_inputs


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAYFINDER_TOPIC_PARTITIONS", "many"),
        ("WAYFINDER_TOPIC_PARTITIONS", "0"),
        ("WAYFINDER_KAFKA_TAIL", "perhaps"),
        ("WAYFINDER_DECISION_INPUTS", "sometimes"),
        ("WAYFINDER_START_AT", "yesterday"),
    ],
)
def test_bad_setting_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        KafkaSettings.from_env({name: value})


def test_every_channel_has_an_action_topic_beside_the_core_topics():
    topics = all_topics(("web", "chat"))
    assert topics[:9] == [
        "events",
        "journeys",
        "decisions",
        "audiences",
        "analytics",
        "dlq",
        "decisions.shadow",
        "decisions.inputs",
        "models.examples",
    ]
    assert topics[9:] == ["actions.web", "actions.chat"]
