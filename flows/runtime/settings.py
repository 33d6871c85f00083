"""Settings from the environment, and the Kafka client configs derived from them.

Security settings are given once and passed through to every client: librdkafka
(the bytewax data path) and kafka-python (admin, tools, tests) spell them
differently, so both spellings are derived here.
"""

import os
from dataclasses import dataclass, field
from functools import cache
from hashlib import blake2b
from pathlib import Path

from operators.playbook import CompiledPlaybook, compile_playbook
from schemas.playbook import load_playbook

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


class SettingsError(ValueError):
    """A setting from the environment is unusable; the message names the variable."""


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
    security: dict[str, str] = field(default_factory=dict)
    #: A challenger playbook deciding beside the live one (shadow decisions only).
    challenger_playbook: str | None = None
    challenger_models: str = "shared"
    #: Publish each decision's input (`decisions.inputs`), so any decision can be re-run;
    #: about a tenth of the flow's throughput.
    decision_inputs: bool = True

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
            security={name: env[name] for name in _SECURITY_ENV if env.get(name)},
            challenger_playbook=env.get("WAYFINDER_CHALLENGER_PLAYBOOK") or None,
            challenger_models=_env_choice(
                env, "WAYFINDER_CHALLENGER_MODELS", ("shared", "none"), "shared"
            ),
            decision_inputs=_env_bool(env, "WAYFINDER_DECISION_INPUTS", cls.decision_inputs),
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


#: Secret that makes state keys unlinkable to customer ids without it. Set
#: WAYFINDER_STATE_KEY_SECRET per deployment (and keep it: state is keyed by it).
_SECRET = os.environ.get("WAYFINDER_STATE_KEY_SECRET", "wayfinder-state").encode()[:64]


def state_key(key: str) -> str:
    """The key the dataflow's state and recovery snapshots are stored under.

    A keyed hash of the customer key, never the id itself: once a customer is
    erased, their snapshot is gone and what remains under this key (a deletion
    marker) names nobody.
    """
    return blake2b(key.encode(), digest_size=16, key=_SECRET).hexdigest()


#: Exit status of a crash injected with WAYFINDER_FAULT_AFTER_EVENTS.
FAULT_EXIT_CODE = 75


def fault_after_events(env: dict[str, str] | None = None) -> int | None:
    """Fault injection for recovery tests: crash the process (no clean-up) once this many
    input records have been read. Unset in normal runs."""
    env = dict(os.environ if env is None else env)
    if not env.get("WAYFINDER_FAULT_AFTER_EVENTS"):
        return None
    return _env_int(env, "WAYFINDER_FAULT_AFTER_EVENTS", 1)
