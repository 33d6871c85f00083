"""Metadata calls ask again through a leader election and give up on a real refusal."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from flows.runtime.kafka_metadata import ask, transient


def _refusal(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


def test_a_leader_election_is_asked_through_until_the_answer() -> None:
    answers: list[object] = [
        _refusal(KafkaError.NOT_LEADER_FOR_PARTITION),
        _refusal(KafkaError.LEADER_NOT_AVAILABLE),
        42,
    ]

    def call(left: float) -> int:
        assert left > 0
        answer = answers.pop(0)
        if isinstance(answer, KafkaException):
            raise answer
        assert isinstance(answer, int)
        return answer

    assert ask(call, timeout=5) == 42
    assert not answers


def test_a_refusal_that_asking_again_cannot_mend_is_raised_at_once() -> None:
    calls = 0

    def call(_left: float) -> int:
        nonlocal calls
        calls += 1
        raise _refusal(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaException):
        ask(call, timeout=5)
    assert calls == 1


def test_a_leader_that_never_comes_back_ends_in_its_error_at_the_deadline() -> None:
    def call(_left: float) -> int:
        raise _refusal(KafkaError.NOT_LEADER_FOR_PARTITION)

    with pytest.raises(KafkaException) as raised:
        ask(call, timeout=0.3)
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION


def test_only_kafka_errors_about_the_moment_are_transient() -> None:
    assert transient(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
    assert not transient(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    assert not transient(ValueError("not a Kafka error"))
    assert transient(KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION)))  # (its carrier)
