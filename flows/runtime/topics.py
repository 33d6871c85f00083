"""Topic set-up with kafka-python's admin client (idempotent, safe to run at every start),
and reading a topic to its end (tools and tests).

Each topic is created with the configuration its use needs: `topic_uses` is the one
place that decides it. Topics that are already there are never altered; `set_up_topics`
describes them and says, per difference, what differs, why it matters and how to change it.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from flows.runtime.kafka_check import explain
from flows.runtime.settings import (
    FOREVER,
    KafkaSettings,
    TopicRetention,
    kafka_timeout_seconds,
    load_default_playbook,
)
from flows.runtime.signature import RecordSignature
from schemas.topics import (
    ANALYTICS,
    AUDIENCES,
    BALANCE,
    DECISION_INPUTS,
    DECISIONS,
    DLQ,
    EVENTS,
    JOURNEYS,
    MODEL_EXAMPLES,
    SHADOW_DECISIONS,
    action_topic,
    kafka_topics,
)

#: The name that stands for every `actions.<channel>` topic in `topic_uses`.
ACTIONS = "actions"
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True)
class Setting:
    """One topic config, and why it is set so (an existing topic's warning says it)."""

    value: str
    why: str


@dataclass(frozen=True)
class TopicUse:
    """What a topic is for, and the configuration that serves it. Configs not named here
    are the cluster's defaults (retention 7 days unless the cluster says otherwise)."""

    purpose: str
    partitions: int
    #: Why that many partitions.
    partitions_why: str
    config: Mapping[str, Setting] = field(default_factory=dict)
    #: The partitions are WAYFINDER_TOPIC_PARTITIONS (else a count of the topic's own).
    scaled: bool = True


def topic_uses(settings: KafkaSettings, retention: TopicRetention) -> dict[str, TopicUse]:
    """Every topic (without the prefix; `actions` stands for each `actions.<channel>`):
    what it is for, its partitions and its configuration."""
    scale = settings.partitions
    scale_why = "WAYFINDER_TOPIC_PARTITIONS: the unit of scale-out of the flow and its consumers"
    audit = {
        "cleanup.policy": Setting("delete", "the audit trail is kept by time, never compacted"),
        "retention.ms": Setting(
            str(retention.decisions_ms),
            "WAYFINDER_DECISIONS_RETENTION, the audit horizon: a decision can be explained and "
            "re-run while it and its input are kept",
        ),
        "retention.bytes": Setting("-1", "the audit horizon is a time, never cut short by size"),
    }
    return {
        EVENTS: TopicUse(
            "the input, keyed by customer (else anonymous id), and the flow's own merges and "
            "forwards",
            scale,
            scale_why,
        ),
        ACTIONS: TopicUse("one channel's next actions, keyed by customer", scale, scale_why),
        JOURNEYS: TopicUse("journey and intent transitions, keyed by customer", scale, scale_why),
        DECISIONS: TopicUse(
            "every decision, sent or suppressed, with its reasons (the audit trail)",
            scale,
            scale_why,
            audit,
        ),
        DECISION_INPUTS: TopicUse(
            "what each decision was made from, for `wayfinder rerun`", scale, scale_why, audit
        ),
        SHADOW_DECISIONS: TopicUse(
            "a challenger playbook's decisions, never sent", scale, scale_why, audit
        ),
        AUDIENCES: TopicUse(
            "segment entries and exits, keyed by customer; a tombstone (null value) when a "
            "customer is erased",
            scale,
            scale_why,
            {
                "cleanup.policy": Setting(
                    "compact",
                    "compaction keeps each customer's latest change, and an erased customer's "
                    "tombstone removes every earlier one",
                ),
                "min.compaction.lag.ms": Setting(
                    str(_DAY_MS),
                    "every change stays readable for a day before compaction may drop it",
                ),
                "max.compaction.lag.ms": Setting(
                    str(7 * _DAY_MS),
                    "an erased customer's earlier changes are gone from the log within a week",
                ),
                "delete.retention.ms": Setting(
                    str(7 * _DAY_MS),
                    "a consumer that was away for less than a week still sees the tombstone",
                ),
            },
        ),
        ANALYTICS: TopicUse(
            "contact-point map and KPI snapshots, keyed by scope", scale, scale_why
        ),
        DLQ: TopicUse(
            "dead letters: bad input and undeliverable output, with the reason and the raw bytes",
            scale,
            scale_why,
            {
                "cleanup.policy": Setting(
                    "delete", "dead letters carry no key, and a compacted topic refuses those"
                ),
                "retention.ms": Setting(
                    str(retention.dlq_ms),
                    "WAYFINDER_DLQ_RETENTION: time to notice, fix the producer and replay",
                ),
            },
        ),
        MODEL_EXAMPLES: TopicUse(
            "every example the models learned, numbered, keyed by model: each process's "
            "model replica and `wayfinder rerun` rebuild the models from it",
            1,
            "one partition keeps every model's examples in one order; on more, each model's "
            "stay in order on its key's partition only as long as no partition is added",
            {
                "cleanup.policy": Setting(
                    "delete",
                    "keyed by model, compaction would keep one message per model: the models' "
                    "history lost",
                ),
                "retention.ms": Setting(
                    str(FOREVER),
                    "a model version is rebuilt from example 1 on: one example lost loses every "
                    "later version",
                ),
                "retention.bytes": Setting(
                    "-1",
                    "a model version is rebuilt from example 1 on: one example lost loses every "
                    "later version",
                ),
            },
            scaled=False,
        ),
        BALANCE: TopicUse(
            "a cluster's processes say, several times a second, what of their loop is in "
            "flight: a bounded run ends when nothing is, anywhere",
            1,
            "one partition: every process reads every report, in one order",
            {
                "cleanup.policy": Setting("delete", "a report matters for seconds: kept by time"),
                "retention.ms": Setting(
                    str(_HOUR_MS), "a report matters for seconds; an hour covers any reader"
                ),
            },
            scaled=False,
        ),
    }


def use_of(uses: Mapping[str, TopicUse], name: str) -> TopicUse:
    """The use of a topic named without the prefix (an action topic's: `actions`)."""
    if name.startswith(action_topic("")):
        return uses[ACTIONS]
    return uses[name]


@dataclass
class TopicSetUp:
    """What `set_up_topics` did and found: topic names with the prefix."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    #: One line per way an existing topic differs from its use (it was not changed).
    warnings: list[str] = field(default_factory=list)


def set_up_topics(
    settings: KafkaSettings,
    channels: tuple[str, ...] | None = None,
    retention: TopicRetention | None = None,
    *,
    check: bool = True,
) -> TopicSetUp:
    """Create every missing Wayfinder topic with the configuration of its use and, with
    `check`, compare the existing ones with theirs (warnings; nothing is altered).

    There is an action topic per playbook channel (the default playbook's unless
    `channels` is given); retention comes from the environment unless given.
    """
    if channels is None:
        channels = load_default_playbook().channels
    uses = topic_uses(settings, TopicRetention.from_env() if retention is None else retention)
    wanted = {settings.topic(name): use_of(uses, name) for name in kafka_topics(channels)}
    try:
        return _set_up(settings, wanted, check)
    except KafkaError as exc:  # one line saying why, no traceback
        raise explain(settings, exc, "setting up the topics") from exc


def ensure_topics(
    settings: KafkaSettings,
    channels: tuple[str, ...] | None = None,
    retention: TopicRetention | None = None,
) -> tuple[list[str], list[str]]:
    """Create every missing Wayfinder topic, configured for its use (existing topics are
    not checked); return (created, already there), prefixed."""
    done = set_up_topics(settings, channels, retention, check=False)
    return done.created, done.existing


def _set_up(settings: KafkaSettings, wanted: dict[str, TopicUse], check: bool) -> TopicSetUp:
    admin = KafkaAdminClient(client_id="wayfinder-topics", **settings.kafka_python_config())
    try:
        present = set(admin.list_topics())
        missing = {name: use for name, use in wanted.items() if name not in present}
        done = TopicSetUp(created=_create(admin, settings, missing) if missing else [])
        done.existing = [name for name in wanted if name not in done.created]
        if check and done.existing:
            done.warnings = _differences(
                admin, settings, {name: wanted[name] for name in done.existing}
            )
        return done
    finally:
        admin.close()


def _create(
    admin: KafkaAdminClient, settings: KafkaSettings, missing: dict[str, TopicUse]
) -> list[str]:
    """Create the topics in one request; those another starter created meanwhile are
    not ours. Wait until the new ones have leaders, so that they take messages at once."""
    response = admin.create_topics(
        {
            name: {
                "num_partitions": use.partitions,
                "replication_factor": settings.replication_factor,
                "configs": {key: setting.value for key, setting in use.config.items()},
            }
            for name, use in missing.items()
        },
        raise_errors=False,
    )
    created = []
    for topic in response["topics"]:
        error = for_code(topic["error_code"])
        if error is TopicAlreadyExistsError:
            continue
        if topic["error_code"] != 0:
            raise error(f"{topic['name']}: {topic['error_message']}")
        created.append(topic["name"])
    # A broker that has just started (or is busy) can take far longer than the client's
    # default 10 s to give new topics their leaders: seen on a fresh broker in a test run.
    admin.wait_for_topics(created, timeout_ms=int(3 * kafka_timeout_seconds() * 1000))
    return [name for name in missing if name in created]  # in the order they were wanted


def _differences(
    admin: KafkaAdminClient, settings: KafkaSettings, existing: dict[str, TopicUse]
) -> list[str]:
    """One warning per way an existing topic differs from its use."""
    layout = {t["name"]: t.get("partitions") or [] for t in admin.describe_topics(list(existing))}
    asked = [ConfigResource("TOPIC", name, list(use.config)) for name, use in existing.items()]
    asked = [resource for resource in asked if resource.configs]
    described: dict[str, dict[str, Any]] = (
        admin.describe_configs(asked, config_filter="all").get("topic", {}) if asked else {}
    )
    warnings: list[str] = []
    for name, use in existing.items():
        warnings += _layout_differences(settings, name, use, layout.get(name, []))
        if not use.config:
            continue
        configs = described.get(name, {})
        if not configs:
            warnings.append(f"{name}: its configuration could not be read (DescribeConfigs)")
            continue
        for key, setting in use.config.items():
            actual = configs.get(key, {}).get("value")
            if actual is None or not _same(key, actual, setting.value):
                warnings.append(_config_warning(settings, name, key, actual, setting))
    return warnings


def _layout_differences(
    settings: KafkaSettings, name: str, use: TopicUse, partitions: list[dict[str, Any]]
) -> list[str]:
    """Partition count and replication factor, against the use and the settings."""
    if not partitions:  # not in the metadata yet: nothing to compare
        return []
    warnings = []
    count = len(partitions)
    if count != use.partitions:
        if count < use.partitions:
            fix = (
                f"`kafka-topics.sh --bootstrap-server {settings.brokers[0]} --alter --topic "
                f"{name} --partitions {use.partitions}` while the flow is stopped (keys then "
                "map to other partitions)"
            )
        else:
            fix = "Kafka cannot take partitions away: leave it, or delete and re-create it (empty)"
        if use.scaled:
            fix += f", or set WAYFINDER_TOPIC_PARTITIONS={count}"
        warnings.append(
            f"{name}: {count} partitions, expected {use.partitions} ({use.partitions_why}): {fix}"
        )
    replicas = min(len(p.get("replica_nodes") or []) for p in partitions)
    if replicas != settings.replication_factor:
        warnings.append(
            f"{name}: replication factor {replicas}, expected {settings.replication_factor} "
            "(WAYFINDER_TOPIC_REPLICATION): `kafka-reassign-partitions.sh` changes it, or "
            "delete and re-create the topic"
        )
    return warnings


def _config_warning(
    settings: KafkaSettings, name: str, key: str, actual: str | None, wanted: Setting
) -> str:
    alter = (
        f"`kafka-configs.sh --bootstrap-server {settings.brokers[0]} --alter --entity-type "
        f"topics --entity-name {name} --add-config {key}={wanted.value}`"
    )
    found = "not set" if actual is None else f"is {_shown(key, actual)}"
    return (
        f"{name}: {key} {found}, expected {_shown(key, wanted.value)} ({wanted.why}): "
        f"{alter}, or delete and re-create the topic"
    )


def _same(key: str, actual: str, expected: str) -> bool:
    if key == "cleanup.policy":  # a list: "compact,delete" is "delete, compact"
        return {p.strip() for p in actual.split(",")} == {p.strip() for p in expected.split(",")}
    try:
        return int(actual) == int(expected)
    except ValueError:
        return actual.strip() == expected.strip()


def _as_time(key: str, value: str) -> str | None:
    """A `*.ms` config value in days, hours, minutes or seconds (None: not a time)."""
    if not key.endswith(".ms"):
        return None
    try:
        ms = int(value)
    except ValueError:
        return None
    if ms < 0:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _shown(key: str, value: str) -> str:
    """A config value as the broker spells it, and as a time if it is one."""
    time = _as_time(key, value)
    return value if time is None else f"{value} ({time})"


def describe_use(use: TopicUse) -> str:
    """A topic's partitions and configuration, for people: `4 partitions,
    cleanup.policy=compact, min.compaction.lag.ms=1d, ...`."""
    parts = [f"{use.partitions} partition{'s' if use.partitions != 1 else ''}"]
    for key, setting in use.config.items():
        parts.append(f"{key}={_as_time(key, setting.value) or setting.value}")
    return ", ".join(parts)


def read_topic(
    settings: KafkaSettings,
    topic: str,
    timeout_s: float = 30.0,
    *,
    signed: tuple[RecordSignature, Counter[str]] | None = None,
) -> list[tuple[bytes | None, bytes]]:
    """Every message on the topic now, (key, value), partition by partition. `signed`:
    only those the deployment's flow signed, and the others counted by topic."""
    try:
        records = _read_to_end(settings, settings.topic(topic), timeout_s)
    except KafkaError as exc:  # one line saying why, no traceback
        raise explain(settings, exc, f"reading {settings.topic(topic)}") from exc
    if signed is None:
        return [(key, value) for key, value, _headers in records]
    signature, unsigned = signed
    kept = []
    for key, value, headers in records:
        if value is not None and signature.holds(topic, key, value, headers):
            kept.append((key, value))
        else:
            unsigned[topic] += 1
    return kept


def _read_to_end(
    settings: KafkaSettings, name: str, timeout_s: float
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
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
        out: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                raise TimeoutError(
                    f"{name}: no message within {timeout_s}s, {len(remaining)} partitions short"
                )
            for tp, records in polled.items():
                out += [(r.key, r.value, r.headers) for r in records]
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        consumer.close()
