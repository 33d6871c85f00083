"""Run something in this process with a live progress display, and summarise it.

Progress and summary read the same Prometheus counters the flow exports, so
what the terminal shows is what an operator's dashboard shows. What runs is
given as a function (`flows.dataflow.execute` runs the flow), so the runner
knows nothing of bytewax.
"""

import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from flows.runtime import metrics

logger = logging.getLogger(__name__)


#: Seconds between two ends of a bytewax epoch, where every customer the epoch touched
#: is snapshotted (recovery or not) and their context view written. The flow does
#: nothing else meanwhile, so a service keeps its epochs short: at 5,000 events/s on
#: Kafka (40 s), decision requests waited p99 315 ms with 10 s epochs (bursts of 200 to
#: 250 ms for some 20,000 customers) and 144 ms with 1 s (50 to 70 ms for 4,500).
#: A replay keeps them long: each customer is snapshotted once an epoch however often
#: they come, and a 30,000-customer replay through Kafka took 0.95 times the events/s
#: with 1 s epochs. So does a run with recovery: where each epoch is committed, bytewax
#: clears older snapshots with a query over every customer the store holds (80 ms for
#: 100,000, 310 ms for 400,000), which 1 s epochs would pay every second.
SERVICE_EPOCH_SECONDS = 1.0
EPOCH_SECONDS = 10.0


def epoch_seconds(given: float | None, *, service: bool, recovery: bool) -> float:
    """The epoch length a run asked for; else 1 s for a `service` without `recovery`,
    10 s for any other run."""
    if given is not None:
        return given
    return SERVICE_EPOCH_SECONDS if service and not recovery else EPOCH_SECONDS


@dataclass(frozen=True)
class RecoveryOptions:
    """bytewax recovery: where the snapshot partitions live (a snapshot is taken where
    each epoch ends: `epoch_seconds`)."""

    directory: Path
    backup_interval: float = 0.0
    partitions: int = 1

    @property
    def resumes(self) -> bool:
        """The folder holds snapshots of an earlier run: this run resumes from them."""
        return self.directory.is_dir() and any(self.directory.iterdir())


@dataclass
class RunSummary:
    """What a run did, from the flow's counters."""

    seconds: float
    events: int
    dead_letters: dict[str, int]
    customers: int
    visitors: int
    duplicates: int
    erasures: int
    decisions: dict[str, int]
    #: By channel: actions pushed to customers, answers to decision requests with an
    #: action, and answers that said there is nothing to do.
    actions: dict[str, int]
    replies: dict[str, int]
    no_action_replies: dict[str, int]
    transitions: dict[str, int]
    intent_changes: int
    audience_changes: dict[str, int]
    loop_events: int
    #: Customers who left memory for the cold tier, and who came back from it.
    cold_moves: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "events": self.events,
            "events_per_second": round(self.events_per_second, 1),
            "customers": self.customers,
            "anonymous_visitors": self.visitors,
            "duplicates": self.duplicates,
            "erasures": self.erasures,
            "dead_letters": self.dead_letters,
            "decisions": self.decisions,
            "actions": self.actions,
            "replies": self.replies,
            "no_action_replies": self.no_action_replies,
            "transitions": self.transitions,
            "intent_changes": self.intent_changes,
            "audience_changes": self.audience_changes,
            "loop_events": self.loop_events,
            "cold_moves": self.cold_moves,
            "outputs": self.outputs,
        }


class _Counts:
    """A consistent reading of the counters, relative to when the run started."""

    def __init__(self) -> None:
        self._base = self._read()

    @staticmethod
    def _read() -> dict[str, float]:
        return {
            "events": metrics.sample("wayfinder_events_received")
            - metrics.sample("wayfinder_loop_events"),
            "loop_events": metrics.sample("wayfinder_loop_events"),
            "intent_changes": metrics.sample("wayfinder_intent_changes"),
            "customers": metrics.sample("wayfinder_customer_contexts_created", {"kind": "known"}),
            "visitors": metrics.sample(
                "wayfinder_customer_contexts_created", {"kind": "anonymous"}
            ),
            "duplicates": metrics.sample("wayfinder_duplicate_events"),
            "erasures": metrics.sample("wayfinder_erasures"),
            "dead_letters": sum(
                metrics.samples_by_label("wayfinder_dead_letters", "reason").values()
            ),
            "decisions": sum(metrics.samples_by_label("wayfinder_decisions", "outcome").values()),
            "actions": sum(
                metrics.samples_by_label("wayfinder_actions", "channel", {"kind": "sent"}).values()
            ),
        }

    def now(self) -> dict[str, int]:
        current = self._read()
        return {k: int(current[k] - self._base[k]) for k in current}


#: Summary figures counted by a label: (counter, label, only samples with these labels).
_BY_LABEL: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "dead_letters": ("wayfinder_dead_letters", "reason", None),
    "decisions": ("wayfinder_decisions", "outcome", None),
    "actions": ("wayfinder_actions", "channel", {"kind": "sent"}),
    "replies": ("wayfinder_actions", "channel", {"kind": "reply"}),
    "no_action_replies": ("wayfinder_actions", "channel", {"kind": "no_action"}),
    "transitions": ("wayfinder_journey_transitions", "kind", None),
    "audience_changes": ("wayfinder_audience_changes", "change", None),
    "cold_moves": ("wayfinder_cold_tier_moves", "way", None),
}


def _by_label() -> dict[str, dict[str, float]]:
    return {
        figure: metrics.samples_by_label(name, label, where)
        for figure, (name, label, where) in _BY_LABEL.items()
    }


def _since(current: dict[str, float], base: dict[str, float]) -> dict[str, int]:
    return {
        k: int(v - base.get(k, 0.0)) for k, v in sorted(current.items()) if v - base.get(k, 0.0) > 0
    }


def _progress_view(
    counts: dict[str, int],
    seconds: float,
    rate: float,
    title: str,
    span: tuple[float, float] | None,
) -> Group:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("elapsed", f"{seconds:,.1f} s")
    event_time = metrics.low_watermark("wayfinder_input_event_time_seconds")
    if event_time is not None:
        clock = datetime.fromtimestamp(event_time, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row("event time", clock)
        if span is not None:
            start, end = span
            done = min(max((event_time - start) / (end - start), 0.0), 1.0)
            table.add_row("progress", ProgressBar(total=1.0, completed=done, width=30))
    table.add_row("events", f"{counts['events']:,}")
    table.add_row("events/s", f"{rate:,.0f}")
    table.add_row("customers", f"{counts['customers']:,}")
    table.add_row("decisions", f"{counts['decisions']:,}")
    table.add_row("actions sent", f"{counts['actions']:,}")
    table.add_row("dead letters", f"{counts['dead_letters']:,}")
    return Group(Text(title, style="bold"), table)


def run_with_progress(
    execute: Callable[[], None],
    *,
    console: Console,
    title: str,
    span: tuple[float, float] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run `execute` to completion (or Ctrl-C) in this process and summarise the flow's
    counters over that time.

    `span` is the input's event-time span when known (the simulator's), for a bar.
    """
    counts = _Counts()
    label_bases = _by_label()
    started = time.perf_counter()
    done = threading.Event()

    def show() -> None:
        last_events, last_t = 0, started
        rate = 0.0
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while not done.wait(0.25):
                now = time.perf_counter()
                current = counts.now()
                if now - last_t >= 1.0:
                    rate = (current["events"] - last_events) / (now - last_t)
                    last_events, last_t = current["events"], now
                live.update(_progress_view(current, now - started, rate, title, span))

    display = threading.Thread(target=show, daemon=True) if progress else None
    if display is not None:
        display.start()
    try:
        execute()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: summarising what ran[/]")
    finally:
        done.set()
        if display is not None:
            display.join()
    return _summary(counts, label_bases, started)


def _summary(
    counts: _Counts, label_bases: dict[str, dict[str, float]], started: float
) -> RunSummary:
    seconds = time.perf_counter() - started
    final = counts.now()
    labelled = _by_label()
    by_label = {figure: _since(labelled[figure], label_bases[figure]) for figure in _BY_LABEL}
    if by_label["cold_moves"].get("returned"):  # (of whom, read ahead with their batch)
        by_label["cold_moves"]["returned read ahead"] = int(
            metrics.gauge_value("wayfinder_cold_store_takes_read_ahead")
        )
    return RunSummary(
        seconds=seconds,
        events=final["events"],
        customers=final["customers"],
        visitors=final["visitors"],
        duplicates=final["duplicates"],
        erasures=final["erasures"],
        loop_events=final["loop_events"],
        intent_changes=final["intent_changes"],
        dead_letters=by_label["dead_letters"],
        decisions=by_label["decisions"],
        actions=by_label["actions"],
        replies=by_label["replies"],
        no_action_replies=by_label["no_action_replies"],
        transitions=by_label["transitions"],
        audience_changes=by_label["audience_changes"],
        cold_moves=by_label["cold_moves"],
    )


def summarise_at_exit(title: str) -> None:
    """For a flow that bytewax's own runner runs (`python -m bytewax.run`), which says
    nothing when it ends: one line of summary at exit, to stderr and to the log."""
    counts = _Counts()
    label_bases = _by_label()
    started = time.perf_counter()

    def report() -> None:
        summary = _summary(counts, label_bases, started)
        line = json.dumps(summary.as_dict(), separators=(",", ":"))
        print(f"{title}: {line}", file=sys.stderr)
        logger.info("run summary: %s", line)

    atexit.register(report)


def print_summary(summary: RunSummary, console: Console) -> None:
    table = Table(title="Wayfinder run", show_header=False, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("events", f"{summary.events:,}")
    table.add_row(
        "elapsed", f"{summary.seconds:,.1f} s ({summary.events_per_second:,.0f} events/s)"
    )
    table.add_row("customers", f"{summary.customers:,}")
    table.add_row("anonymous visitors", f"{summary.visitors:,}")
    table.add_row("duplicates ignored", f"{summary.duplicates:,}")
    for outcome, n in summary.decisions.items():
        table.add_row(f"decisions: {outcome}", f"{n:,}")
    for channel, n in summary.actions.items():
        table.add_row(f"actions sent on {channel}", f"{n:,}")
    if not summary.actions:
        table.add_row("actions sent", "0")
    for channel, n in summary.replies.items():
        table.add_row(f"replies with an action on {channel}", f"{n:,}")
    for channel, n in summary.no_action_replies.items():
        table.add_row(f"no-action replies on {channel}", f"{n:,}")
    if summary.transitions:
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in summary.transitions.items())
        table.add_row("journey transitions", kinds)
    table.add_row("intent changes", f"{summary.intent_changes:,}")
    if summary.audience_changes:
        changes = ", ".join(f"{n:,} {c}" for c, n in summary.audience_changes.items())
        table.add_row("segment changes", changes)
    table.add_row("identity handovers, forwards & erasures", f"{summary.loop_events:,}")
    if summary.cold_moves:
        moves = ", ".join(f"{way} {n:,}" for way, n in summary.cold_moves.items())
        table.add_row("customers to the cold tier and back", moves)
    table.add_row("dead letters", f"{sum(summary.dead_letters.values()):,}")
    for reason, n in summary.dead_letters.items():
        table.add_row(f"  {reason}", f"{n:,}")
    console.print(table)
    if summary.outputs:
        console.print("[bold]wrote[/]")
        for name, path in summary.outputs.items():
            # soft_wrap: a path must stay one line, whatever the terminal width
            console.print(f"  {name:<22} {path}", soft_wrap=True, highlight=False)
