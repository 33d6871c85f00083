"""`wayfinder rerun`: decide again on recorded decisions, with the models they used.

Reads what a run recorded (the decisions, their inputs and the examples the models
learned) from an embedded run's files (`--out DIR`) or from the topics (`--kafka`),
rebuilds each model to the version a decision names, and decides again on the
decision's input: the same decision, or what differs. `--latest` also decides with
the newest models in the log: what those would have done instead.
"""

import argparse
import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from flows.orchestrate import DECISION_INPUTS_TOPIC, MODEL_EXAMPLES_TOPIC
from flows.settings import KafkaSettings, load_compiled, playbook_path
from flows.topics import read_topic
from operators.rerun import Rerun, RerunError, differences, histories, parse_version
from schemas.decision import Decision, DecisionInput
from schemas.learning import LearnedExamples

DESCRIPTION = __doc__


def _records(args: argparse.Namespace, topic: str) -> Iterator[bytes]:
    if args.kafka:
        for _key, value in read_topic(KafkaSettings.from_env(), topic):
            yield value
        return
    plain = Path(args.out) / f"{topic}.jsonl"
    packed = plain.with_name(plain.name + ".gz")
    path = packed if packed.exists() else plain
    if not path.exists():
        raise RerunError(
            f"{plain} does not exist: no run wrote here, or it ran with --no-decision-inputs"
        )
    with gzip.open(path, "rb") if path is packed else path.open("rb") as lines:
        yield from lines


def _latest_by_id(records: Iterator[bytes], wanted: set[str] | None, kind: type) -> dict:
    """Each decision's last record (a resumed run may repeat one), of those wanted."""
    decoder = msgspec.json.Decoder(kind)
    # The id is the first field of both records: skip the others without decoding them.
    prefixes = None if wanted is None else tuple(f'{{"decision_id":"{w}"'.encode() for w in wanted)
    found = {}
    for raw in records:
        if prefixes is not None and not raw.startswith(prefixes):
            continue
        record = decoder.decode(raw)
        found[record.decision_id] = record
    return found


def _examples(records: Iterator[bytes]) -> Iterator[LearnedExamples]:
    decoder = msgspec.json.Decoder(LearnedExamples)
    for raw in records:
        yield decoder.decode(raw)


def _version_order(recorded: DecisionInput) -> tuple:
    """Re-run in order of model versions, so the models are rebuilt forwards."""
    return tuple(sorted(parse_version(recorded.model_version).items()))


@dataclass
class RerunReport:
    """What `--json` writes: how many decisions re-ran the same, and what differed."""

    decisions: int = 0
    identical: int = 0
    differ: list[dict[str, object]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    latest_version: str | None = None
    changed_by_latest: int | None = None
    seconds: float = 0.0


def run(args: argparse.Namespace, console: Console) -> int:
    started = time.perf_counter()
    wanted = None if args.all else set(args.decision_ids)
    if not args.all and not wanted:
        console.print("[red]name one or more decision ids, or --all[/red]")
        return 2
    playbook = load_compiled(args.playbook or playbook_path())
    try:
        inputs = _latest_by_id(_records(args, DECISION_INPUTS_TOPIC), wanted, DecisionInput)
        decisions = _latest_by_id(_records(args, "decisions"), wanted, Decision)
        learned = _examples(_records(args, MODEL_EXAMPLES_TOPIC))
        rerun = Rerun(playbook, histories(playbook, learned))
    except RerunError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    report = RerunReport(missing=sorted((wanted or set()) - inputs.keys()))
    for decision_id in report.missing:
        console.print(f"[red]no recorded input for decision {decision_id}[/red]")
    latest = rerun.latest()
    if args.latest:
        report.latest_version = " ".join(f"{n}@{v}" for n, v in latest.items())
        report.changed_by_latest = 0
    for recorded in sorted(inputs.values(), key=_version_order):
        original = decisions.get(recorded.decision_id)
        if original is None:
            report.missing.append(recorded.decision_id)
            continue
        try:
            again = rerun.decide(recorded)
            newest = rerun.decide(recorded, latest) if args.latest else None
        except RerunError as exc:
            console.print(f"[red]{exc}[/red]")
            return 2
        changes = differences(original, again)
        report.decisions += 1
        if changes:
            report.differ.append({"decision_id": recorded.decision_id, "changes": changes})
        else:
            report.identical += 1
        if newest is not None and report.changed_by_latest is not None:
            outcome = (newest.outcome, newest.action_id)
            report.changed_by_latest += outcome != (original.outcome, original.action_id)
        if not args.all:
            now = differences(original, newest) if newest is not None else []
            _show(console, original, changes, newest, now)
    report.seconds = round(time.perf_counter() - started, 2)
    if args.all:
        _summarise(console, report)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if not report.differ and not report.missing else 1


def _show(
    console: Console,
    original: Decision,
    changes: list[str],
    newest: Decision | None,
    now_changes: list[str],
) -> None:
    console.print(
        f"[bold]{original.decision_id}[/bold] customer {original.customer_id}, "
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
        f"{len(report.missing):,} missing ({report.seconds} s)"
    )
    for item in report.differ[:5]:
        console.print(f"  {item['decision_id']}: {'; '.join(item['changes'])}")  # type: ignore[arg-type]
    if report.changed_by_latest is not None:
        console.print(
            f"with the newest models ({report.latest_version}): "
            f"{report.changed_by_latest:,} would have gone differently"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("decision_ids", nargs="*", help="decision ids (from decisions)")
    parser.add_argument("--all", action="store_true", help="re-run every recorded decision")
    parser.add_argument(
        "--latest", action="store_true", help="also decide with the newest models in the log"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--out", default="out", help="the embedded run's output folder")
    source.add_argument("--kafka", action="store_true", help="read the topics instead")
    parser.add_argument("--playbook", type=Path, help="the playbook the decisions were made with")
    parser.add_argument("--json", help="write the report as JSON here")


def add_rerun_command(subparsers) -> None:
    """Add `rerun` to the `wayfinder` sub-commands."""
    parser = subparsers.add_parser(
        "rerun",
        help="decide again on recorded decisions, with the model versions they used",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)
