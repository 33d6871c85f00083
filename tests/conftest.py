"""Shared fixtures: the bytewax entry points flow tests run on, the real Kafka broker
that `make test` starts, and per-test topics."""

import os
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

#: The deployment secret every run in the suite uses (the Kafka flow refuses to start
#: without one); set before any module reads it, and passed on to the CLI's processes.
os.environ.setdefault("WAYFINDER_STATE_KEY_SECRET", "wayfinder-test-suite-secret")
#: Each Kafka process the suite starts serves its metrics on a port the system picks:
#: many run at once (a test that reads an endpoint names its own port).
os.environ.setdefault("WAYFINDER_METRICS_PORT", "0")

from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import ensure_topics
from tests.flow_helpers import ENTRY_POINTS, EntryPoint


def pytest_sessionstart(session: pytest.Session) -> None:
    """A module compiled with mypyc (scripts/compile) is imported instead of its source:
    the suite does not run on one built from an older source (`make compile`)."""
    repo = Path(__file__).resolve().parents[1]
    stale = [
        str(source.relative_to(repo))
        for package in ("schemas", "state", "operators", "flows")
        for build in (repo / package).rglob("*.so")
        if (source := build.with_name(build.name.split(".", 1)[0] + ".py")).exists()
        and source.stat().st_mtime > build.stat().st_mtime
    ]
    if stale:
        pytest.exit(f"compiled before their source last changed: {stale}; run `make compile`", 2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """An integration test that skips has not run: in this suite that is a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("integration") is not None:
        report.outcome = "failed"
        report.longrepr = f"integration test was skipped ({report.longrepr}); it must run"


#: The topic prefixes this session created, by bootstrap servers (see `pytest_sessionfinish`).
_CREATED: dict[str, list[str]] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Delete the topics the session created: a broker kept between runs (the working
    copy's, or a cluster named by KAFKA_BOOTSTRAP_SERVERS) would otherwise gather
    thousands of partitions, and a broker with ~20,000 took longer to start than
    `scripts/kafka up` waits. A session with a failure keeps them, to be read."""
    if session.testsfailed:
        kept = [prefix for prefixes in _CREATED.values() for prefix in prefixes]
        print(f"\ntest topics kept after a failure: {len(kept)} prefixes", file=sys.stderr)
        return
    for servers, prefixes in _CREATED.items():
        try:
            admin = KafkaAdminClient(bootstrap_servers=servers)
            try:
                ours = [t for t in admin.list_topics() if t.startswith(tuple(prefixes))]
                if ours:
                    admin.delete_topics(ours)
            finally:
                admin.close()
        except KafkaError as exc:  # the run's outcome stands; what is left is said
            print(f"test topics left on {servers}: {exc}", file=sys.stderr)


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


def fresh_topics(
    bootstrap_servers: str,
    name: str = "test",
    partitions: int = 3,
    *,
    tail: bool = False,
    channels: tuple[str, ...] | None = None,
    key_vault: Path | None = None,
) -> KafkaSettings:
    """Settings on topics of their own (`wf-NAME-<random>.`), created; a bounded run's
    unless `tail`; the flow's key vault in `key_vault`."""
    settings = KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"wf-{name}-{uuid.uuid4().hex[:10]}.",
        partitions=partitions,
        tail=tail,
        key_vault=key_vault,
    )
    ensure_topics(settings, channels)
    _CREATED.setdefault(bootstrap_servers, []).append(settings.topic_prefix)
    return settings


@pytest.fixture
def kafka(bootstrap_servers: str, tmp_path: Path) -> KafkaSettings:
    """Settings with a topic prefix of this test's own, its topics created, and a key
    vault in the test's folder."""
    return fresh_topics(bootstrap_servers, key_vault=tmp_path / "keys")


def kafka_env(settings: KafkaSettings) -> dict[str, str]:
    """The environment a user would set to point the flow at these topics."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYFINDER_TOPIC_PREFIX": settings.topic_prefix,
        "WAYFINDER_TOPIC_PARTITIONS": str(settings.partitions),
        "WAYFINDER_KAFKA_TAIL": "false",
        **({"WAYFINDER_KEY_VAULT": str(settings.key_vault)} if settings.key_vault else {}),
    }
