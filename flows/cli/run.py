"""`wayfinder run`: the orchestrate flow, embedded (simulator or an events file) or on Kafka."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from flows.cli.options import (
    DEFAULT_OUT,
    Subcommands,
    add_command,
    add_playbook_arg,
    add_simulation_args,
    positive_float,
    positive_int,
    print_error,
    simulation,
    write_json,
)

if TYPE_CHECKING:
    from flows.dataflow.flow import Challenger
    from flows.runtime.metrics_endpoint import MetricsEndpoint
    from flows.runtime.runner import RecoveryOptions, RunSummary
    from operators.playbook import CompiledPlaybook

logger = logging.getLogger(__name__)


def _recovery(args: argparse.Namespace) -> RecoveryOptions | None:
    from flows.runtime.runner import RecoveryOptions

    if args.recovery_dir is None:
        return None
    return RecoveryOptions(directory=args.recovery_dir, backup_interval=args.backup_interval)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from flows.runtime.runner import print_summary
    from flows.runtime.settings import load_compiled, playbook_path

    playbook = load_compiled(args.playbook or playbook_path())
    summary = _run_kafka(args, console, playbook) if args.kafka else None
    if summary is None:
        summary = _run_embedded(args, console, playbook)
        if summary is None:
            return 2
    print_summary(summary, console)
    return 0


def _run_kafka(
    args: argparse.Namespace, console: Console, playbook: CompiledPlaybook
) -> RunSummary:
    from flows.dataflow.execute import execute
    from flows.dataflow.kafka import kafka_flow, serve_metrics
    from flows.dataflow.stopping import StopRequest
    from flows.runtime.kafka_check import check_connection
    from flows.runtime.runner import epoch_seconds, run_with_progress
    from flows.runtime.settings import KafkaSettings
    from flows.runtime.topics import set_up_topics
    from schemas.topics import EVENTS

    settings = KafkaSettings.from_env()
    if args.no_decision_inputs:
        settings = dataclasses.replace(settings, decision_inputs=False)
    # Before the dataflow starts: its connector would retry a refused login for ever.
    check_connection(settings)
    topics = set_up_topics(settings, playbook.channels)
    if topics.created:
        console.print(f"created {len(topics.created)} topics on {settings.bootstrap_servers}")
    for warning in topics.warnings:  # a topic made for another use: said, not altered
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    stop = StopRequest()
    stop.on_signals()  # SIGTERM, Ctrl-C: finish the batch in hand, flush, snapshot, summarise
    flow = kafka_flow(
        settings, playbook=playbook, stop=stop, recovery=args.recovery_dir, workers=args.workers
    )
    serve_metrics(settings, port=args.metrics_port)
    summary = run_with_progress(
        lambda: execute(
            flow,
            workers=args.workers,
            recovery=_recovery(args),
            epoch_seconds=epoch_seconds(
                args.snapshot_interval,
                service=settings.tail,
                recovery=args.recovery_dir is not None,
            ),
        ),
        console=console,
        title=f"wayfinder on Kafka {settings.bootstrap_servers} ({settings.topic(EVENTS)})",
        progress=not args.no_progress,
    )
    if stop.reason is not None:
        console.print(f"stopped by {stop.reason}: every batch read was folded and sent")
    summary.outputs = {"topics": settings.topic_prefix + "*"}
    logger.info("run summary: %s", summary.as_dict())
    return summary


def _run_embedded(
    args: argparse.Namespace, console: Console, playbook: CompiledPlaybook
) -> RunSummary | None:
    from flows.dataflow.execute import execute
    from flows.dataflow.flow import Challenger, embedded_flow
    from flows.dataflow.sources import EventFileSource, Records
    from flows.lab.traffic import SimulatedTraffic
    from flows.lab.world import World
    from flows.runtime.recovery_store import check, hold
    from flows.runtime.run_files import (
        CONTEXT_VIEW,
        KEY_VAULT,
        OutFolderTaken,
        contact_map,
        prepare_out,
        write_end_files,
        write_summary,
        written_topics,
    )
    from flows.runtime.runner import epoch_seconds, run_with_progress
    from flows.runtime.settings import lab_secret_in_use, load_compiled, state_key
    from operators.models import ModelSet

    source: Records
    if args.events is not None:
        if not args.events.is_file():
            print_error(console, f"no such events file: {args.events}")
            return None
        source = EventFileSource(args.events)
        title = f"wayfinder on {args.events}"
    else:
        sim = simulation(args)
        source = SimulatedTraffic(sim, None if args.no_reactions else World(sim.seed, state_key))
        title = (
            f"wayfinder on the simulator ({sim.customers:,} customers, "
            f"{sim.hours:g} h, seed {sim.seed})"
        )
    if lab_secret_in_use():
        console.print(
            "note: WAYFINDER_STATE_KEY_SECRET is not set, so state keys and merges use the "
            "public lab secret: fine for a demo, never for customers' data",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    recovery = _recovery(args)
    if recovery is not None:
        hold(recovery.directory)  # before the out folder is touched: a second run stops here
        if recovery.resumes:
            check(recovery.directory)  # one sentence, before anything is written
    out: Path = args.out
    try:
        prepare_out(
            out,
            playbook.channels,
            overwrite=args.overwrite,
            resuming=recovery is not None and recovery.resumes,
        )
    except OutFolderTaken as exc:
        print_error(console, str(exc))
        return None
    models = ModelSet(playbook)
    challenger = (
        Challenger(load_compiled(args.challenger), args.challenger_models)
        if args.challenger
        else None
    )
    flow, _sink = embedded_flow(
        source,
        out,
        playbook=playbook,
        models=models,
        challenger=challenger,
        decision_inputs=not args.no_decision_inputs,
        recovery=recovery.directory if recovery is not None else None,
    )
    endpoint = _serve_embedded(args.metrics_port)
    try:
        summary = run_with_progress(
            lambda: execute(
                flow,
                workers=args.workers,
                recovery=recovery,
                epoch_seconds=epoch_seconds(
                    args.snapshot_interval, service=False, recovery=recovery is not None
                ),
            ),
            console=console,
            title=title,
            span=source.span(),
            progress=not args.no_progress,
        )
    finally:
        if endpoint is not None:
            endpoint.close()
    written: dict[str, Path] = dict(written_topics(out, playbook.channels))
    cmap = contact_map(out)
    written.update(write_end_files(out, models, cmap))
    if (out / KEY_VAULT).is_dir():
        written["key vault"] = out / KEY_VAULT
    if (out / CONTEXT_VIEW).is_dir():
        written["context view"] = out / CONTEXT_VIEW
    if cmap is not None and cmap.scopes:
        from flows.analysis.report import write_report

        written["report"] = write_report(cmap, summary.as_dict(), out / "report.html", title)
    if challenger is not None:
        written["shadow report"] = _shadow_report(out, playbook, challenger, console)
    summary.outputs = {name: str(path) for name, path in written.items()}
    write_summary(out, summary)
    return summary


def _serve_embedded(port: int | None) -> MetricsEndpoint | None:
    """The embedded run's endpoint, when asked for (a demo's live graphs)."""
    if port is None:
        return None
    from flows.runtime.metrics_endpoint import always_ready, serve
    from flows.runtime.settings import metrics_settings

    where = metrics_settings(port=port)
    assert where is not None  # (a port was given)
    return serve(where.address, where.port, ready=always_ready)


def _shadow_report(
    out: Path, playbook: CompiledPlaybook, challenger: Challenger, console: Console
) -> Path:
    from flows.analysis.shadow import compare, decisions_in, print_comparison
    from flows.runtime.run_files import topic_file
    from schemas.topics import DECISIONS, SHADOW_DECISIONS

    report = compare(
        decisions_in(topic_file(out, DECISIONS)), decisions_in(topic_file(out, SHADOW_DECISIONS))
    )
    report["versions"] = {"champion": playbook.version, "challenger": challenger.playbook.version}
    path = write_json(out / "shadow_report.json", report)
    print_comparison(report, console)
    return path


def register(sub: Subcommands) -> None:
    run = add_command(
        sub,
        "run",
        help="run the orchestrate flow (simulator by default)",
        description=(
            "Run the orchestrate flow. Without --events or --kafka it runs embedded on the "
            "built-in simulator and writes one JSON-lines file per topic under --out, then "
            "the contact-point map, a report and a summary."
        ),
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--events", type=Path, help="JSON-lines file of events (wire format)")
    source.add_argument(
        "--kafka",
        action="store_true",
        help="read and write Kafka topics (KAFKA_BOOTSTRAP_SERVERS, WAYFINDER_TOPIC_PREFIX)",
    )
    add_simulation_args(run)
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (embedded)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier run in --out (without it, such a folder is "
        "refused unless the run resumes from --recovery-dir)",
    )
    add_playbook_arg(run)
    run.add_argument(
        "--workers", type=positive_int, default=1, help="bytewax workers in this process"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve /metrics (and /livez, /readyz) on this port while the run lasts, on "
        "WAYFINDER_METRICS_ADDRESS (loopback by default); embedded runs serve none without "
        "it, --kafka serves on WAYFINDER_METRICS_PORT (9464) without it",
    )
    run.add_argument(
        "--challenger",
        type=Path,
        help="a challenger playbook deciding beside the live one (decisions.shadow only)",
    )
    run.add_argument(
        "--challenger-models",
        choices=("shared", "none"),
        default="shared",
        help="the challenger reads the live models, or decides by rules alone",
    )
    run.add_argument(
        "--no-reactions",
        action="store_true",
        help="simulated customers do not react to actions (open loop)",
    )
    run.add_argument(
        "--no-decision-inputs",
        action="store_true",
        help="do not record what each decision was made from (faster; no `rerun`)",
    )
    recovery = run.add_argument_group("recovery (bytewax snapshots)")
    recovery.add_argument("--recovery-dir", type=Path, help="snapshot folder; resumes if present")
    recovery.add_argument(
        "--snapshot-interval",
        type=positive_float,
        help="seconds between epochs, each ending with a snapshot of the customers it "
        "touched, recovery or not (default: 1 for a service on Kafka without recovery, "
        "else 10)",
    )
    recovery.add_argument(
        "--backup-interval",
        type=float,
        default=0.0,
        help="seconds snapshots are kept after a newer one (bytewax's backup interval)",
    )
    run.set_defaults(handler=cmd_run)
