"""The process-mining side: `wayfinder replay` on a generated log of a service desk
(tests.process_logs' generator, seeded) of at least 250k events."""

import json
import tempfile
from pathlib import Path

from bench.measure import WAYFINDER, median, run_child
from tests.process_logs import helpdesk_log, write_log_csv


def replay(cases: int, repeat: int = 1) -> dict[str, object]:
    """Events per second of `wayfinder replay` as it measures itself, and end to end: the
    medians of `repeat` runs on one log (a single run moves by a sixth on a noisy day)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "helpdesk.csv"
        write_log_csv(helpdesk_log(seed=1, cases=cases), log)
        eps: list[float] = []
        wall: list[float] = []
        for run in range(repeat):
            out = Path(tmp) / f"out{run}"
            child = run_child([WAYFINDER, "replay", str(log), "--out", str(out)])
            summary = json.loads((out / "summary.json").read_text())
            eps.append(summary["events_per_second"])
            wall.append(summary["events"] / child.seconds)
    return {
        "replay_events": summary["events"],
        "replay_eps": round(median(eps)),
        "replay_wall_eps": round(median(wall)),
    }
