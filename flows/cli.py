"""The `wayfinder` command: run the flow, feed it, set up topics, export schemas."""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from flows.evaluate import DIAGNOSTICS, POLICIES, closed_loop
from flows.map_files import map_from_snapshots, write_map_files
from flows.orchestrate import SHADOW_TOPIC, Challenger, embedded_flow, kafka_flow
from flows.pictures import add_map_command
from flows.replay import add_replay_command
from flows.report import write_report
from flows.rerun import add_rerun_command
from flows.runner import RecoveryOptions, print_summary, run_flow
from flows.settings import (
    KafkaSettings,
    SettingsError,
    load_compiled,
    playbook_path,
)
from flows.shadow import compare, decisions_in, replay_shadow
from flows.simulator import SimulationConfig, simulate
from flows.sources import EventFileSource, Records
from flows.topics import ensure_topics
from flows.world import SimulatedTraffic, World
from operators.models import ModelSet, model_records
from schemas.action import Action
from schemas.codec import encode, event_file, good_events
from schemas.playbook import PlaybookError
from schemas.topics import TOPIC_SCHEMAS, json_schema

DEFAULT_OUT = Path("out")


def _add_simulation_args(
    parser: argparse.ArgumentParser, customers: int | None = None, hours: float | None = None
) -> None:
    group = parser.add_argument_group("simulator")
    defaults = SimulationConfig()
    group.add_argument(
        "--customers",
        type=int,
        default=customers or defaults.customers,
        help="simulated customers (size)",
    )
    group.add_argument("--seed", type=int, default=defaults.seed, help="simulator seed")
    group.add_argument(
        "--hours",
        type=float,
        default=hours or defaults.hours,
        help="simulated span of event time (duration)",
    )


def _simulation(args: argparse.Namespace) -> SimulationConfig:
    if args.customers < 1:
        raise SystemExit("--customers must be at least 1")
    if args.hours <= 0:
        raise SystemExit("--hours must be positive")
    return SimulationConfig(customers=args.customers, seed=args.seed, hours=args.hours)


def _recovery(args: argparse.Namespace) -> RecoveryOptions | None:
    if args.recovery_dir is None:
        return None
    return RecoveryOptions(
        directory=args.recovery_dir,
        snapshot_interval=args.snapshot_interval,
        backup_interval=args.backup_interval,
    )


def cmd_run(args: argparse.Namespace, console: Console) -> int:

    recovery = _recovery(args)
    playbook = load_compiled(args.playbook or playbook_path())
    if args.kafka:
        settings = KafkaSettings.from_env()
        if args.no_decision_inputs:
            settings = dataclasses.replace(settings, decision_inputs=False)
        created, _ = ensure_topics(settings, playbook.channels)
        if created:
            console.print(f"created {len(created)} topics on {settings.bootstrap_servers}")
        title = f"wayfinder on Kafka {settings.bootstrap_servers} ({settings.topic('events')})"
        summary = run_flow(
            kafka_flow(settings, playbook=playbook),
            console=console,
            title=title,
            workers=args.workers,
            recovery=recovery,
            progress=not args.no_progress,
        )
        summary.outputs = {"topics": settings.topic_prefix + "*"}
    else:
        if args.events is not None:
            if not args.events.is_file():
                console.print(f"[red]no such events file: {args.events}[/]")
                return 2
            source: Records = EventFileSource(args.events)
            title = f"wayfinder on {args.events}"
        else:
            sim = _simulation(args)
            source = SimulatedTraffic(sim, None if args.no_reactions else World(sim.seed))
            title = (
                f"wayfinder on the simulator ({sim.customers:,} customers, "
                f"{sim.hours:g} h, seed {sim.seed})"
            )
        models = ModelSet(playbook)
        challenger = (
            Challenger(load_compiled(args.challenger), args.challenger_models)
            if args.challenger
            else None
        )
        flow, sink = embedded_flow(
            source,
            args.out,
            playbook=playbook,
            models=models,
            challenger=challenger,
            decision_inputs=not args.no_decision_inputs,
        )
        summary = run_flow(
            flow,
            console=console,
            title=title,
            span=source.span(),
            workers=args.workers,
            recovery=recovery,
            progress=not args.no_progress,
        )
        topics = sorted(p.name.split(".jsonl")[0] for p in args.out.glob("*.jsonl*"))
        summary.outputs = {topic: str(sink.path(topic)) for topic in topics}
        analytics = sink.path("analytics")
        if analytics.exists():
            with analytics.open("rb") as snapshots:
                cmap = map_from_snapshots(snapshots)
            for name, path in write_map_files(cmap, args.out).items():
                summary.outputs[name] = str(path)
            if cmap.scopes:
                report = write_report(cmap, summary.as_dict(), args.out / "report.html", title)
                summary.outputs["report"] = str(report)
        if challenger is not None:
            report = compare(
                decisions_in(sink.path("decisions")), decisions_in(sink.path(SHADOW_TOPIC))
            )
            report["versions"] = {
                "champion": playbook.version,
                "challenger": challenger.playbook.version,
            }
            shadow_path = args.out / "shadow_report.json"
            shadow_path.write_text(json.dumps(report, indent=2) + "\n")
            summary.outputs["shadow report"] = str(shadow_path)
            _print_shadow(report, console)
        models_path = args.out / "models.json"
        models_path.write_text(json.dumps(model_records(models), indent=2) + "\n")
        summary.outputs["models"] = str(models_path)
        summary_path = args.out / "summary.json"
        summary.outputs["summary"] = str(summary_path)
        summary_path.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    print_summary(summary, console)
    return 0


def _print_shadow(report: dict, console: Console) -> None:
    value = report["expected_value"]
    console.print(
        f"challenger vs champion: {report['different_action']:,} of {report['triggers']:,} "
        f"decisions differ; expected value {value['challenger']:,.0f} vs "
        f"{value['champion']:,.0f}"
        + (
            f"; violations {report['violations']['challenger']} vs "
            f"{report['violations']['champion']}"
            if "violations" in report
            else ""
        ),
        highlight=False,
    )
    for change, n in list(report["changes"].items())[:8]:
        console.print(f"  {n:>6,}  {change}", highlight=False)


def cmd_shadow(args: argparse.Namespace, console: Console) -> int:
    champion = load_compiled(args.playbook or playbook_path())
    challenger = load_compiled(args.challenger)
    if args.events is not None:
        events = list(event_file(args.events))
    else:
        events = list(good_events(raw for _ts, raw in simulate(_simulation(args))))
    report = replay_shadow(
        events, champion, challenger, challenger_learns=args.challenger_models == "shared"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "shadow_report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    _print_shadow(report, console)
    console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    return 0


def cmd_react(args: argparse.Namespace, console: Console) -> int:
    """The simulated customers' side of the closed loop on Kafka: read the action topics,
    write their reactions (outcomes, and what the action made happen) to the events topic."""
    settings = KafkaSettings.from_env()
    playbook = load_compiled(args.playbook or playbook_path())
    world = World(args.seed)
    topics = [settings.topic(f"actions.{channel}") for channel in playbook.channels]
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka_python_config())
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or [])
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    decoder = msgspec.json.Decoder(Action)
    reacted = produced = 0
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < args.idle:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    quiet_since = time.monotonic()
                    action = decoder.decode(record.value)
                    reactions = world.react(action)
                    reacted += 1
                    for event in reactions:
                        producer.send(
                            settings.topic("events"),
                            key=action.customer_id.encode(),
                            value=encode(event),
                        )
                        produced += 1
            producer.flush()
    finally:
        consumer.close()
        producer.close()
    console.print(
        f"read {reacted:,} actions, wrote {produced:,} reactions to {settings.topic('events')}",
        highlight=False,
    )
    return 0


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    sim = _simulation(args)
    if args.kafka:
        return _produce_simulation(sim, console)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("wb") as f:
        for _ts, raw in simulate(sim):
            f.write(raw + b"\n")
            n += 1
    console.print(f"wrote {n:,} events of {sim.customers:,} customers to {out}")
    return 0


def _produce_simulation(sim: SimulationConfig, console: Console) -> int:
    settings = KafkaSettings.from_env()
    ensure_topics(settings)
    topic = settings.topic("events")
    producer = KafkaProducer(linger_ms=20, acks="all", **settings.kafka_python_config())
    key_reader = msgspec.json.Decoder(_KeyFields)
    n = 0
    for _ts, raw in simulate(sim):
        producer.send(topic, key=_partition_key(key_reader, raw), value=raw)
        n += 1
    producer.flush()
    producer.close()
    console.print(f"produced {n:,} events of {sim.customers:,} customers to {topic}")
    return 0


class _KeyFields(msgspec.Struct):
    customer_id: str | None = None
    anonymous_id: str | None = None


def _partition_key(reader: msgspec.json.Decoder, raw: bytes) -> bytes | None:
    """Key by customer so one customer's events stay in order on one partition."""
    try:
        fields = reader.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    key = fields.customer_id or fields.anonymous_id
    return key.encode() if key else None


def cmd_topics(args: argparse.Namespace, console: Console) -> int:
    settings = KafkaSettings.from_env()
    created, existing = ensure_topics(settings)
    for topic in created:
        console.print(f"created  {topic}")
    for topic in existing:
        console.print(f"exists   {topic}")
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    sim = _simulation(args)
    playbook = load_compiled(args.playbook or playbook_path())
    console.print(
        f"evaluating {', '.join(POLICIES)} on {sim.customers:,} simulated customers, "
        f"{sim.hours:g} h, seed {sim.seed} ...",
        highlight=False,
    )
    results = {}
    for policy in POLICIES:
        results[policy] = closed_loop(sim, policy, playbook)
        console.print(f"  {policy}: done in {results[policy]['seconds']} s", highlight=False)
    table = Table(title="Closed-loop evaluation (same population, same seed)")
    for column in (
        "policy",
        "reward",
        "goals/customer",
        "conversions",
        "sent",
        "intent acc.",
        "violations",
    ):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for policy, r in results.items():
        accuracy = r.get("intent_accuracy")
        table.add_row(
            policy,
            f"{r['reward']:,.0f}",
            f"{r['goals_per_customer']:.3f}",
            f"{r['conversions']:,}",
            f"{r['actions_sent']:,}",
            "–" if accuracy is None else f"{accuracy:.1%}",
            str(r["violations"]),
        )
    console.print(table)
    learned, rules, oracle = (results[p]["reward"] for p in ("learned", "rules", "oracle"))
    ratios = {
        "learned_vs_rules": round(learned / rules, 3) if rules else None,
        "learned_vs_oracle": round(learned / oracle, 3) if oracle else None,
    }
    console.print(
        f"learned / rules-only reward: {ratios['learned_vs_rules']}x; "
        f"learned / oracle: {ratios['learned_vs_oracle']:.0%}",
        highlight=False,
    )
    diagnostics = {}
    if args.diagnostics:
        for name in DIAGNOSTICS:
            diagnostics[name] = closed_loop(sim, name, playbook)
        told = diagnostics["learned_true_intent"]["reward"]
        ratios["learned_true_intent_vs_rules"] = round(told / rules, 3) if rules else None
        console.print(
            f"told the true intent, the learned models reach {told:,.0f} "
            f"({ratios['learned_true_intent_vs_rules']}x rules-only, {told / oracle:.0%} of the "
            "oracle): the difference to learned is what intent prediction leaves on the table",
            highlight=False,
        )
    document = {
        "population": {"customers": sim.customers, "hours": sim.hours, "seed": sim.seed},
        "playbook_version": playbook.version,
        "policies": results,
        "diagnostics": diagnostics,
        "ratios": ratios,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.json}", soft_wrap=True, highlight=False)
    return 0


def cmd_playbook(args: argparse.Namespace, console: Console) -> int:
    path = args.file or playbook_path()
    playbook = load_compiled(path)
    console.print(
        f"{path}: valid (version {playbook.version}): {len(playbook.contact_points)} contact "
        f"points, {len(playbook.journeys)} journeys, {len(playbook.segments)} segments, "
        f"{len(playbook.actions)} actions",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def cmd_schema(args: argparse.Namespace, console: Console) -> int:
    if args.out is None:
        document = {topic: json_schema(topic) for topic in TOPIC_SCHEMAS}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for topic in TOPIC_SCHEMAS:
        path = args.out / f"{topic}.schema.json"
        path.write_text(json.dumps(json_schema(topic), indent=2) + "\n")
        console.print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wayfinder", description="Real-time customer journey orchestration."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the orchestrate flow (simulator by default)",
        description=(
            "Run the orchestrate flow. Without --events or --kafka it runs embedded on the "
            "built-in simulator and writes one JSON-lines file per topic under --out."
        ),
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--events", type=Path, help="JSON-lines file of events (wire format)")
    source.add_argument(
        "--kafka",
        action="store_true",
        help="read and write Kafka topics (KAFKA_BOOTSTRAP_SERVERS, WAYFINDER_TOPIC_PREFIX)",
    )
    _add_simulation_args(run)
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (embedded)")
    run.add_argument(
        "--playbook", type=Path, help="playbook TOML (default: WAYFINDER_PLAYBOOK or the built-in)"
    )
    run.add_argument("--workers", type=int, default=1, help="bytewax workers in this process")
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
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
    recovery.add_argument("--snapshot-interval", type=float, default=10.0, help="seconds")
    recovery.add_argument("--backup-interval", type=float, default=0.0, help="seconds")
    run.set_defaults(handler=cmd_run)

    simulate_cmd = sub.add_parser(
        "simulate",
        help="write simulated events to a file or the events topic",
        description="Write the simulator's events (wire format) to a JSON-lines file or Kafka.",
    )
    target = simulate_cmd.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, default=Path("events.jsonl"), help="JSON-lines file")
    target.add_argument("--kafka", action="store_true", help="produce to the events topic")
    _add_simulation_args(simulate_cmd)
    simulate_cmd.set_defaults(handler=cmd_simulate)

    topics = sub.add_parser(
        "topics",
        help="create the Kafka topics (idempotent)",
        description=(
            "Create every Wayfinder topic that is missing: events, journeys, decisions, "
            "audiences, analytics, dlq, and actions.<channel> for each playbook channel. "
            "Partitions from WAYFINDER_TOPIC_PARTITIONS."
        ),
    )
    topics.set_defaults(handler=cmd_topics)

    add_replay_command(sub)
    add_rerun_command(sub)
    add_map_command(sub)

    shadow = sub.add_parser(
        "shadow",
        help="champion vs challenger on a replayed log",
        description=(
            "Replay events (a file, or the simulator) through the live playbook and a "
            "challenger side by side, and report where their decisions differ, the expected "
            "value of each and their policy violations. The challenger never acts."
        ),
    )
    shadow.add_argument("--challenger", type=Path, required=True, help="challenger playbook")
    shadow.add_argument("--playbook", type=Path, help="champion playbook (default: built-in)")
    shadow.add_argument(
        "--challenger-models",
        choices=("shared", "none"),
        default="shared",
        help="the challenger learns its own models too, or decides by rules alone",
    )
    shadow.add_argument("--events", type=Path, help="JSON-lines events (default: simulator)")
    shadow.add_argument("--out", type=Path, default=Path("out/shadow"), help="output folder")
    _add_simulation_args(shadow)
    shadow.set_defaults(handler=cmd_shadow)

    react = sub.add_parser(
        "react",
        help="simulated customers react to actions on Kafka (closed loop)",
        description=(
            "Read every action topic and write the simulated customers' reactions (action "
            "outcomes, and the events a working action causes) to the events topic; stops "
            "after --idle seconds without a new action. Use the seed of the simulation."
        ),
    )
    react.add_argument("--seed", type=int, default=SimulationConfig().seed, help="simulator seed")
    react.add_argument("--idle", type=float, default=30.0, help="seconds without actions to stop")
    react.add_argument("--playbook", type=Path, help="playbook whose channels to read")
    react.set_defaults(handler=cmd_react)

    evaluate = sub.add_parser(
        "evaluate",
        help="compare policies in a closed loop with the simulator",
        description=(
            "Run Wayfinder's learned policy, rules only, random and an oracle (which knows "
            "the simulated customers' hidden truth) on the same simulated population and "
            "seed; the customers react to what they are sent. Prints reward, goals reached "
            "per customer, intent accuracy and policy violations, and writes them as JSON."
        ),
    )
    _add_simulation_args(evaluate, customers=1000, hours=168.0)
    evaluate.add_argument("--playbook", type=Path, help="playbook TOML (default: the built-in)")
    evaluate.add_argument(
        "--json", type=Path, default=Path("out/evaluation.json"), help="where to write the JSON"
    )
    evaluate.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip the ablation that tells the learned models each customer's true intent",
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    playbook = sub.add_parser(
        "playbook",
        help="validate a playbook",
        description="Validate a playbook TOML file; errors name the file, the entry and the field.",
    )
    playbook.add_argument(
        "file", type=Path, nargs="?", help="playbook TOML (default: the one `run` would use)"
    )
    playbook.set_defaults(handler=cmd_playbook)

    schema = sub.add_parser(
        "schema",
        help="export the JSON Schema of every topic",
        description="Export a JSON Schema per topic, so producers in any language can validate.",
    )
    schema.add_argument("--out", type=Path, help="folder for <topic>.schema.json files")
    schema.set_defaults(handler=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.command == "schema")
    try:
        return args.handler(args, console)
    except SettingsError as exc:
        console.print(f"[red]settings: {exc}[/]")
        return 2
    except PlaybookError as exc:
        Console(stderr=True).print(
            f"[red]playbook error: {exc}[/]", soft_wrap=True, highlight=False
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
