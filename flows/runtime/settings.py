"""Settings from the environment, and the Kafka client configs derived from them.

Security settings are given once and passed through to every client: librdkafka
(the bytewax data path) and kafka-python (admin, tools, tests) spell them
differently, so both spellings are derived here.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple

from operators.identity import pseudonym
from operators.playbook import CompiledPlaybook, compile_playbook
from schemas.playbook import load_playbook, seconds

#: The playbook that ships with Wayfinder (telco, banking, dealer partners).
DEFAULT_PLAYBOOK = Path(__file__).resolve().parents[1] / "playbook.toml"


_SECURITY_ENV = {
    # env var: (librdkafka key, kafka-python key)
    "KAFKA_SECURITY_PROTOCOL": ("security.protocol", "security_protocol"),
    "KAFKA_SASL_MECHANISM": ("sasl.mechanism", "sasl_mechanism"),
    "KAFKA_SASL_USERNAME": ("sasl.username", "sasl_plain_username"),
    "KAFKA_SASL_PASSWORD": ("sasl.password", "sasl_plain_password"),
    "KAFKA_SSL_CA_LOCATION": ("ssl.ca.location", "ssl_cafile"),
    "KAFKA_SSL_CERTIFICATE_LOCATION": ("ssl.certificate.location", "ssl_certfile"),
    "KAFKA_SSL_KEY_LOCATION": ("ssl.key.location", "ssl_keyfile"),
}
#: What KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_MECHANISM may say: both clients know these
#: (kafka-python only in capitals, so they are passed on in capitals).
_SECURITY_CHOICES = {
    "KAFKA_SECURITY_PROTOCOL": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    "KAFKA_SASL_MECHANISM": ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"),
}


#: Records an input hands over per batch: an embedded run's, and by default a Kafka
#: run's (WAYFINDER_KAFKA_BATCH).
BATCH_SIZE = 512


class SettingsError(ValueError):
    """A setting from the environment is unusable; the message names the variable."""


def _security_from_env(env: dict[str, str]) -> dict[str, str]:
    """The security settings that are set, checked: a SASL login given to a protocol that
    does not log in would be dropped silently, and the data would travel unencrypted."""
    security = {name: env[name] for name in _SECURITY_ENV if env.get(name)}
    for name, choices in _SECURITY_CHOICES.items():
        if name in security:
            value = security[name].strip().upper()
            if value not in choices:
                raise SettingsError(
                    f"{name}={security[name]!r}: expected one of {', '.join(choices)}"
                )
            security[name] = value
    protocol = security.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    sasl = sorted(name for name in security if name.startswith("KAFKA_SASL_"))
    if sasl and not protocol.startswith("SASL_"):
        raise SettingsError(
            f"{', '.join(sasl)} set, but KAFKA_SECURITY_PROTOCOL={protocol} does not log in: "
            "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
        )
    return security


def _env_bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _env_choice(env: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _env_int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be at least {minimum}")
    return value


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "wayfinder."
    partitions: int = 4
    replication_factor: int = 1
    #: Keep waiting for new events at the end of the topic (a service), or stop there.
    tail: bool = True
    #: Where to start without a recovery snapshot: earliest or latest.
    start_at: str = "earliest"
    #: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_* as set. Holds the password: no repr.
    security: dict[str, str] = field(default_factory=dict, repr=False)
    #: A challenger playbook deciding beside the live one (shadow decisions only).
    challenger_playbook: str | None = None
    challenger_models: str = "shared"
    #: Publish each decision's input (`decisions.inputs`), so any decision can be re-run;
    #: about a tenth of the flow's throughput.
    decision_inputs: bool = True
    #: The consumer group the flow commits its offsets to (for lag tools, not to resume).
    group: str = "wayfinder"
    #: Read the events topic's partitions as one stream in event-time order (the same
    #: order every run); else each partition on a worker of its own, in arrival order.
    ordered: bool = True
    #: Events handed to the flow per batch at most: larger ones amortise each step's
    #: work, smaller ones make each step shorter (and what a crash makes it fold again).
    #: A replay's rounds are batches: with the embedded run's, it gives its outputs.
    batch: int = BATCH_SIZE
    #: WAYFINDER_KEY_VAULT: where the flow keeps a copy of each customer's key
    #: (`state.key_vault`), for `wayfinder rerun --kafka` to open the decision inputs
    #: sealed under them. None: the keys live in the flow's state alone, and its
    #: decisions cannot be re-run.
    key_vault: Path | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "KafkaSettings":
        env = dict(os.environ if env is None else env)
        start_at = env.get("WAYFINDER_START_AT", "earliest").strip().lower()
        if start_at not in {"earliest", "latest"}:
            raise SettingsError(f"WAYFINDER_START_AT={start_at!r}: expected earliest or latest")
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or cls.bootstrap_servers,
            topic_prefix=env.get("WAYFINDER_TOPIC_PREFIX", cls.topic_prefix),
            partitions=_env_int(env, "WAYFINDER_TOPIC_PARTITIONS", cls.partitions),
            replication_factor=_env_int(env, "WAYFINDER_TOPIC_REPLICATION", cls.replication_factor),
            tail=_env_bool(env, "WAYFINDER_KAFKA_TAIL", cls.tail),
            start_at=start_at,
            security=_security_from_env(env),
            challenger_playbook=env.get("WAYFINDER_CHALLENGER_PLAYBOOK") or None,
            challenger_models=_env_choice(
                env, "WAYFINDER_CHALLENGER_MODELS", ("shared", "none"), "shared"
            ),
            decision_inputs=_env_bool(env, "WAYFINDER_DECISION_INPUTS", cls.decision_inputs),
            group=env.get("WAYFINDER_KAFKA_GROUP") or cls.group,
            ordered=_env_bool(env, "WAYFINDER_KAFKA_ORDERED", cls.ordered),
            batch=_env_int(env, "WAYFINDER_KAFKA_BATCH", cls.batch),
            key_vault=Path(vault)
            if (vault := env.get("WAYFINDER_KEY_VAULT", "").strip())
            else None,
        )

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def librdkafka_config(self) -> dict[str, str]:
        """Security settings in librdkafka's spelling (bytewax's Kafka connector)."""
        return {_SECURITY_ENV[name][0]: value for name, value in self.security.items()}

    def kafka_python_config(self) -> dict[str, str]:
        """Bootstrap and security settings in kafka-python's spelling."""
        config = {_SECURITY_ENV[name][1]: value for name, value in self.security.items()}
        config["bootstrap_servers"] = self.bootstrap_servers
        return config


def playbook_path(env: dict[str, str] | None = None) -> Path:
    """The playbook to run: WAYFINDER_PLAYBOOK, else the default one."""
    env = dict(os.environ if env is None else env)
    return Path(env["WAYFINDER_PLAYBOOK"]) if env.get("WAYFINDER_PLAYBOOK") else DEFAULT_PLAYBOOK


@cache
def load_compiled(path: Path) -> CompiledPlaybook:
    """Load, validate and compile a playbook (raises PlaybookError naming what is wrong)."""
    return compile_playbook(load_playbook(path))


def load_default_playbook() -> CompiledPlaybook:
    return load_compiled(playbook_path())


#: The secret of lab and demo runs when none is set: public, so it protects nothing.
LAB_SECRET = b"wayfinder-state"
#: Shortest secret accepted (bytes): a key for HMAC-SHA256 and keyed BLAKE2b.
MIN_SECRET_BYTES = 16
_SECRET_ENV = "WAYFINDER_STATE_KEY_SECRET"


def deployment_secret(env: Mapping[str, str] | None = None, *, required: bool = False) -> bytes:
    """The deployment's secret (WAYFINDER_STATE_KEY_SECRET): it keys the state keys (so
    they name nobody) and signs the merges Wayfinder writes (so none can be forged).

    `required` (the Kafka service): a missing or short secret is a SettingsError, as
    the built-in one is public. Otherwise (the embedded run) the lab secret stands in.
    Keep it: state and merges made under one secret mean nothing under another.
    """
    values = os.environ if env is None else env
    raw = values.get(_SECRET_ENV, "")
    if not raw:
        if required:
            raise SettingsError(
                f"{_SECRET_ENV} is not set: a deployment needs a secret of its own "
                f"(at least {MIN_SECRET_BYTES} bytes, for example `openssl rand -hex 32`)"
            )
        return LAB_SECRET
    secret = raw.encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise SettingsError(f"{_SECRET_ENV}: at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
    return secret


def lab_secret_in_use(env: Mapping[str, str] | None = None) -> bool:
    """Whether runs here use the public lab secret (WAYFINDER_STATE_KEY_SECRET unset)."""
    return not (os.environ if env is None else env).get(_SECRET_ENV)


@lru_cache(maxsize=1 << 16)
def state_key(key: str) -> str:
    """The key the dataflow's state and recovery snapshots are stored under, and what
    every record the flow writes names the customer by: their pseudonym
    (`operators.identity.pseudonym`) under the deployment's secret. The latest keys are
    remembered (a keyed hash is a microsecond), never every one: memory follows the
    customers in memory, not the customer base."""
    return pseudonym(deployment_secret(), key)


#: How far past the wall clock an event's time may be (WAYFINDER_MAX_AHEAD).
DEFAULT_MAX_AHEAD = "1d"


def max_ahead_seconds(env: Mapping[str, str] | None = None) -> float:
    """WAYFINDER_MAX_AHEAD: an event further ahead than this is a dead letter (a customer's
    clock gone wrong must not move everyone's event time)."""
    return _env_seconds(env, "WAYFINDER_MAX_AHEAD", DEFAULT_MAX_AHEAD, (1, 366 * 86400))


def _env_seconds(
    env: Mapping[str, str] | None, name: str, default: str, bounds: tuple[float, float]
) -> float:
    """A duration setting (90s, 5m, 6h, 1d) in seconds, within `bounds`."""
    values = os.environ if env is None else env
    raw = values.get(name) or default
    try:
        value = seconds(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a duration (30s, 5m, 6h, 1d)") from None
    low, high = bounds
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: between {_duration(low)} and {_duration(high)}")
    return value


def _duration(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


#: How long (event time) a customer stays in memory idle (WAYFINDER_COLD_AFTER): a week,
#: so a customer's daily and weekly habits stay hot and the quiet majority does not.
DEFAULT_COLD_AFTER = "7d"
#: The cold tier's RocksDB block cache (WAYFINDER_COLD_CACHE, in MiB).
DEFAULT_COLD_CACHE_MIB = 64


@dataclass(frozen=True)
class ColdSettings:
    """The cold tier (`flows.dataflow.cold_tier`): `after` seconds idle (event time) and a
    customer leaves memory (None: never); `store`: `rocksdb` (on disk, in `directory`:
    unset, beside the recovery folder, or a temporary one) or `memory` (contexts as
    bytes, gone with the process: runs without recovery only); `cache_bytes`: RocksDB's
    block cache; `compression`: off for a test that searches the files for a customer;
    `most`: the customers a process keeps in memory at most, beyond which those seen
    longest ago leave before their idle time (None: no such bound)."""

    after: float | None
    store: str = "rocksdb"
    directory: Path | None = None
    cache_bytes: int = DEFAULT_COLD_CACHE_MIB << 20
    compression: bool = True
    most: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ColdSettings":
        values = os.environ if env is None else env
        raw = values.get("WAYFINDER_COLD_AFTER") or DEFAULT_COLD_AFTER
        after = (
            None
            if raw.strip().lower() == "off"
            else _env_seconds(env, "WAYFINDER_COLD_AFTER", DEFAULT_COLD_AFTER, (1, 3650 * 86400))
        )
        store = _env_choice(dict(values), "WAYFINDER_COLD_STORE", ("rocksdb", "memory"), "rocksdb")
        folder = values.get("WAYFINDER_COLD_DIR")
        cache = _env_int(dict(values), "WAYFINDER_COLD_CACHE", DEFAULT_COLD_CACHE_MIB)
        raw_most = (values.get("WAYFINDER_HOT_MAX") or "off").strip().lower()
        most = None if raw_most == "off" else _env_int(dict(values), "WAYFINDER_HOT_MAX", 1)
        return cls(after, store, Path(folder) if folder else None, cache << 20, most=most)


def context_view_folder(env: Mapping[str, str] | None = None) -> Path | None:
    """WAYFINDER_CONTEXT_VIEW: where the Kafka flow keeps each customer's context view (an
    embedded run: in its output folder); None: it keeps none."""
    values = os.environ if env is None else env
    folder = values.get("WAYFINDER_CONTEXT_VIEW")
    return Path(folder) if folder else None


#: How late (event time) an event may arrive behind its partition (WAYFINDER_LATENESS).
DEFAULT_LATENESS = "1m"


def allowed_lateness_seconds(env: Mapping[str, str] | None = None) -> float:
    """WAYFINDER_LATENESS: the watermark stays this far behind the input partition furthest
    behind, so an event that arrives this late still comes before the timers it precedes."""
    return _env_seconds(env, "WAYFINDER_LATENESS", DEFAULT_LATENESS, (0, 86400))


#: How long a Kafka command waits for the cluster to answer (WAYFINDER_KAFKA_TIMEOUT).
DEFAULT_KAFKA_TIMEOUT = "10s"


def kafka_timeout_seconds(env: Mapping[str, str] | None = None) -> float:
    """WAYFINDER_KAFKA_TIMEOUT: a cluster that has not answered by then is not there."""
    return _env_seconds(env, "WAYFINDER_KAFKA_TIMEOUT", DEFAULT_KAFKA_TIMEOUT, (1, 600))


#: How long a process waits at start for its model replica (WAYFINDER_MODELS_CATCH_UP).
DEFAULT_MODELS_CATCH_UP = "5m"


def models_catch_up_seconds(env: Mapping[str, str] | None = None) -> float:
    """WAYFINDER_MODELS_CATCH_UP: at start, each process learns the example log
    (`models.examples`) into its model replica, up to the log's end as of then, before
    it decides anything; what it has not read by then it reads while deciding (and says
    so)."""
    return _env_seconds(env, "WAYFINDER_MODELS_CATCH_UP", DEFAULT_MODELS_CATCH_UP, (1, 7 * 86400))


#: Exit status of a crash injected with WAYFINDER_FAULT_AFTER_EVENTS.
FAULT_EXIT_CODE = 75


def fault_after_events(env: dict[str, str] | None = None) -> int | None:
    """Fault injection for recovery tests: crash the process (no clean-up) once this many
    input records have been read. Unset in normal runs."""
    env = dict(os.environ if env is None else env)
    if not env.get("WAYFINDER_FAULT_AFTER_EVENTS"):
        return None
    return _env_int(env, "WAYFINDER_FAULT_AFTER_EVENTS", 1)


#: How long redeliveries are recognised, in event time (WAYFINDER_REDELIVERY_HORIZON).
DEFAULT_REDELIVERY_HORIZON = "7d"


def redelivery_horizon_seconds(env: Mapping[str, str] | None = None) -> float:
    """WAYFINDER_REDELIVERY_HORIZON: a redelivered event is recognised (and not folded
    again) if it is no older than this before its customer's latest event; an older event
    is a dead letter, `stale`. An erased customer's key stays a tombstone this long."""
    return _env_seconds(
        env, "WAYFINDER_REDELIVERY_HORIZON", DEFAULT_REDELIVERY_HORIZON, (60, 366 * 86400)
    )


#: How long topics keep the audit trail (decisions, decisions.inputs, decisions.shadow)
#: and the dead letters: WAYFINDER_DECISIONS_RETENTION, WAYFINDER_DLQ_RETENTION.
DEFAULT_DECISIONS_RETENTION = "90d"
DEFAULT_DLQ_RETENTION = "30d"
#: A retention that never deletes (Kafka's retention.ms=-1).
FOREVER = -1


def _env_retention_ms(values: Mapping[str, str], name: str, default: str) -> int:
    """A retention in milliseconds from a duration (90d, 12w, 36h), or `forever` (-1)."""
    if (values.get(name) or default).strip().lower() == "forever":
        return FOREVER
    try:
        return round(_env_seconds(values, name, default, (3600, 3650 * 86400)) * 1000)
    except SettingsError as exc:
        raise SettingsError(f"{exc}, or forever") from None


@dataclass(frozen=True)
class TopicRetention:
    """How long the topics with a horizon keep their records, in milliseconds (FOREVER:
    never deleted). Read where topics are created (`wayfinder topics`, and `wayfinder run
    --kafka` for any missing) and where `wayfinder topics` checks existing ones."""

    #: The audit horizon: decisions, their inputs and the shadow decisions, kept alike
    #: (a decision re-runs only while its input is there too).
    decisions_ms: int = round(seconds(DEFAULT_DECISIONS_RETENTION) * 1000)
    #: Dead letters: long enough to notice, fix the producer and replay them.
    dlq_ms: int = round(seconds(DEFAULT_DLQ_RETENTION) * 1000)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TopicRetention":
        values = os.environ if env is None else env
        return cls(
            decisions_ms=_env_retention_ms(
                values, "WAYFINDER_DECISIONS_RETENTION", DEFAULT_DECISIONS_RETENTION
            ),
            dlq_ms=_env_retention_ms(values, "WAYFINDER_DLQ_RETENTION", DEFAULT_DLQ_RETENTION),
        )


#: Where a process serves its metrics and probes unless told otherwise.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_METRICS_PORT = 9464


class MetricsSettings(NamedTuple):
    """Where the metrics endpoint binds (`flows.runtime.metrics_endpoint`), and how far
    behind the events topic a Kafka process may be and still be ready."""

    address: str
    port: int
    ready_lag: int


def metrics_settings(
    env: Mapping[str, str] | None = None, *, port: int | None = None
) -> MetricsSettings | None:
    """WAYFINDER_METRICS_ADDRESS (loopback by default: `0.0.0.0` for a scraper on another
    host), WAYFINDER_METRICS_PORT (9464, Prometheus's registered default for exporters;
    0: one the system picks; `off`: no endpoint; `port`, a command's option, instead)
    and WAYFINDER_READY_LAG (messages)."""
    values = dict(os.environ if env is None else env)
    if port is not None:
        values["WAYFINDER_METRICS_PORT"] = str(port)
    raw = (values.get("WAYFINDER_METRICS_PORT") or str(DEFAULT_METRICS_PORT)).strip().lower()
    if raw == "off":
        return None
    port = _env_int({"WAYFINDER_METRICS_PORT": raw}, "WAYFINDER_METRICS_PORT", 0, minimum=0)
    if port > 65535:
        raise SettingsError(f"WAYFINDER_METRICS_PORT={raw!r}: a port is at most 65535")
    address = (values.get("WAYFINDER_METRICS_ADDRESS") or DEFAULT_METRICS_ADDRESS).strip()
    lag = _env_int(values, "WAYFINDER_READY_LAG", 1000, minimum=0)
    return MetricsSettings(address, port, lag)
