"""How the stages are timed: wall clocks around whole runs, peak memory from the
kernel's accounting of each child, medians over repeats."""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
WAYFINDER = str(Path(PYTHON).parent / "wayfinder")


@dataclass(frozen=True)
class Child:
    """One finished child process: its wall time, peak resident memory and output."""

    seconds: float
    max_rss_bytes: int
    stdout: str
    stderr: str


def run_child(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 3600.0
) -> Child:
    """Run to its end (reaped here, for its own peak memory); fails loudly, with the
    child's last words, if it fails or outlasts `timeout`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), env=dict(env) if env is not None else None, cwd=REPO, stdout=out, stderr=err
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                proc.kill()
                _pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{list(argv)[:4]} exited {proc.returncode}: {stderr[-2000:]}")
    return Child(seconds, usage.ru_maxrss * 1024, stdout, stderr)


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def pace_ms(rounds: int = 5) -> float:
    """How long (ms, median of `rounds`) this machine takes for one fixed piece of plain
    Python (dictionaries, strings, tuples, floats: the kinds of work of the cores), just
    before a stage: the same machine runs at different speeds on different days (up to
    about 2.3 times apart here), so figures measured apart compare only with their pace."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        counts: dict[tuple[str, int], float] = {}
        total = 0.0
        for i in range(60_000):
            key = (f"step{i % 97}", i % 13)
            counts[key] = counts.get(key, 0.0) * 0.9 + 1.0
            total += len(key[0]) / (1.0 + counts[key])
        times.append((time.perf_counter() - started) * 1000)
    return round(median(times), 1)
