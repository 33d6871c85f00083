"""The process's metrics endpoint: Prometheus's `/metrics`, with `/livez` and `/readyz`
for Kubernetes' probes, on an address and port of the deployment's choosing.

bytewax's own API server (`BYTEWAX_DATAFLOW_API_ENABLED`) binds every interface and
cannot be told otherwise, so Wayfinder serves its own: one endpoint per process,
loopback by default, the Python registry that bytewax's Kafka lag gauge and every
`wayfinder_*` family live in. A cluster's process N serves on the port plus N, and
says which it is in `wayfinder_process_info`.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Gauge, make_wsgi_app

from flows.runtime.settings import SettingsError

logger = logging.getLogger(__name__)

PROCESS_INFO = Gauge(
    "wayfinder_process_info",
    "This process of the deployment (1: always): its index in a cluster (0 alone) and how "
    "many processes the cluster has, for dashboards to sum or split by.",
    ["process", "processes"],
)

#: Why a process is not ready, or None when it is (`/readyz`).
Readiness = Callable[[], str | None]
_Respond = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never holds the process at its end


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line every few seconds says nothing."""


class MetricsEndpoint:
    """An endpoint being served, in a daemon thread, until `close`."""

    def __init__(self, address: str, port: int, ready: Readiness) -> None:
        metrics = make_wsgi_app(REGISTRY)

        def app(environ: dict[str, Any], respond: _Respond) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/livez":
                why = not_alive()
                if why is None:
                    return _text(respond, "200 OK", "ok\n")
                return _text(respond, "503 Service Unavailable", f"not alive: {why}\n")
            if path == "/readyz":
                why = ready()
                if why is None:
                    return _text(respond, "200 OK", "ready\n")
                return _text(respond, "503 Service Unavailable", f"not ready: {why}\n")
            if path == "/metrics":
                return metrics(environ, respond)  # type: ignore[no-any-return]
            return _text(respond, "404 Not Found", "/metrics, /livez, /readyz\n")

        self._server = make_server(address, port, app, _Server, handler_class=_Quiet)
        self.address, self.port = address, self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-endpoint", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _text(respond: _Respond, status: str, body: str) -> list[bytes]:
    respond(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def serve(
    address: str, port: int, *, process: int = 0, processes: int = 1, ready: Readiness
) -> MetricsEndpoint:
    """Serve this process's endpoint (a cluster's process N on `port` + N; port 0: one
    the system picks), and say where in one log line. A port taken is a SettingsError
    naming the setting to change."""
    PROCESS_INFO.labels(str(process), str(processes)).set(1)
    bound = port + process if port else 0
    try:
        endpoint = MetricsEndpoint(address, bound, ready)
    except OSError as exc:
        raise SettingsError(
            f"metrics endpoint {address}:{bound} cannot be served ({exc.strerror}): set "
            "WAYFINDER_METRICS_PORT to a free port, or to off"
        ) from None
    logger.info("metrics at %s/metrics (probes: /livez, /readyz)", endpoint.url)
    return endpoint


def not_alive() -> str | None:
    """Why this process should be restarted (`/livez`), or None: a part that does not
    come back by itself has stopped."""
    if REGISTRY.get_sample_value(_REPLICA_STOPPED):
        return "the models replica stopped following models.examples on an error (see the log)"
    for metric in REGISTRY.collect():
        wording = _RESTART_SAYS.get(metric.name)
        if wording is not None:
            for sample in metric.samples:
                if sample.value:
                    return wording.format(count=sample.value, topic=sample.labels["topic"])
    return None


_REPLICA_STOPPED = "wayfinder_model_replica_stopped"
#: Gauges (by topic) that say the process needs a restart when not 0, and why.
_RESTART_SAYS = {
    "wayfinder_input_partitions_unread": "{count:.0f} partition(s) added to {topic} since "
    "the start, which its readers cannot take: a restart reads them",
    "wayfinder_consumer_stalled": "{count:.0f} partition(s) of {topic} hold records that "
    "its consumer, even opened anew, does not read",
}
_LAG = "bytewax_kafka_consumer_lag"
_CAUGHT_UP = "wayfinder_input_caught_up"
_BROKERS = "wayfinder_kafka_brokers_connected"


def kafka_readiness(topic: str, max_lag: int) -> Readiness:
    """Ready once the input has read every partition of the events `topic` to its end
    since the process started, and while its consumer reaches the Kafka cluster and is
    at most `max_lag` messages behind the topic (by bytewax's lag gauge, which the input
    sets at every epoch)."""

    def ready() -> str | None:
        caught_up: list[float] = []
        lags: list[float] = []
        for metric in REGISTRY.collect():
            if metric.name in (_LAG, _CAUGHT_UP):
                found = caught_up if metric.name == _CAUGHT_UP else lags
                found += [s.value for s in metric.samples if s.labels.get("topic") == topic]
        if REGISTRY.get_sample_value(_BROKERS) == 0:
            return "no broker of the Kafka cluster is reachable"
        stopped = not_alive()
        if stopped is not None:
            return stopped
        if not caught_up:
            return "the input has not started reading the events topic"
        if not all(caught_up):
            behind = sum(1 for value in caught_up if not value)
            return f"{behind} partition(s) of the events topic not yet read to their end"
        if sum(lags) > max_lag:
            return f"{sum(lags):.0f} messages behind the events topic (WAYFINDER_READY_LAG)"
        return None

    return ready


def always_ready() -> str | None:
    """An embedded run is ready once it serves."""
    return None
