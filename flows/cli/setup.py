"""`wayfinder topics`, `playbook` and `schema`: what a deployment sets up and checks."""

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from flows.cli.options import Subcommands, add_command, write_json
from schemas.topics import BALANCE, CORE_TOPICS, TOPIC_SCHEMAS


def cmd_topics(args: argparse.Namespace, console: Console) -> int:
    from flows.runtime.kafka_check import check_connection
    from flows.runtime.settings import KafkaSettings, TopicRetention
    from flows.runtime.topics import describe_use, set_up_topics, topic_uses, use_of

    settings = KafkaSettings.from_env()
    retention = TopicRetention.from_env()
    check_connection(settings)
    done = set_up_topics(settings, retention=retention)
    uses = topic_uses(settings, retention)
    for topic in done.created:
        use = use_of(uses, topic.removeprefix(settings.topic_prefix))
        console.print(
            f"created  {topic}  {describe_use(use)}", soft_wrap=True, highlight=False, markup=False
        )
    for topic in done.existing:
        console.print(f"exists   {topic}", soft_wrap=True, highlight=False, markup=False)
    for warning in done.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    if done.warnings:
        console.print(
            f"{len(done.warnings)} warnings: existing topics differ from what `wayfinder topics` "
            "creates; nothing was changed",
            soft_wrap=True,
            highlight=False,
        )
    return 0


def cmd_playbook(args: argparse.Namespace, console: Console) -> int:
    from flows.lab.vocabulary import vocabulary
    from flows.runtime.settings import load_compiled, playbook_path
    from schemas.playbook import load_playbook
    from schemas.vocabulary import vocabulary_warnings

    path = args.file or playbook_path()
    playbook = load_compiled(path)
    console.print(
        f"{path}: valid (version {playbook.version}): {len(playbook.contact_points)} contact "
        f"points, {len(playbook.journeys)} journeys, {len(playbook.segments)} segments, "
        f"{len(playbook.actions)} actions",
        soft_wrap=True,
        highlight=False,
    )
    warnings = vocabulary_warnings(load_playbook(path), vocabulary(), str(path))
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    if warnings:
        console.print(
            f"{len(warnings)} warnings: names the playbook relies on that neither it nor the "
            "built-in simulator produces (fine if your channels send them)",
            soft_wrap=True,
            highlight=False,
        )
    return 0


def cmd_schema(args: argparse.Namespace, console: Console) -> int:
    from schemas.topics import json_schema

    if args.out is None:
        document = {topic: json_schema(topic) for topic in TOPIC_SCHEMAS}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for topic in TOPIC_SCHEMAS:
        path = write_json(args.out / f"{topic}.schema.json", json_schema(topic))
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    return 0


def cmd_scrub_recovery(args: argparse.Namespace, console: Console) -> int:
    from flows.runtime.recovery_store import check, hold, release, scrub

    folder: Path = args.folder
    hold(folder)  # never while a run snapshots into it
    try:
        check(folder)  # a folder that is not a recovery store is one sentence (main: exit 2)
        dropped = scrub(folder)
    finally:
        release(folder)
    console.print(
        f"scrubbed {folder}: {dropped:,} snapshots of erased keys dropped, files rewritten",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    return 0


def register(sub: Subcommands) -> None:
    topics = add_command(
        sub,
        "topics",
        help="create the Kafka topics, configured for their use (idempotent)",
        description=(
            "Create every Wayfinder topic that is missing: "
            + ", ".join((*CORE_TOPICS, BALANCE))
            + ", and actions.<channel> for each channel of the playbook, each configured for "
            "its use: audiences compacted, decisions, decisions.inputs and decisions.shadow "
            "kept for WAYFINDER_DECISIONS_RETENTION, dlq for WAYFINDER_DLQ_RETENTION, "
            "models.examples on one partition and kept forever, cluster.balance on one "
            "partition and kept an hour. Names carry "
            "WAYFINDER_TOPIC_PREFIX; partitions and replication come from "
            "WAYFINDER_TOPIC_PARTITIONS and WAYFINDER_TOPIC_REPLICATION. Topics that exist "
            "are checked, never changed: a warning says each difference and how to change it "
            "(exit status 0)."
        ),
    )
    topics.set_defaults(handler=cmd_topics)

    playbook = add_command(
        sub,
        "playbook",
        help="validate a playbook",
        description=(
            "Validate a playbook TOML file: every error names the file, the entry and the "
            "field, all of them at once. Names that nothing produces (an event type, a value "
            "tier, an event property neither the playbook nor the built-in simulator knows) "
            "are warned about, with the closest known name."
        ),
    )
    playbook.add_argument(
        "file", type=Path, nargs="?", help="playbook TOML (default: the one `run` would use)"
    )
    playbook.set_defaults(handler=cmd_playbook)

    schema = add_command(
        sub,
        "schema",
        help="export the JSON Schema of every topic",
        description=(
            "Export a JSON Schema per topic, so producers in any language can validate: to "
            "stdout as one document, or one <topic>.schema.json per topic into --out."
        ),
    )
    schema.add_argument("--out", type=Path, help="folder for <topic>.schema.json files")
    schema.set_defaults(handler=cmd_schema)

    scrub = add_command(
        sub,
        "scrub-recovery",
        help="remove erased customers from a stopped flow's recovery folder",
        description=(
            "Drop every snapshot of an erased customer from a bytewax recovery folder, with "
            "SQLite's secure deletion, and rewrite its files so no freed page keeps their "
            "bytes. Run it while the flow is stopped (`wayfinder run` does it itself before "
            "resuming and when it ends)."
        ),
    )
    scrub.add_argument("folder", type=Path, help="the recovery folder (-r of bytewax.run)")
    scrub.set_defaults(handler=cmd_scrub_recovery)
