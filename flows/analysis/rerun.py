"""Decide again on recorded decisions, with the models they used (`wayfinder rerun`).

Reads what a run recorded (the decisions, their inputs and the examples the models
learned) from an embedded run's files or from the topics, rebuilds each model to
the version a decision names, and decides again on the decision's input: the same
decision, or what differs. With `latest`, it also decides with the newest models in
the log: what those would have done instead.
"""

import gzip
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from flows.runtime.kafka_check import check_connection
from flows.runtime.settings import KafkaSettings
from flows.runtime.topics import read_topic
from operators.playbook import CompiledPlaybook
from operators.rerun import Rerun, RerunError, differences, histories, parse_version
from schemas.decision import Decision, DecisionInput
from schemas.learning import LearnedExamples
from schemas.topics import DECISION_INPUTS, DECISIONS, MODEL_EXAMPLES

#: A recorded decision, or what it was made from (both start with their decision id).
Recorded = TypeVar("Recorded", Decision, DecisionInput)


def _records(out: Path | None, topic: str) -> Iterator[bytes]:
    """The messages of a topic: an embedded run's file in `out`, or (None) the topic on
    Kafka."""
    if out is None:
        settings = KafkaSettings.from_env()
        check_connection(settings)  # a refused login is one line at once, not after 30 s
        for _key, value in read_topic(settings, topic):
            if value is not None:
                yield value
        return
    plain = out / f"{topic}.jsonl"
    packed = plain.with_name(plain.name + ".gz")
    path = packed if packed.exists() else plain
    if not path.exists():
        raise RerunError(
            f"{plain} does not exist: no run wrote here, or it ran with --no-decision-inputs"
        )
    with gzip.open(path, "rb") if path is packed else path.open("rb") as lines:
        yield from lines


def _latest_by_id(
    records: Iterator[bytes], wanted: set[str] | None, kind: type[Recorded]
) -> dict[str, Recorded]:
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


def _version_order(recorded: DecisionInput) -> tuple[tuple[str, int], ...]:
    """Re-run in order of model versions, so the models are rebuilt forwards."""
    return tuple(sorted(parse_version(recorded.model_version).items()))


@dataclass
class Differs:
    """A decision that re-ran differently, and how."""

    decision_id: str
    changes: list[str]


@dataclass
class RerunReport:
    """What `--json` writes: how many decisions re-ran the same, and what differed."""

    decisions: int = 0
    identical: int = 0
    differ: list[Differs] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    latest_version: str | None = None
    changed_by_latest: int | None = None
    seconds: float = 0.0


#: What is shown of each decision re-run one by one: the original, what differs with
#: the same versions, the decision with the newest models (if asked) and how it differs.
Show = Callable[[Decision, list[str], Decision | None, list[str]], None]


def rerun(
    playbook: CompiledPlaybook,
    out: Path | None,
    decision_ids: set[str] | None,
    *,
    latest: bool = False,
    show: Show | None = None,
) -> RerunReport:
    """Re-run the named decisions (None: all) of a run's files in `out` (None: the topics);
    `show` is told about each one. Raises RerunError when the record cannot be read."""
    started = time.perf_counter()
    inputs = _latest_by_id(_records(out, DECISION_INPUTS), decision_ids, DecisionInput)
    decisions = _latest_by_id(_records(out, DECISIONS), decision_ids, Decision)
    engine = Rerun(playbook, histories(playbook, _examples(_records(out, MODEL_EXAMPLES))))
    report = RerunReport(missing=sorted((decision_ids or set()) - inputs.keys()))
    newest_versions = engine.latest()
    if latest:
        report.latest_version = " ".join(f"{n}@{v}" for n, v in newest_versions.items())
        report.changed_by_latest = 0
    for recorded in sorted(inputs.values(), key=_version_order):
        original = decisions.get(recorded.decision_id)
        if original is None:
            report.missing.append(recorded.decision_id)
            continue
        again = engine.decide(recorded)
        newest = engine.decide(recorded, newest_versions) if latest else None
        changes = differences(original, again)
        report.decisions += 1
        if changes:
            report.differ.append(Differs(recorded.decision_id, changes))
        else:
            report.identical += 1
        if newest is not None and report.changed_by_latest is not None:
            outcome = (newest.outcome, newest.action_id)
            report.changed_by_latest += outcome != (original.outcome, original.action_id)
        if show is not None:
            now = differences(original, newest) if newest is not None else []
            show(original, changes, newest, now)
    report.seconds = round(time.perf_counter() - started, 2)
    return report
