"""`wayfinder rerun` and `shadow`: auditing decisions, and trying a challenger playbook."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from flows.cli.options import (
    DEFAULT_OUT,
    Subcommands,
    add_command,
    add_playbook_arg,
    add_simulation_args,
    print_error,
    simulation,
    write_json,
)

if TYPE_CHECKING:
    from flows.analysis.rerun import RerunReport
    from schemas.decision import Decision


def cmd_rerun(args: argparse.Namespace, console: Console) -> int:
    from flows.analysis.rerun import rerun
    from flows.runtime.settings import load_compiled, playbook_path
    from operators.rerun import RerunError

    wanted = None if args.all else set(args.decision_ids)
    if not args.all and not wanted:
        console.print("[red]name one or more decision ids, or --all[/red]")
        return 2
    playbook = load_compiled(args.playbook or playbook_path())

    def show(
        original: Decision, changes: list[str], newest: Decision | None, now: list[str]
    ) -> None:
        _show(console, original, changes, newest, now)

    try:
        report = rerun(
            playbook,
            None if args.kafka else args.out,
            wanted,
            latest=args.latest,
            show=None if args.all else show,
        )
    except RerunError as exc:
        print_error(console, str(exc))
        return 2
    if args.all:
        _summarise(console, report)
    else:
        for decision_id in report.missing:
            print_error(console, f"no recorded input for decision {decision_id}")
    if args.json:
        write_json(args.json, asdict(report))
    return 0 if not report.differ and not report.missing else 1


def _show(
    console: Console,
    original: Decision,
    changes: list[str],
    newest: Decision | None,
    now_changes: list[str],
) -> None:
    from rich.table import Table

    console.print(
        f"[bold]{original.decision_id}[/bold] customer {original.customer}, "
        f"{original.trigger_type} at {original.created_at.isoformat()}"
    )
    console.print(
        f"  made with playbook {original.playbook_version}, models {original.model_version}"
    )
    table = Table("candidate", "status", "score", "channel", "reason")
    for c in original.candidates:
        table.add_row(c.action, c.status, f"{c.score:g}", c.channel or "", c.reasons[-1])
    console.print(table)
    if changes:
        console.print("  [red]re-run with the same versions differs:[/red]")
        for change in changes:
            console.print(f"    {change}")
    else:
        console.print("  [green]re-run with the same versions: identical[/green]")
    if newest is not None:
        console.print(f"  with the newest models ({newest.model_version}):")
        for change in now_changes or ["the same decision"]:
            console.print(f"    {change}")


def _summarise(console: Console, report: RerunReport) -> None:
    console.print(
        f"re-ran {report.decisions:,} decisions with their recorded model versions: "
        f"{report.identical:,} identical, {len(report.differ):,} differ, "
        f"{len(report.missing):,} missing, {report.erased:,} of customers erased since "
        f"(unreadable) ({report.seconds} s)"
    )
    for topic, n in sorted(report.unreadable.items()):
        console.print(f"  skipped {n:,} records of {topic} that are not records of it")
    for topic, n in sorted(report.unsigned.items()):
        console.print(f"  skipped {n:,} records of {topic} that the flow did not sign")
    for item in report.differ[:5]:
        console.print(f"  {item.decision_id}: {'; '.join(item.changes)}")
    if report.changed_by_latest is not None:
        console.print(
            f"with the newest models ({report.latest_version}): "
            f"{report.changed_by_latest:,} would have gone differently"
        )


def cmd_shadow(args: argparse.Namespace, console: Console) -> int:
    from flows.analysis.shadow import print_comparison, replay_shadow
    from flows.lab.simulator import simulate
    from flows.runtime.settings import load_compiled, playbook_path
    from schemas.codec import event_file, good_events

    champion = load_compiled(args.playbook or playbook_path())
    challenger = load_compiled(args.challenger)
    if args.events is not None:
        events = list(event_file(args.events))
    else:
        events = list(good_events(raw for _ts, raw in simulate(simulation(args))))
    report = replay_shadow(
        events, champion, challenger, challenger_learns=args.challenger_models == "shared"
    )
    path = write_json(args.out / "shadow_report.json", report)
    print_comparison(report, console)
    console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    return 0


def register(sub: Subcommands) -> None:
    rerun = add_command(
        sub,
        "rerun",
        help="decide again on recorded decisions, with the model versions they used",
        description=(
            "Read what a run recorded (the decisions, their inputs and the examples the "
            "models learned) from an embedded run's files (--out) or the topics (--kafka), "
            "rebuild each model to the version a decision names, and decide again on the "
            "decision's input: the same decision, or what differs. --latest also decides "
            "with the newest models in the log: what those would have done instead. Exits "
            "1 when a decision differs or has no recorded input."
        ),
    )
    rerun.add_argument("decision_ids", nargs="*", help="decision ids (from decisions)")
    rerun.add_argument("--all", action="store_true", help="re-run every recorded decision")
    rerun.add_argument(
        "--latest", action="store_true", help="also decide with the newest models in the log"
    )
    source = rerun.add_mutually_exclusive_group()
    source.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="the embedded run's output folder"
    )
    source.add_argument("--kafka", action="store_true", help="read the topics instead")
    add_playbook_arg(rerun, "the playbook the decisions were made with")
    rerun.add_argument("--json", type=Path, help="write the report as JSON here")
    rerun.set_defaults(handler=cmd_rerun)

    shadow = add_command(
        sub,
        "shadow",
        help="champion vs challenger on a replayed log",
        description=(
            "Replay events (a file, or the simulator) through the live playbook and a "
            "challenger side by side, and report where their decisions differ, the expected "
            "value of each and their policy violations. The challenger never acts."
        ),
    )
    shadow.add_argument("--challenger", type=Path, required=True, help="challenger playbook")
    add_playbook_arg(shadow, "champion playbook")
    shadow.add_argument(
        "--challenger-models",
        choices=("shared", "none"),
        default="shared",
        help="the challenger learns its own models too, or decides by rules alone",
    )
    shadow.add_argument("--events", type=Path, help="JSON-lines events (default: the simulator)")
    shadow.add_argument("--out", type=Path, default=DEFAULT_OUT / "shadow", help="output folder")
    add_simulation_args(shadow)
    shadow.set_defaults(handler=cmd_shadow)
