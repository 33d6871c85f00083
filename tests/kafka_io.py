"""Test clients on kafka-python: produce a batch, read a topic to its end; the live flow."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from kafka import KafkaProducer

from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import read_topic as read_all

__all__ = ["free_ports", "live_flow", "logged", "produce", "read_all"]


def produce(
    settings: KafkaSettings, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
) -> None:
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    for key, value in messages:
        producer.send(settings.topic(topic), key=key, value=value)
    producer.flush()
    producer.close()


@contextlib.contextmanager
def live_flow(env: dict[str, str], stderr: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The Kafka dataflow as deployed (`python -m bytewax.run flows.dataflow.kafka:flow`),
    running while the block runs, then stopped as an orchestrator stops it: SIGTERM, and
    a wait for it to finish (its exit status is the Popen's `returncode` after the block;
    what it wrote to stderr goes to `stderr`)."""
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(stderr.open("wb")) if stderr is not None else None
        flow = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.dataflow.kafka:flow"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err if err is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield flow
        finally:
            os.killpg(flow.pid, signal.SIGTERM)
            flow.wait(timeout=60)


def free_ports(count: int) -> list[int]:
    """Ports free on the loopback now (for a broker of a test's own)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
