"""Whether this process reaches the Kafka cluster (`wayfinder_kafka_brokers_connected`,
which `/readyz` reads), from what its clients on the data path say.

Each input consumer's statistics (every second) say how many of the cluster's brokers
it is connected to. They arrive only while the consumer is polled, and the worker
thread that polls it also waits on the cluster elsewhere: for the output's deliveries,
or a learner reading its log. A consumer's statistics that stopped are therefore not
its word any more, and a wait that finds no broker says the cluster is unreachable for
as long as it lasts.
"""

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from msgspec import DecodeError, Struct, ValidationError, json

from flows.runtime import metrics

logger = logging.getLogger(__name__)

#: A consumer whose last statistics are this much older (seconds) than the newest of the
#: process's is not being polled: its word is out of date (they come every second).
_CURRENT_S = 3.0


class _BrokerStats(Struct):
    state: str
    nodeid: int


class _ClientStats(Struct):
    brokers: dict[str, _BrokerStats] = {}


_CLIENT_STATS = json.Decoder(_ClientStats)


def brokers_up(stats: str) -> int | None:
    """How many of the cluster's brokers librdkafka's statistics say the client is
    connected to; None if they do not say. The bootstrap addresses and the client's
    internal broker are not brokers of the cluster (node id -1)."""
    try:
        brokers = _CLIENT_STATS.decode(stats).brokers.values()
    except (DecodeError, ValidationError):  # a client of another shape: said, never fatal
        logger.warning("librdkafka's statistics are not of the shape expected; ignored")
        return None
    return sum(1 for b in brokers if b.nodeid >= 0 and b.state == "UP")


class ClusterReach:
    """What the Kafka clients of one process say of the cluster: its consumers' last
    statistics, and the waits on the cluster going on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumers: weakref.WeakSet[ConsumerReach] = weakref.WeakSet()
        self._waits: list[Callable[[], bool]] = []

    def add(self, consumer: "ConsumerReach") -> None:
        with self._lock:
            self._consumers.add(consumer)

    @contextlib.contextmanager
    def waiting(self, unreachable: Callable[[], bool]) -> Iterator[None]:
        """While the body waits on the cluster, no broker is reached whenever
        `unreachable()` says so (it is asked at each scrape, from another thread)."""
        with self._lock:
            self._waits.append(unreachable)
        try:
            yield
        finally:
            with self._lock:
                self._waits.remove(unreachable)

    def brokers_connected(self) -> float:
        """0 while a wait finds no broker; else the most brokers any consumer with
        current statistics is connected to; NaN before any statistics."""
        with self._lock:
            waits = list(self._waits)
            said = [(c.said, c.connected) for c in self._consumers if c.connected is not None]
        if any(unreachable() for unreachable in waits):
            return 0.0
        if not said:
            return math.nan
        newest = max(at for at, _connected in said)
        return float(max(connected for at, connected in said if at >= newest - _CURRENT_S))


#: This process's: the gauge `wayfinder_kafka_brokers_connected`.
PROCESS = ClusterReach()
metrics.KAFKA_BROKERS.set_function(PROCESS.brokers_connected)
waiting_on_the_cluster = PROCESS.waiting


class ConsumerReach:
    """What one consumer's statistics last said (its `stats_cb`), and when."""

    def __init__(self, cluster: ClusterReach = PROCESS) -> None:
        #: Brokers of the cluster it is connected to (None: no statistics yet).
        self.connected: int | None = None
        self.said = 0.0
        cluster.add(self)

    @property
    def up(self) -> bool:
        """Whether it reaches the cluster, as far as it knows (unknown: yes)."""
        return self.connected != 0

    def stats(self, stats: str) -> None:
        connected = brokers_up(stats)
        if connected is not None:
            self.connected, self.said = connected, time.monotonic()
