"""Decide again on recorded decisions, with the models they used (`wayfinder rerun`).

Reads what a run recorded (the decisions, their inputs and the examples the models
learned) from an embedded run's files or from the topics, rebuilds each model to
the version a decision names, opens the decision's input with the customer's key (from
the flow's key vault), and decides again on it: the same decision, or what differs. A
decision of a customer erased since is counted as such: its input can no longer be
read. With `latest`, it also decides with the newest models in the log: what those
would have done instead.
"""

import contextlib
import gzip
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from flows.runtime.kafka_check import check_connection
from flows.runtime.run_files import KEY_VAULT
from flows.runtime.settings import KafkaSettings, deployment_secret, state_key
from flows.runtime.signature import RecordSignature
from flows.runtime.topics import read_topic
from operators.playbook import CompiledPlaybook
from operators.rerun import (
    Rerun,
    RerunError,
    differences,
    histories,
    open_basis,
    parse_version,
)
from schemas.decision import Decision, DecisionBasis, DecisionInput
from schemas.learning import LearnedExamples
from schemas.topics import DECISION_INPUTS, DECISIONS, MODEL_EXAMPLES
from state.key_vault import VaultReader

#: A recorded decision, or what it was made from (both start with their decision id).
Recorded = TypeVar("Recorded", Decision, DecisionInput)
#: One decoder per kind of record (made once: a run's topics hold many thousands).
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (Decision, DecisionInput, LearnedExamples)
}
#: The topic each kind of record is read from.
_TOPIC_OF: dict[type, str] = {
    Decision: DECISIONS,
    DecisionInput: DECISION_INPUTS,
    LearnedExamples: MODEL_EXAMPLES,
}


def _records(out: Path | None, topic: str, unsigned: Counter[str]) -> Iterator[bytes]:
    """The messages of a topic: an embedded run's file in `out`, or (None) the topic on
    Kafka, those its deployment's flow signed (the others counted in `unsigned`)."""
    if out is None:
        settings = KafkaSettings.from_env()
        check_connection(settings)  # a refused login is one line at once, not after 30 s
        signature = RecordSignature(deployment_secret(required=True))
        for _key, value in read_topic(settings, topic, signed=(signature, unsigned)):
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


def _by_id(
    records: Iterator[bytes],
    wanted: set[str] | None,
    kind: type[Recorded],
    unreadable: Counter[str],
) -> dict[str, list[Recorded]]:
    """Each decision's records (a resumed run may repeat one), of those wanted, last first.
    A record that is not one is counted in `unreadable` (by topic) and skipped."""
    # The id is the first field of both records: skip the others without decoding them.
    prefixes = None if wanted is None else tuple(f'{{"decision_id":"{w}"'.encode() for w in wanted)
    found: dict[str, list[Recorded]] = {}
    for raw in records:
        if prefixes is not None and not raw.startswith(prefixes):
            continue
        record = _decoded(raw, kind, unreadable)
        if record is not None:
            found.setdefault(record.decision_id, []).insert(0, record)
    return found


_T = TypeVar("_T", DecisionInput, Decision, LearnedExamples)


def _decoded(raw: bytes, kind: type[_T], unreadable: Counter[str]) -> _T | None:
    """One record of a topic, or None (counted) when it is not one: a topic is written
    by whoever may write to it, and one stray record does not stop a re-run."""
    try:
        record: _T = _DECODERS[kind].decode(raw)
    except (msgspec.DecodeError, RecursionError):
        unreadable[_TOPIC_OF[kind]] += 1
        return None
    return record


def _opened(copies: list[DecisionInput], vault: VaultReader) -> tuple[DecisionInput, DecisionBasis]:
    """The newest copy of a decision's input that the customer's key opens (a copy
    sealed before a crash, under a key the resumed run made again, does not)."""
    secret = vault.secret(copies[0].customer)
    for recorded in copies[:-1]:
        with contextlib.suppress(RerunError):
            return recorded, open_basis(recorded, secret)
    return copies[-1], open_basis(copies[-1], secret)


def _vault(out: Path | None) -> VaultReader:
    """The key vault of an embedded run's folder, or (None) the service's."""
    if out is not None:
        return VaultReader(out / KEY_VAULT)
    directory = KafkaSettings.from_env().key_vault
    if directory is None:
        raise RerunError(
            "WAYFINDER_KEY_VAULT is not set: decision inputs are sealed under each "
            "customer's key; point it at the key vault of the flow that made them"
        )
    return VaultReader(directory)


def _examples(records: Iterator[bytes], unreadable: Counter[str]) -> Iterator[LearnedExamples]:
    for raw in records:
        batch = _decoded(raw, LearnedExamples, unreadable)
        if batch is not None:
            yield batch


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
    #: Decisions of customers erased since: their inputs can no longer be read.
    erased: int = 0
    #: Records skipped, by topic, that were not records of that topic.
    unreadable: dict[str, int] = field(default_factory=dict)
    #: Records skipped, by topic, that the deployment's flow did not sign (on Kafka).
    unsigned: dict[str, int] = field(default_factory=dict)
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
    unreadable: Counter[str] = Counter()
    unsigned: Counter[str] = Counter()
    inputs = _by_id(
        _records(out, DECISION_INPUTS, unsigned), decision_ids, DecisionInput, unreadable
    )
    made = _by_id(_records(out, DECISIONS, unsigned), decision_ids, Decision, unreadable)
    decisions = {decision_id: copies[0] for decision_id, copies in made.items()}
    log = _examples(_records(out, MODEL_EXAMPLES, unsigned), unreadable)
    engine = Rerun(playbook, histories(playbook, log), state_key)
    report = RerunReport(missing=sorted((decision_ids or set()) - inputs.keys()))
    newest_versions = engine.latest()
    if latest:
        report.latest_version = " ".join(f"{n}@{v}" for n, v in newest_versions.items())
        report.changed_by_latest = 0
    vault = _vault(out)
    try:
        for copies in sorted(inputs.values(), key=lambda c: _version_order(c[0])):
            original = decisions.get(copies[0].decision_id)
            if original is None:
                report.missing.append(copies[0].decision_id)
                continue
            try:
                recorded, basis = _opened(copies, vault)
            except RerunError:
                if decision_ids is not None:
                    raise  # asked for by id: say why it cannot be re-run
                report.erased += 1
                continue
            again = engine.decide(recorded, basis)
            newest = engine.decide(recorded, basis, newest_versions) if latest else None
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
    finally:
        vault.close()
    report.unreadable = dict(unreadable)  # (the log is read as the models are rebuilt)
    report.unsigned = dict(unsigned)
    report.seconds = round(time.perf_counter() - started, 2)
    return report
