"""Test clients on kafka-python: produce a batch, read a topic to its end; the live flow."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from kafka import KafkaProducer

from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import read_topic as read_all

__all__ = ["free_ports", "live_flow", "logged", "produce", "read_all"]


def produce(
    settings: KafkaSettings,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes]],
    *,
    partition: int | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
    transactional_id: str | None = None,
) -> None:
    """(key, value) of each message, written in that order (to `partition`, with
    `headers`, when given); with `transactional_id`, in one transaction, whose commit
    marker then ends each partition written (as an exactly-once writer's does)."""
    transactional = {"transactional_id": transactional_id} if transactional_id else {}
    producer = KafkaProducer(acks="all", **transactional, **settings.kafka_python_config())
    if transactional_id:
        producer.init_transactions()
        producer.begin_transaction()
    for key, value in messages:
        producer.send(
            settings.topic(topic), key=key, value=value, partition=partition, headers=list(headers)
        )
    if transactional_id:
        producer.commit_transaction()
    producer.flush()
    producer.close()


@contextlib.contextmanager
def live_flow(
    env: dict[str, str], stderr: Path | None = None, *, processes: int = 1, workers: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The Kafka dataflow as deployed (`python -m bytewax.run flows.dataflow.kafka:flow -s 1`),
    on one process or a cluster of `processes`, each with `workers`, running while the
    block runs, then
    stopped as an orchestrator stops it: SIGTERM, and a wait for each process to finish
    (their exit status is each Popen's `returncode` after the block; what the first wrote
    to stderr goes to `stderr`, the others' beside it, `NAME.1`...)."""
    cluster: list[str] = []
    if processes > 1:
        cluster = ["-a", ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))]
    with contextlib.ExitStack() as stack:
        flows = []
        try:
            for i in range(processes):
                err = None
                if stderr is not None:  # (the others': beside it, numbered)
                    path = stderr if i == 0 else stderr.with_name(f"{stderr.name}.{i}")
                    err = stack.enter_context(path.open("wb"))
                flows.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bytewax.run", "flows.dataflow.kafka:flow"]
                        + ["-s", "1"]  # (a service's epochs, as the README deploys it)
                        + (["-i", str(i), *cluster] if cluster else [])
                        + (["-w", str(workers)] if workers > 1 else []),
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=err if err is not None else subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            yield flows
        finally:
            stop_flows(flows)


def stop_flows(flows: "list[subprocess.Popen[bytes]]") -> None:
    """Stop flows started in sessions of their own as an operator would (SIGTERM); one
    that has not ended a minute later (a failed test's: with the broker down, it cannot)
    first writes where each of its threads is to its stderr (SIGUSR1), then is killed,
    never left running, and the timeout raised."""
    for flow in flows:
        os.killpg(flow.pid, signal.SIGTERM)
    for flow in flows:
        try:
            flow.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(flow.pid, signal.SIGUSR1)
            time.sleep(1)
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait(timeout=60)
            raise


def free_ports(count: int) -> list[int]:
    """Ports free on the loopback now, for a process to bind soon (a cluster's, an
    endpoint's).

    Not ones the system picks (port 0): those come from the ephemeral range, which every
    outgoing connection also draws from, and a client of the suite could take one in
    the second before the process binds it. These come from below that range, which
    nothing hands out, each xdist worker from a block of its own, never twice a run."""
    found: list[int] = []
    while len(found) < count:
        port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # (something of the machine's own listens there)
        found.append(port)
    return found


def _worker_ports() -> Iterator[int]:
    """This xdist worker's block of ports below the ephemeral range, in turn."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # (Linux's default)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = low - _PORTS_A_WORKER * (index % _WORKER_BLOCKS + 1)
    while True:
        yield from range(start, start + _PORTS_A_WORKER)


_PORTS_A_WORKER = 1000
_WORKER_BLOCKS = 8
_PORTS = _worker_ports()


#: Runs a Python module as `python -m` does, with the flow's INFO log lines on stderr
#: (nothing else configures logging): `python -c LOGGED module args...`.
LOGGED = (
    "import logging, runpy, sys; "
    "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s'); "
    "logging.getLogger('kafka').setLevel(logging.WARNING); "
    "sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def logged(module: str, *args: str) -> list[str]:
    """The command that runs `python -m MODULE ARGS` with INFO logging on stderr."""
    return [sys.executable, "-c", LOGGED, module, *args]
