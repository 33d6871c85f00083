"""The process-mining side: `wayfinder replay` on a generated log of a service desk
(tests.process_logs' generator, seeded) of at least 250k events."""

import json
import tempfile
from pathlib import Path

from bench.measure import WAYFINDER, run_child
from tests.process_logs import helpdesk_log, write_log_csv


def replay(cases: int) -> dict[str, float]:
    """Events per second of `wayfinder replay` as it measures itself, and end to end."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "helpdesk.csv"
        write_log_csv(helpdesk_log(seed=1, cases=cases), log)
        child = run_child([WAYFINDER, "replay", str(log), "--out", str(Path(tmp) / "out")])
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    return {
        "replay_events": summary["events"],
        "replay_eps": summary["events_per_second"],
        "replay_wall_eps": round(summary["events"] / child.seconds),
    }
