"""Kafka as banks run it: authenticated (SASL/SCRAM-SHA-512) and encrypted (TLS).

A broker of its own (`scripts/kafka up` with WAYFINDER_KAFKA_TLS_*, on free ports beside the
plain broker of `make test`) serves a SASL_SSL listener with a certificate made here by
trustme. The admin command, the simulator and the flow run through it with the settings
`scripts/kafka up` prints; a wrong password or a CA that did not sign the broker's
certificate ends each of them in one line naming what failed: no traceback, no secret.
"""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from flows.runtime.settings import KafkaSettings, load_default_playbook
from schemas.decision import Decision
from schemas.topics import DECISIONS, EVENTS, action_topic
from tests.e2e.cli import REPO, run_failing, wayfinder
from tests.kafka_io import free_ports, read_all

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "kafka"
USER = "wayfinder-svc"
#: Random, so that finding it in any output can only mean it leaked.
PASSWORD = f"pw-{secrets.token_hex(12)}"
WRONG_PASSWORD = f"wrong-{secrets.token_hex(12)}"
SIM = ["--customers", "40", "--hours", "12", "--seed", "5"]


@dataclass(frozen=True)
class SecureKafka:
    home: Path
    #: What `scripts/kafka up` printed: KAFKA_BOOTSTRAP_SERVERS and the security settings.
    client: dict[str, str]
    untrusted_ca: Path

    @property
    def bootstrap(self) -> str:
        return self.client["KAFKA_BOOTSTRAP_SERVERS"]

    def env(self, prefix: str, **overrides: str) -> dict[str, str]:
        """The environment a user sets to run Wayfinder on this cluster (bounded runs)."""
        return {
            **os.environ,
            **self.client,
            "KAFKA_SASL_PASSWORD": PASSWORD,
            "WAYFINDER_TOPIC_PREFIX": prefix,
            "WAYFINDER_TOPIC_PARTITIONS": "2",
            "WAYFINDER_KAFKA_TAIL": "false",
            "WAYFINDER_STATE_KEY_SECRET": os.environ.get(
                "WAYFINDER_STATE_KEY_SECRET", "kafka-security-test-secret"
            ),
            "COLUMNS": "400",  # nothing wrapped mid-line
            **overrides,
        }


def _write_certificates(folder: Path) -> dict[str, str]:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost: the broker's."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    (folder / "broker.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(  # Kafka reads PKCS#8 keys only
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (folder / "broker-key.pem").write_bytes(pkcs8)
    trustme.CA().cert_pem.write_to_path(str(folder / "untrusted-ca.pem"))
    return {
        "WAYFINDER_KAFKA_TLS_CERT": str(folder / "broker.pem"),
        "WAYFINDER_KAFKA_TLS_KEY": str(folder / "broker-key.pem"),
        "WAYFINDER_KAFKA_TLS_CA": str(folder / "ca.pem"),
    }


def _scripts_kafka(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """The secure broker, started for this module and purged after it."""
    folder = tmp_path_factory.mktemp("secure-kafka")
    port, controller_port, internal_port = free_ports(3)
    env = {
        **os.environ,
        **_write_certificates(folder),
        "WAYFINDER_KAFKA_DIR": str(folder / "broker"),
        "WAYFINDER_KAFKA_PORT": str(port),
        "WAYFINDER_KAFKA_CONTROLLER_PORT": str(controller_port),
        "WAYFINDER_KAFKA_INTERNAL_PORT": str(internal_port),
        "WAYFINDER_KAFKA_SCRAM_USERNAME": USER,
        "WAYFINDER_KAFKA_SCRAM_PASSWORD": PASSWORD,
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # set, scripts/kafka would start nothing
    try:
        up = _scripts_kafka(["up"], env)
        assert up.returncode == 0, f"scripts/kafka up failed:\n{up.stdout}\n{up.stderr}"
        assert PASSWORD not in up.stdout + up.stderr
        client = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        assert client == {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SSL_CA_LOCATION": str(folder / "ca.pem"),
        }
        status = _scripts_kafka(["status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        yield SecureKafka(folder / "broker", client, folder / "untrusted-ca.pem")
    finally:
        down = _scripts_kafka(["down", "--purge"], env)
        assert down.returncode == 0, down.stdout + down.stderr


def _fails(args: list[str], env: dict[str, str]) -> str:
    """Run `wayfinder ARGS` expecting it to fail; what it said, stdout and stderr."""
    done = run_failing(*args, env=env)
    return done.stdout + done.stderr


#: What reaches Kafka: the admin command, the simulator's producer, the flow.
COMMANDS = {
    "topics": ["topics"],
    "simulate": ["simulate", "--kafka", *SIM],
    "run": ["run", "--kafka", "--no-progress"],
}


def test_admin_simulator_and_flow_run_over_sasl_ssl(secure_kafka: SecureKafka) -> None:
    env = secure_kafka.env("wf-secure-run.")
    created = wayfinder("topics", env=env)
    assert "created  wf-secure-run.events" in created
    produced = wayfinder("simulate", "--kafka", *SIM, env=env)
    assert "produced" in produced
    assert "Wayfinder run" in wayfinder("run", "--kafka", "--no-progress", env=env)

    # Read back through the same secure settings, with kafka-python.
    settings = KafkaSettings.from_env(env)
    assert settings.kafka_python_config()["security_protocol"] == "SASL_SSL"
    simulated = int(produced.split()[1].replace(",", ""))
    assert len(read_all(settings, EVENTS)) >= simulated  # and the flow's merges, fed back
    decisions = [msgspec.json.decode(v, type=Decision) for _, v in read_all(settings, DECISIONS)]
    assert decisions
    actions = sum(
        len(read_all(settings, action_topic(channel)))
        for channel in load_default_playbook().channels
    )
    assert actions > 0
    assert any(d.outcome == "sent" for d in decisions)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_wrong_password_ends_in_one_line_naming_the_login(
    secure_kafka: SecureKafka, command: str
) -> None:
    env = secure_kafka.env("wf-secure-badpw.", KAFKA_SASL_PASSWORD=WRONG_PASSWORD)
    output = _fails(COMMANDS[command], env)
    assert "Traceback" not in output
    assert WRONG_PASSWORD not in output and PASSWORD not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert f"Kafka at {secure_kafka.bootstrap}: authentication failed" in lines[0]
    assert f"SCRAM-SHA-512, user '{USER}'" in lines[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_untrusted_certificate_ends_in_one_line_naming_tls(
    secure_kafka: SecureKafka, command: str
) -> None:
    env = secure_kafka.env("wf-secure-badca.", KAFKA_SSL_CA_LOCATION=str(secure_kafka.untrusted_ca))
    output = _fails(COMMANDS[command], env)
    assert "Traceback" not in output
    assert PASSWORD not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert f"Kafka at {secure_kafka.bootstrap}: TLS handshake failed" in lines[0]
    assert "certificate is not trusted" in lines[0]
    assert str(secure_kafka.untrusted_ca) in lines[0]


def test_the_password_is_nowhere_on_the_brokers_disk(secure_kafka: SecureKafka) -> None:
    """Only a salted hash of it was handed to Kafka; and the broker's config, which holds
    its private key, is for its user's eyes only."""
    for path in secure_kafka.home.rglob("*"):
        # Not the indexes: preallocated, 10 MB each, and only offsets.
        if path.is_file() and path.suffix not in {".index", ".timeindex"}:
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert (secure_kafka.home / "server.properties").stat().st_mode & 0o077 == 0
