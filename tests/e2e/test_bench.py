"""`make bench` keeps working: its stages run as a user runs them (`scripts/bench`), on a
workload small enough for the suite, each writing the figures its results promise, and
the README's table is generated from them. Nothing here is timed or compared with a
target: a benchmark reports, a test never times anything."""

import ast
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

import pytest

from bench.kafka_runs import SATURATED_GROWTH_MS, growth
from bench.ratios import ratios
from bench.readme import BEGIN, END, ROWS, section, write_readme
from tests.e2e.cli import REPO, run

BENCH = [sys.executable, str(REPO / "scripts" / "bench")]
SMALL = ["--customers", "150", "--hours", "2", "--seed", "3"]


def bench(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    results = tmp_path / "results.json"
    argv = [*BENCH, *SMALL, "--workloads", str(tmp_path / "work"), "--results", str(results)]
    done = run([*argv, *args], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, object] = json.loads(results.read_text())
    return found


def positive(results: dict[str, object], *keys: str) -> None:
    for key in keys:
        value = results.get(key)
        assert isinstance(value, int | float) and value > 0, (key, value)


def test_the_in_process_stages_write_every_figure_they_promise(tmp_path: Path) -> None:
    only = ["--only", "core,flow,floor,cli,replay", "--replay-cases", "400", "--repeat", "2"]
    results = bench(tmp_path, *only)
    positive(results, "plain_loop_eps", "core_us_per_event", "bytewax_inproc_eps")
    positive(results, "engine_floor_eps", "rss_bytes_per_100k_customers", "cli_help_s")
    positive(results, "replay_eps", "flow_to_core", "flow_to_floor")
    work = results["workload"]
    assert isinstance(work, dict) and work["customers"] == 150 and work["records"] > 1000
    assert results["machine"]
    stages = results["stages"]
    assert isinstance(stages, dict) and set(stages) == {"core", "flow", "floor", "cli", "replay"}
    assert all(run["commit"] and run["measured_at"] for run in stages.values())
    # ... and the machine's pace just before each (a fixed piece of Python, in ms)
    assert all(run["pace_ms"] > 0 for run in stages.values())
    assert all(f"pace {run['pace_ms']:g} ms" in section(results) for run in stages.values())
    # The cores and the flow run by turns, each twice: their medians, and each run's.
    runs = results["plain_loop_eps_runs"], results["bytewax_inproc_eps_runs"]
    assert all(isinstance(r, list) and len(r) == 2 for r in runs)
    assert stages["core"]["run"] == stages["flow"]["run"]
    # What each stage ran: the repeated ones twice (their medians), the others once.
    assert {name: run["repeat"] for name, run in stages.items()} == {
        "core": 2,
        "flow": 2,
        "floor": 2,
        "cli": 1,
        "replay": 2,
    }


@pytest.mark.integration
def test_the_kafka_stage_measures_both_runs_the_latencies_and_a_peer(
    tmp_path: Path, bootstrap_servers: str
) -> None:
    """The flow through the real broker on 1 and 2 processes, its partitions read as one
    stream and each on its own, with the CPU each run took, live latency, and the naive
    consumer (the Quix Streams peer needs `make bench`'s own virtualenv)."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    only = ["--only", "kafka,live", "--peers", "naive_consumer"]
    live = ["--rate", "300", "--decision-rate", "400", "--live-seconds", "4", "--live-warm-up", "0"]
    results = bench(tmp_path, *only, *live, env=env)
    positive(results, "kafka_e2e_eps", "kafka_two_process_eps", "two_process_speedup")
    positive(results, "kafka_unordered_eps", "kafka_two_process_unordered_eps")
    positive(results, "two_process_unordered_speedup")
    # Where the CPU went: the flow's processes all told, and with the (local) broker.
    positive(results, "kafka_cpu_us_per_event", "kafka_two_process_cpu_us_per_event")
    positive(results, "kafka_unordered_cpu_us_per_event")
    positive(results, "kafka_cores_used", "kafka_two_process_cores_used")
    positive(results, "naive_consumer_eps", "kafka_produce_eps")
    positive(results, "latency_p50_ms", "latency_p99_ms", "decision_p50_ms", "decision_p99_ms")
    assert results["latency_offered_eps"] == 300 and results["decision_offered_eps"] == 400
    assert results["latency_p50_ms"] <= results["latency_p99_ms"]  # type: ignore[operator]
    # Well below what one process reads: the service keeps up (saturated: it would not).
    assert results["latency_saturated"] is False and results["decision_saturated"] is False
    assert isinstance(results["decision_growth_ms"], float)


def test_a_service_that_falls_behind_is_said_saturated_not_timed() -> None:
    """Fed more than it can take, a service answers later with every second of the run:
    its percentiles then measure the run's length, and the table says so."""
    keeping_up = [20.0 + (i % 7) for i in range(500)]
    falling_behind = [20.0 + 40.0 * i for i in range(500)]  # 40 ms later for each more
    assert abs(growth(keeping_up)) < 5
    assert growth(falling_behind) > SATURATED_GROWTH_MS
    results: dict[str, object] = {
        "decision_p50_ms": 9000.0,
        "decision_p99_ms": 18000.0,
        "decision_saturated": True,
        "decision_growth_ms": 16000.0,
        "latency_p99_ms": 15.0,
        "latency_saturated": False,
        "latency_growth_ms": 0.5,
    }
    table = section(results)
    assert (
        "| decision request → reply p99 | 18,000 ms (saturated: the last answers 16.0 s "
        "slower than the first) | ≤ 20 | not yet |" in table
    )
    assert "| event → action p99 | 15.0 ms |  |  |" in table


def test_a_ratio_is_taken_only_between_stages_measured_in_one_run() -> None:
    """The machine's speed moves from day to day: a flow of a fast day over cores of a
    slow one is no ratio. Measured in one invocation, it is; once one of its stages is
    measured again alone, it is dropped, not kept from the day before."""
    one = {"commit": "abc", "run": "2026-12-07T21:00:00Z"}
    results: dict[str, object] = {
        "plain_loop_eps": 10_000,
        "bytewax_inproc_eps": 7_000,
        "engine_floor_eps": 100_000,
        "kafka_e2e_eps": 5_000,
        "quix_eps": 4_000,
        "stages": {"core": one, "flow": one, "floor": one, "kafka": {**one, "run": "later"}},
    }
    ratios(results)
    assert results["flow_to_core"] == 0.7 and results["flow_to_floor"] == 0.07
    assert results["kafka_to_quix"] == 1.25  # (one stage measures both)
    assert "kafka_to_core" not in results
    stages = results["stages"]
    assert isinstance(stages, dict)
    stages["flow"] = {"commit": "def", "run": "2026-12-08T09:00:00Z"}
    results["bytewax_inproc_eps"] = 9_000
    ratios(results)
    assert "flow_to_core" not in results and "flow_to_floor" not in results
    stages["core"] = {"commit": "abc"}  # (written before stages said their run)
    stages["flow"] = {"commit": "abc"}
    stages["kafka"] = {"commit": "abc"}
    ratios(results)
    assert "flow_to_core" not in results
    assert results["kafka_to_quix"] == 1.25  # (one stage, one run, whatever it says)


def test_the_readme_table_is_the_results_and_nothing_else_moves(tmp_path: Path) -> None:
    results: dict[str, object] = {key: 1234.5 for key, *_ in ROWS}
    results["kafka_e2e_eps"] = 9000
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    write_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old figures" not in text and section(results) in text
    assert "| through Kafka, 1 process | 9,000 events/s | ≥ 30,000 | not yet |" in text
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == len(ROWS) + 1


def test_the_quix_peer_installs_every_library_the_pure_cores_import() -> None:
    """The Quix Streams peer runs our pure cores in a virtualenv of its own: a library
    they come to import (zstandard did) must be in its requirements, or `make bench`
    fails at its Kafka stage, after the in-process ones."""
    distributions = importlib.metadata.packages_distributions()
    needed: set[str] = set()
    for package in ("schemas", "state", "operators"):
        for source in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if (REPO / top).is_dir():
                        continue  # (ours)
                    for dist in distributions.get(top, []):
                        needed.add(dist.lower().replace("_", "-"))
    lines = (REPO / "bench" / "requirements-peers.txt").read_text().splitlines()
    listed = {
        re.split(r"[<>=!~ \[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for line in lines
        if line.strip() and not line.startswith("#")
    }
    assert needed, "no third-party import found: the scan is broken"
    assert needed <= listed, sorted(needed - listed)
