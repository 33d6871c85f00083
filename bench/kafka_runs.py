"""Stage 3: the flow end to end through the real local Kafka, as deployed: the
workload produced to an events topic, the flow run on one process and as a cluster of
two (`python -m bytewax.run -i/-a`), and, as a service tailing its topic, event →
action and decision request → reply latency at a fixed offered load.

Each run gets topics of its own (a fresh prefix), deleted afterwards.
"""

import os
import resource
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from bench.measure import PYTHON, REPO, WAYFINDER, percentile
from flows.cli.lab import partition_key
from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import ensure_topics
from schemas.topics import EVENTS


class _Keyed(msgspec.Struct):
    event_id: str | None = None
    customer_id: str | None = None
    anonymous_id: str | None = None
    request_id: str | None = None


class _Answer(msgspec.Struct):
    trigger_event_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Topics:
    """A run's own topics on the broker, and the environment that points the flow there."""

    settings: KafkaSettings
    env: dict[str, str]

    @property
    def events(self) -> str:
        return self.settings.topic(EVENTS)


@contextmanager
def fresh_topics(bootstrap: str, name: str) -> Iterator[Topics]:
    """Topics under a prefix no other run uses, with the secret and key vault a
    deployment sets; deleted when the run is done."""
    prefix = f"bench-{int(time.time())}-{secrets.token_hex(3)}-{name}."
    with tempfile.TemporaryDirectory(prefix="wayfinder-bench-") as vault:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WAYFINDER_TOPIC_PREFIX": prefix,
            "WAYFINDER_STATE_KEY_SECRET": secrets.token_hex(32),
            "WAYFINDER_KEY_VAULT": vault,
            "WAYFINDER_KAFKA_GROUP": prefix + "flow",
            "WAYFINDER_METRICS_PORT": "off",
        }
        settings = KafkaSettings.from_env(env)
        ensure_topics(settings)
        try:
            yield Topics(settings, env)
        finally:
            _delete_topics(settings)


def _delete_topics(settings: KafkaSettings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()


def produce(topics: Topics, records: list[bytes]) -> float:
    """Every record onto the events topic, acknowledged; the seconds it took."""
    producer = KafkaProducer(
        bootstrap_servers=topics.settings.bootstrap_servers, linger_ms=20, acks="all"
    )
    started = time.perf_counter()
    for raw in records:
        producer.send(topics.events, key=partition_key(raw), value=raw)
    producer.flush()
    seconds = time.perf_counter() - started
    producer.close()
    return seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ClusterRun:
    """A run of the flow as deployed: its wall seconds, and where the machine's CPU went."""

    seconds: float
    #: CPU seconds (user and system, every thread) of the flow's processes together.
    cpu_seconds: float
    #: The local broker's CPU seconds meanwhile (None: it is not on this machine).
    broker_cpu_seconds: float | None

    def cpu_us_per_event(self, events: int) -> float:
        return self.cpu_seconds / events * 1e6

    @property
    def cores_used(self) -> float | None:
        """How many of the machine's cores the flow and the broker kept busy, on average."""
        if self.broker_cpu_seconds is None:
            return None
        return (self.cpu_seconds + self.broker_cpu_seconds) / self.seconds


def _listener_pid(port: int) -> int | None:
    """The local process listening on `port` (the broker that `scripts/kafka` started,
    not another a test may run beside it), found through /proc; None if none is."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    sockets.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if sockets and entry.name.isdigit():
            with suppress(OSError):
                if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                    return int(entry.name)
    return None


def _cpu_seconds(pid: int) -> float | None:
    """A running process's CPU seconds so far (user and system), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # (the name may hold spaces)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run_cluster(topics: Topics, processes: int, *, ordered: bool = True) -> ClusterRun:
    """The deployed entry point as a cluster of `processes` on this machine, reading the
    topic to its end; wall seconds from the launch to the last process's exit, and the
    CPU its processes and the broker took meanwhile (a cluster on one machine shares
    its cores with the broker: where they went says what a second process could gain).
    `ordered`: the partitions read as one stream by one worker of the cluster (the
    default); else each by a worker of its own (`WAYFINDER_KAFKA_ORDERED=false`)."""
    env = {
        **topics.env,
        "WAYFINDER_KAFKA_TAIL": "false",
        "WAYFINDER_KAFKA_ORDERED": "true" if ordered else "false",
    }
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(processes))
    argv = [PYTHON, "-m", "bytewax.run", "flows.dataflow.kafka:flow", "-w", "1"]
    broker = _listener_pid(int(topics.settings.brokers[0].rsplit(":", 1)[1]))
    broker_before = _cpu_seconds(broker) if broker is not None else None
    children_before = _children_cpu_seconds()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
        procs = [
            subprocess.Popen(
                [*argv, "-i", str(i), "-a", addresses],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=(Path(logs) / f"{i}.log").open("wb"),
            )
            for i in range(processes)
        ]
        codes = [proc.wait(timeout=3600) for proc in procs]
        seconds = time.perf_counter() - started
        if any(codes):
            said = (Path(logs) / f"{codes.index(next(c for c in codes if c))}.log").read_text()
            raise RuntimeError(f"a cluster process exited {codes}: {said[-2000:]}")
    # (the processes just waited for are the children reaped since: their CPU is theirs)
    cpu = _children_cpu_seconds() - children_before
    broker_after = _cpu_seconds(broker) if broker is not None else None
    broker_cpu = (
        broker_after - broker_before
        if broker_after is not None and broker_before is not None
        else None
    )
    return ClusterRun(seconds, cpu, broker_cpu)


@dataclass
class _Answers:
    """When each answer was read off the action topics, by what it answered."""

    to_event: dict[str, float] = field(default_factory=dict)
    to_request: dict[str, float] = field(default_factory=dict)
    last_read: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)


def _read_answers(topics: Topics, answers: _Answers) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=topics.settings.bootstrap_servers, fetch_max_wait_ms=5
    )
    prefix = topics.settings.topic("actions.")
    parts = [
        TopicPartition(topic, p)
        for topic in consumer.topics()
        if topic.startswith(prefix)
        for p in consumer.partitions_for_topic(topic) or ()
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    reader = msgspec.json.Decoder(_Answer)
    try:
        while not answers.stop.is_set():
            polled = consumer.poll(timeout_ms=50)
            now = time.time()
            for records in polled.values():
                for record in records:
                    answer = reader.decode(record.value)
                    if answer.request_id is not None:
                        answers.to_request.setdefault(answer.request_id, now)
                    if answer.trigger_event_id is not None:
                        answers.to_event.setdefault(answer.trigger_event_id, now)
                    answers.last_read = now
    finally:
        consumer.close()


_Fed = tuple[dict[str, object] | bytes, bytes | None, _Keyed]


def _feed(records: list[bytes]) -> list[_Fed]:
    """The records ready to send live: each event as a dict whose time is set as it is
    sent (bad input as it is), its key, and the ids its answers carry."""
    reader = msgspec.json.Decoder(_Keyed)
    fed: list[_Fed] = []
    for raw in records:
        try:
            fields, event = reader.decode(raw), msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            fed.append((raw, None, _Keyed()))
            continue
        key = fields.customer_id or fields.anonymous_id
        body = event if isinstance(event, dict) else raw
        fed.append((body, key.encode() if key else None, fields))
    return fed


def _stamped(event: dict[str, object] | bytes, now: float) -> bytes:
    """A live feed's record: the event as it happens now."""
    if isinstance(event, bytes):
        return event
    event["ts"] = datetime.fromtimestamp(now, UTC).isoformat()
    return msgspec.json.encode(event)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the flow exited {proc.returncode} before it was ready")
        url = f"http://127.0.0.1:{port}/readyz"
        with suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the flow was not ready in time")


def latency(
    topics: Topics, records: list[bytes], rate: float, settle: float = 5.0
) -> dict[str, float]:
    """A service (`wayfinder run --kafka`, tailing) fed the records at `rate` events/s,
    each stamped with the moment it is sent; from each send to the moment its answer is
    read off an action topic: actions an event triggered, and replies to decision
    requests (milliseconds)."""
    port = _free_port()
    env = {**topics.env, "WAYFINDER_KAFKA_TAIL": "true", "WAYFINDER_METRICS_PORT": str(port)}
    with tempfile.TemporaryFile() as log:
        flow = subprocess.Popen(
            [WAYFINDER, "run", "--kafka", "--no-progress"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_ready(port, flow)
            answers = _Answers()
            reader = threading.Thread(target=_read_answers, args=(topics, answers), daemon=True)
            reader.start()
            feed = _feed(records)
            producer = KafkaProducer(
                bootstrap_servers=topics.settings.bootstrap_servers, linger_ms=1
            )
            sent_event: dict[str, float] = {}
            sent_request: dict[str, float] = {}
            start = time.time()
            for i, (event, key, fields) in enumerate(feed):
                ahead = start + i / rate - time.time()
                if ahead > 0.001:
                    time.sleep(ahead)
                now = time.time()
                producer.send(topics.events, key=key, value=_stamped(event, now))
                if fields.event_id is not None:
                    sent_event[fields.event_id] = now
                if fields.request_id is not None:
                    sent_request[fields.request_id] = now
            producer.flush()
            sent_seconds = time.time() - start
            producer.close()
            quiet_since = time.time()
            while time.time() - max(answers.last_read, quiet_since) < settle:
                time.sleep(0.2)
            answers.stop.set()
            reader.join(timeout=10)
        finally:
            flow.send_signal(signal.SIGTERM)
            try:
                flow.wait(timeout=60)
            except subprocess.TimeoutExpired:
                flow.kill()
                flow.wait()
            log.seek(0)
            said = log.read().decode(errors="replace")
        if flow.returncode != 0:
            raise RuntimeError(f"the service exited {flow.returncode}: {said[-2000:]}")
    to_event = _waits(sent_event, answers.to_event)
    to_request = _waits(sent_request, answers.to_request)
    if not to_event or not to_request:
        raise RuntimeError(f"no answers read ({len(to_event)} actions, {len(to_request)} replies)")
    return {
        "sent_events_per_second": round(len(feed) / sent_seconds, 1),
        "latency_timed": len(to_event),
        "latency_p50_ms": round(percentile(to_event, 0.50), 2),
        "latency_p99_ms": round(percentile(to_event, 0.99), 2),
        "latency_growth_ms": round(growth(to_event), 2),
        "decision_timed": len(to_request),
        "decision_p50_ms": round(percentile(to_request, 0.50), 2),
        "decision_p99_ms": round(percentile(to_request, 0.99), 2),
        "decision_growth_ms": round(growth(to_request), 2),
    }


def _waits(sent: dict[str, float], answered: dict[str, float]) -> list[float]:
    """Milliseconds from each send to its first answer, for those answered, in the
    order they were sent."""
    return [(answered[k] - at) * 1000 for k, at in sent.items() if k in answered]


#: How much the answers' median may grow from the first fifth of a live run to its
#: last before the service is taken not to keep up with the load (ms).
SATURATED_GROWTH_MS = 1000.0


def growth(waits: list[float]) -> float:
    """How much longer the answers to the last fifth of what was sent took than those to
    the first fifth (medians, ms; `waits` in the order sent). A service that keeps up
    answers as fast at the end as at the start; one that does not falls further behind
    with every second of the run, and its percentiles say only how long the run was."""
    fifth = max(1, len(waits) // 5)
    return percentile(waits[-fifth:], 0.50) - percentile(waits[:fifth], 0.50)
