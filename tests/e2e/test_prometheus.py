"""What operators see, proven against a real Prometheus (Debian's `prometheus`, installed
when missing): the configuration and alert rules check and pass their unit tests; a
Prometheus scraping the Kafka service through a simulated day gets data for every
panel of every dashboard; and a burst of bad input makes the dead-letter alert fire."""

import json
import math
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.runtime.settings import KafkaSettings
from tests.conftest import kafka_env
from tests.debian import debian_program
from tests.e2e.cli import REPO, WAYFINDER, wayfinder
from tests.helpers import http_get
from tests.integration.test_loop_kafka import keyed
from tests.kafka_io import free_ports, live_flow, produce

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DASHBOARDS = REPO / "dashboards"
RULES = DASHBOARDS / "rules" / "wayfinder.rules.yml"
#: A day that ends now, as a live deployment's traffic is: a day months ago would leave
#: every customer idle past the cold tier's week as soon as the service caught up with
#: the wall clock, and nobody in memory to snapshot.
SIM = ["--customers", "200", "--hours", "24", "--seed", "5", "--start", "now-24h"]
#: Grafana's variables as the dashboards use them: the journeys all chosen; a rate
#: window of several scrapes (here one a second); `$__range` is the whole test's.
RATE_WINDOW = "10s"
DEAD_LETTERS_ALERT = "WayfinderDeadLetterRatioHigh"


@pytest.fixture(scope="session")
def promtool() -> str:
    debian_program("prometheus", "prometheus")
    found = shutil.which("promtool")
    assert found, "Debian's prometheus package brings promtool"
    return found


def _tool(promtool: str, *args: str) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=DASHBOARDS, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_scrape_config_and_the_rules_check_and_the_rule_tests_pass(promtool):
    assert "SUCCESS" in _tool(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in _tool(promtool, "check", "rules", "rules/wayfinder.rules.yml")
    assert "SUCCESS" in _tool(promtool, "test", "rules", "rules/wayfinder.rules.test.yml")


def test_the_dashboards_are_what_their_code_builds():
    done = subprocess.run(
        [str(Path(WAYFINDER).parent / "python"), str(DASHBOARDS / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ a real Prometheus
def _rules_held_for(folder: Path, alert: str, held: str) -> Path:
    """Wayfinder's rules, but `alert` fires once its condition has held for `held`: the
    live test shows the expression true on a live flow's metrics, and `promtool test
    rules` shows each rule's own wait (a minute of the suite spent on a timer otherwise)."""
    lines = RULES.read_text().splitlines(keepends=True)
    start = lines.index(f"      - alert: {alert}\n")
    end = next((i for i in range(start + 1, len(lines)) if "- alert:" in lines[i]), len(lines))
    (wait,) = (i for i in range(start, end) if lines[i].startswith("        for: "))
    lines[wait] = f"        for: {held}\n"
    copy = folder / RULES.name
    copy.write_text("".join(lines))
    return copy


class Prometheus:
    """A Prometheus of the test's own, on loopback, scraping one target every second and
    evaluating Wayfinder's rules every second (the dead-letter alert's wait shortened to
    5 s: `_rules_held_for`)."""

    def __init__(self, folder: Path, target: str) -> None:
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        config = folder / "prometheus.yml"
        config.write_text(
            json.dumps(  # (YAML is a superset of JSON)
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(_rules_held_for(folder, DEAD_LETTERS_ALERT, "5s"))],
                    "scrape_configs": [
                        {"job_name": "wayfinder", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self._log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.time()
        deadline = time.monotonic() + 60
        while http_get(self.url + "/-/ready")[0] != 200:
            assert self.process.poll() is None, "prometheus stopped: see prometheus.log"
            assert time.monotonic() < deadline, "prometheus not ready in 60 s"
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> Any:
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert status == 200, body
        return json.loads(body)["data"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def prometheus_of(promtool, tmp_path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        started.append(Prometheus(tmp_path, target))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.close()


def _panels() -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel title, query) of every query of every panel."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield board["title"], panel["title"], target["expr"]


def _as_grafana_runs(query: str, range_s: int) -> str:
    return (
        query.replace("$__rate_interval", RATE_WINDOW)
        .replace("$__range", f"{range_s}s")
        .replace("$journey", ".*")
    )


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(v)) for series in result for _t, v in series["values"])


def _feed_in_waves(kafka: KafkaSettings, lines: list[bytes], waves: int, pause: float) -> None:
    """The simulated day, in waves: its counters rise over several scrapes, as a live
    deployment's do (a rate needs two samples of a series)."""
    size = math.ceil(len(lines) / waves)
    for start in range(0, len(lines), size):
        produce(kafka, "events", [keyed(line) for line in lines[start : start + size]])
        time.sleep(pause)


def test_every_panel_shows_data_and_a_burst_of_bad_input_fires_its_alert(
    kafka, tmp_path, prometheus_of
):
    events = tmp_path / "events.jsonl"
    wayfinder("simulate", "--out", str(events), *SIM)
    (port,) = free_ports(1)
    env = {**kafka_env(kafka), "WAYFINDER_KAFKA_TAIL": "true", "WAYFINDER_METRICS_PORT": str(port)}
    with live_flow(env, stderr=tmp_path / "flow.log") as (flow,):
        prometheus = prometheus_of(f"127.0.0.1:{port}")
        _feed_in_waves(kafka, events.read_bytes().splitlines(), waves=12, pause=1.0)
        assert _alerts(prometheus, DEAD_LETTERS_ALERT) == []  # (0.2% of it)
        # A burst of bad input: more than 5% of what is read, for longer than the
        # rule's wait (it fires once the ratio has held that long).
        bad = [(None, b'{"event_id": "x", "ts": broken %d' % i) for i in range(2000)]
        for start in range(0, len(bad), 100):
            produce(kafka, "events", bad[start : start + 100])
            time.sleep(0.5)
        firing = _wait_for_alert(prometheus, DEAD_LETTERS_ALERT, within=150)
        assert firing is not None, "the dead-letter alert did not fire"
        assert firing["labels"]["severity"] == "ticket"

        end = time.time()
        range_s = math.ceil(end - prometheus.started)
        empty = []
        for board, title, query in _panels():
            result = prometheus.api(
                "query_range",
                query=_as_grafana_runs(query, range_s),
                start=str(prometheus.started),
                end=str(end),
                step="1",
            )["result"]
            if not _has_data(result):
                empty.append(f"{board} / {title}: {query}")
        assert empty == [], "panels with no data:\n" + "\n".join(empty)
        rules = prometheus.api("rules")["groups"]
        assert all(rule["health"] == "ok" for group in rules for rule in group["rules"])
    assert flow.returncode == 0, (tmp_path / "flow.log").read_text()[-2000:]


def _alerts(prometheus: Prometheus, name: str) -> list[dict[str, Any]]:
    """The alerts of this rule, pending or firing."""
    alerts = prometheus.api("alerts")["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] == name]


def _wait_for_alert(prometheus: Prometheus, name: str, within: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        firing = [alert for alert in _alerts(prometheus, name) if alert["state"] == "firing"]
        if firing:
            return firing[0]
        time.sleep(1)
    return None
