"""The README's performance section, generated from bench/results.json so its
figures are always the last measured ones."""

import re
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

#: (results key, what it is, unit, target, whether more is better)
ROWS: list[tuple[str, str, str, float | None, bool]] = [
    ("plain_loop_eps", "pure cores, plain loop", "events/s", 40_000, True),
    ("core_us_per_event", "pure cores, per event", "µs", 25, False),
    ("bytewax_inproc_eps", "bytewax flow, in-process", "events/s", None, True),
    ("flow_to_core", "in-process flow ÷ cores", "×", 0.85, True),
    ("engine_floor_eps", "bytewax floor (decode → keyed state → encode)", "events/s", None, True),
    ("kafka_e2e_eps", "through Kafka, 1 process", "events/s", 30_000, True),
    ("kafka_two_process_eps", "through Kafka, 2-process cluster", "events/s", None, True),
    ("two_process_speedup", "2 processes ÷ 1", "×", 1.7, True),
    ("kafka_cpu_us_per_event", "CPU an event, 1 process (every thread)", "µs", None, False),
    (
        "kafka_two_process_cpu_us_per_event",
        "CPU an event, 2-process cluster (both processes)",
        "µs",
        None,
        False,
    ),
    ("kafka_cores_used", "cores busy, 1 process and the broker", "cores", None, False),
    (
        "kafka_two_process_cores_used",
        "cores busy, 2-process cluster and the broker",
        "cores",
        None,
        False,
    ),
    ("kafka_unordered_eps", "through Kafka, 1 process, unordered", "events/s", None, True),
    (
        "kafka_two_process_unordered_eps",
        "through Kafka, 2-process cluster, unordered",
        "events/s",
        None,
        True,
    ),
    ("two_process_unordered_speedup", "2 processes ÷ 1, unordered", "×", 1.7, True),
    ("quix_eps", "the same cores on Quix Streams", "events/s", None, True),
    ("kafka_to_quix", "Wayfinder on Kafka ÷ Quix Streams", "×", 1.0, True),
    ("naive_consumer_eps", "naive kafka-python consumer, seed rule only", "events/s", None, True),
    ("latency_offered_eps", "offered load, a service fed live", "events/s", None, True),
    ("latency_p50_ms", "event → action p50", "ms", None, False),
    ("latency_p99_ms", "event → action p99", "ms", None, False),
    ("decision_offered_eps", "background load, a service fed live", "events/s", None, True),
    ("decision_p50_ms", "decision request → reply p50", "ms", None, False),
    ("decision_p99_ms", "decision request → reply p99", "ms", 20, False),
    ("rss_bytes_per_customer", "memory per context held", "bytes", 4096, False),
    ("rss_bytes_per_100k_customers", "memory per 100k contexts held", "bytes", None, False),
    ("cli_help_s", "`wayfinder --help`", "s", 0.3, False),
    ("replay_eps", "`wayfinder replay`, process-mining log", "events/s", 50_000, True),
]


def _number(value: float) -> str:
    if isinstance(value, float) and value < 100:
        return f"{value:,.3g}" if value < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def _when(results: dict[str, object]) -> str:
    """Which commit each stage ran on, when, and at what pace of the machine, grouped."""
    stages = results.get("stages", {})
    assert isinstance(stages, dict)
    by_run: dict[tuple[str, str, str], list[str]] = {}
    for name, run in stages.items():
        pace = run.get("pace_ms")
        paced = f", pace {pace:g} ms" if isinstance(pace, int | float) else ""
        by_run.setdefault((run["commit"], run["measured_at"][:10], paced), []).append(name)
    return "; ".join(
        f"{', '.join(names)} on {commit}, {day}{paced}"
        for (commit, day, paced), names in by_run.items()
    )


def _saturated(results: dict[str, object], key: str) -> float | None:
    """For a live latency percentile: how much the answers slowed from the start of the
    run to its end (ms), if the service did not keep up with the load (else None)."""
    measures, _, share = key.partition("_")
    if share not in ("p50_ms", "p99_ms") or results.get(f"{measures}_saturated") is not True:
        return None
    grew = results.get(f"{measures}_growth_ms")
    return float(grew) if isinstance(grew, int | float) else None


def section(results: dict[str, object]) -> str:
    machine = results.get("machine", {})
    work = results.get("workload", {})
    assert isinstance(machine, dict) and isinstance(work, dict)
    lines = [
        BEGIN,
        f"Measured by `make bench` ({_when(results)}), {machine.get('cores')} cores "
        f"({machine.get('cpu')}), "
        f"{machine.get('memory_gib')} GiB, Python {machine.get('python')}; workload: "
        f"{work.get('records', 0):,} records of {work.get('customers', 0):,} simulated customers "
        f"over {work.get('hours')} h (seed {work.get('seed')}). Medians where repeated.",
        "",
        "| measure | value | target | |",
        "|---|---:|---:|---|",
    ]
    for key, label, unit, target, more in ROWS:
        value = results.get(key)
        if not isinstance(value, int | float):
            continue
        met = (
            ""
            if target is None
            else ("met" if (value >= target if more else value <= target) else "not yet")
        )
        goal = "" if target is None else ("≥ " if more else "≤ ") + _number(target)
        shown = f"{_number(value)} {unit}"
        if unit == "bytes" and value >= 1e6:
            shown = f"{value / 1e6:,.0f} MB"
        behind = _saturated(results, key)
        if behind is not None:
            shown += f" (saturated: the last answers {behind / 1000:,.1f} s slower than the first)"
            met = "" if target is None else "not yet"  # (what it measured is the backlog)
        lines.append(f"| {label} | {shown} | {goal} | {met} |")
    lines.append(END)
    return "\n".join(lines)


def write_readme(results: dict[str, object], readme: Path) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {BEGIN} … {END} section to fill")
    readme.write_text(pattern.sub(lambda _m: section(results), text))
