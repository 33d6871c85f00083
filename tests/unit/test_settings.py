"""Settings from the environment reach every Kafka client, in each client's spelling."""

import msgspec
import pytest

from flows.runtime.settings import (
    LAB_SECRET,
    ColdSettings,
    KafkaSettings,
    SettingsError,
    deployment_secret,
)
from operators.identity import LoopSeal
from schemas.event import Event, ProfileMerge
from schemas.topics import all_topics
from tests.helpers import T0


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


def test_the_kafka_service_refuses_to_start_without_a_secret_of_its_own():
    with pytest.raises(SettingsError, match="WAYFINDER_STATE_KEY_SECRET is not set"):
        deployment_secret({}, required=True)
    with pytest.raises(SettingsError, match="at least 16 bytes"):
        deployment_secret({"WAYFINDER_STATE_KEY_SECRET": "short"}, required=True)
    secret = "a-secret-of-thirty-two-bytes-xyz"
    assert (
        deployment_secret({"WAYFINDER_STATE_KEY_SECRET": secret}, required=True) == secret.encode()
    )


def test_an_embedded_run_without_a_secret_uses_the_public_lab_secret():
    assert deployment_secret({}) == LAB_SECRET


KEY = b"k" * 32


def test_a_merge_signed_under_one_secret_does_not_verify_under_another():
    seal = LoopSeal(b"one-secret-of-16-bytes")

    def merge_event(context: bytes = b"ctx", to: str = "c1" * 16) -> Event:
        merge = ProfileMerge(source="a1" * 16, login_id="login-1", sealed_to=KEY, context=context)
        return Event(event_id="m1", ts=T0, type="profile_merge", channel="web", to=to, merge=merge)

    signed = seal.signed(merge_event())
    assert signed.signature is not None and seal.verify(signed)
    assert not LoopSeal(b"another-secret-16b").verify(signed)
    assert not seal.verify(merge_event())  # unsigned
    assert not seal.verify(msgspec.structs.replace(signed, signature="0" * 64))
    for altered in (merge_event(context=b"other"), merge_event(to="c2" * 16)):
        assert not seal.verify(msgspec.structs.replace(altered, signature=signed.signature))


def test_the_hot_set_is_bounded_by_a_count_only_when_asked():
    assert ColdSettings.from_env({}).most is None
    assert ColdSettings.from_env({"WAYFINDER_HOT_MAX": "off"}).most is None
    assert ColdSettings.from_env({"WAYFINDER_HOT_MAX": "250000"}).most == 250_000
    for wrong in ("0", "-3", "many"):
        with pytest.raises(SettingsError, match="WAYFINDER_HOT_MAX"):
            ColdSettings.from_env({"WAYFINDER_HOT_MAX": wrong})
