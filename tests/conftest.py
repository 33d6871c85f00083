"""Shared fixtures: the bytewax entry points flow tests run on, the real Kafka broker
that `make test` starts, and per-test topics."""

import os
import uuid

import pytest

#: The deployment secret every run in the suite uses (the Kafka flow refuses to start
#: without one); set before any module reads it, and passed on to the CLI's processes.
os.environ.setdefault("WAYFINDER_STATE_KEY_SECRET", "wayfinder-test-suite-secret")

from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import ensure_topics
from tests.flow_helpers import ENTRY_POINTS, EntryPoint


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """An integration test that skips has not run: in this suite that is a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("integration") is not None:
        report.outcome = "failed"
        report.longrepr = f"integration test was skipped ({report.longrepr}); it must run"


@pytest.fixture(params=sorted(ENTRY_POINTS))
def entry_point(request: pytest.FixtureRequest) -> EntryPoint:
    """Run a version of the test for each way bytewax runs a flow in this process, as
    bytewax's own suite does: `run_main` (one worker, in this thread) and `cluster_main`
    with two worker threads."""
    name: str = request.param
    return ENTRY_POINTS[name]


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        pytest.fail(
            "KAFKA_BOOTSTRAP_SERVERS is not set: run the suite with `make test`, which starts Kafka"
        )
    return servers


@pytest.fixture
def kafka(bootstrap_servers: str) -> KafkaSettings:
    """Settings with a topic prefix of this test's own, and its topics created."""
    settings = KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"wf-test-{uuid.uuid4().hex[:10]}.",
        partitions=3,
        tail=False,
    )
    ensure_topics(settings)
    return settings


def kafka_env(settings: KafkaSettings) -> dict[str, str]:
    """The environment a user would set to point the flow at these topics."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYFINDER_TOPIC_PREFIX": settings.topic_prefix,
        "WAYFINDER_TOPIC_PARTITIONS": str(settings.partitions),
        "WAYFINDER_KAFKA_TAIL": "false",
    }
