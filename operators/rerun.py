"""Re-running a recorded decision with the model versions it was made with.

A decision records its input (`DecisionInput`: the trigger and the customer's context
as the decision saw it, sealed under the customer's key, and the playbook and model
versions), and the learner publishes every
example it learns, numbered (`LearnedExamples`). A model's version `name@N` is the model
that learned the first N; river models are deterministic, so learning those N again
from a fresh model rebuilds it exactly, and deciding again on the recorded input gives
the recorded decision. The same input with other versions (the newest, say) shows what
those models would have decided instead.
"""

import pickle
from collections.abc import Callable, Iterable

import msgspec

from operators.basis_packing import unpack
from operators.decide import DecisionMaker
from operators.models import ModelSet, OnlineModel
from operators.playbook import CompiledPlaybook
from operators.sealing import Unreadable, unseal
from schemas.decision import Candidate, Decision, DecisionBasis, DecisionInput
from schemas.learning import Example, LearnedExamples
from state.context import from_snapshot

#: Versions are rebuilt forwards; a checkpoint every so many examples makes going back cheap.
CHECKPOINT_EVERY = 5000


class RerunError(Exception):
    """A decision cannot be re-run as asked (a version not in the log, another playbook,
    a customer erased)."""


_BASIS = msgspec.msgpack.Decoder(DecisionBasis)


def open_basis(recorded: DecisionInput, secret: bytes | None) -> DecisionBasis:
    """What the decision was made from, unsealed with the customer's key (None: the
    key is gone, so the customer was erased)."""
    erased = RerunError(
        f"decision {recorded.decision_id}: its customer was erased (their key is destroyed, "
        "so what it was made from can no longer be read)"
    )
    if secret is None:
        raise erased
    try:
        return _BASIS.decode(unpack(unseal(secret, recorded.decision_id.encode(), recorded.basis)))
    except Unreadable:
        raise erased from None


def parse_version(text: str | None) -> dict[str, int]:
    """`"intent@12 propensity@3"` -> {"intent": 12, "propensity": 3}; None: no models."""
    versions: dict[str, int] = {}
    for part in (text or "").split():
        name, _, count = part.partition("@")
        if not name or not count.isdigit():
            raise RerunError(f"model version {text!r}: {part!r} is not name@count")
        versions[name] = int(count)
    return versions


class ModelHistory:
    """One model's examples in the order it learned them, and the model at any version."""

    def __init__(self, fresh: OnlineModel, examples: list[Example]) -> None:
        self.examples = examples
        self._model = fresh
        self._checkpoints: dict[int, bytes] = {0: pickle.dumps(fresh)}
        #: The newest version, kept apart: comparing with it must not rewind the other.
        self._newest: OnlineModel | None = None

    @property
    def latest(self) -> int:
        return len(self.examples)

    def at(self, version: int) -> OnlineModel:
        """The model as it was after learning `version` examples (shared: ask, don't keep)."""
        if version > self.latest:
            raise RerunError(
                f"{self._model.name}@{version} is not in the example log "
                f"(it holds {self.latest} examples)"
            )
        if version == self.latest and self._model.record.learned != version:
            if self._newest is None:
                self._newest = self._learn_up_to(self._restore(version), version)
            return self._newest
        model = self._model
        if version < model.record.learned:
            model = self._restore(version)
        self._model = self._learn_up_to(model, version)
        return self._model

    def _restore(self, version: int) -> OnlineModel:
        """A copy of the model at the last checkpoint at or before `version`."""
        start = max(n for n in self._checkpoints if n <= version)
        model: OnlineModel = pickle.loads(self._checkpoints[start])
        return model

    def _learn_up_to(self, model: OnlineModel, version: int) -> OnlineModel:
        examples = self.examples
        while model.record.learned < version:
            model.learn(examples[model.record.learned])
            if model.record.learned % CHECKPOINT_EVERY == 0:
                self._checkpoints[model.record.learned] = pickle.dumps(model)
        return model


def histories(
    playbook: CompiledPlaybook, learned: Iterable[LearnedExamples]
) -> dict[str, ModelHistory]:
    """Each model's history from its published examples. A resumed run may publish an
    example number again; the later one is what the model went on from, so it wins."""
    by_model: dict[str, dict[int, Example]] = {}
    for run in learned:
        if not run.examples:
            continue
        numbered = by_model.setdefault(run.examples[0].model, {})
        for seq, example in enumerate(run.examples, start=run.first):
            numbered[seq] = example
    found: dict[str, ModelHistory] = {}
    for name, fresh in ModelSet(playbook).models.items():
        numbered = by_model.get(name, {})
        missing = next((n for n in range(1, len(numbered) + 1) if n not in numbered), None)
        if missing is not None:
            raise RerunError(f"the example log of {name} has a gap: example {missing} is missing")
        found[name] = ModelHistory(fresh, [numbered[n] for n in range(1, len(numbered) + 1)])
    return found


class Rerun:
    """Decides again on recorded inputs, with the models rebuilt to chosen versions."""

    def __init__(
        self,
        playbook: CompiledPlaybook,
        models: dict[str, ModelHistory],
        pseudonym_of: Callable[[str], str],
    ) -> None:
        """`pseudonym_of`: the one the decisions were made with (`CustomerStep`), which
        names what an action's content names by token."""
        self.playbook = playbook
        self.models = models
        #: The models a re-run asks: each decision puts in the versions it names.
        self._asked = asked = ModelSet(playbook)
        self._with_models = DecisionMaker(
            playbook,
            propensity=asked.propensity,
            next_step=asked.next_step,
            intent=asked.intent,
            model_version=asked.version,
            pseudonym_of=pseudonym_of,
        )
        self._rules_only = DecisionMaker(playbook, pseudonym_of=pseudonym_of)

    def latest(self) -> dict[str, int]:
        """The newest version of every model in the log."""
        return {name: history.latest for name, history in self.models.items()}

    def decide(
        self,
        recorded: DecisionInput,
        basis: DecisionBasis,
        versions: dict[str, int] | None = None,
    ) -> Decision:
        """The decision made again on `recorded` (its `basis` unsealed), with the models
        at `versions` (by default the ones it was made with)."""
        if recorded.playbook_version != self.playbook.version:
            raise RerunError(
                f"decision {recorded.decision_id} was made with playbook version "
                f"{recorded.playbook_version}; this playbook is version {self.playbook.version}"
            )
        if versions is None:
            versions = parse_version(recorded.model_version)
        for name, version in versions.items():
            history = self.models.get(name)
            if history is None:
                raise RerunError(f"no example log for model {name}")
            self._asked.models[name] = history.at(version)
        maker = self._with_models if versions else self._rules_only
        _action, decision, _basis = maker.decide(from_snapshot(basis.context), basis.trigger)
        if decision is None:  # a recorded decision had candidates; so has its input
            raise RerunError(f"decision {recorded.decision_id}: no candidate on re-run")
        return decision


def differences(before: Decision, after: Decision) -> list[str]:
    """What changed between two decisions on the same input, in words (not counting the
    model versions they were made with)."""
    changes: list[str] = []
    if before.outcome != after.outcome or before.action_id != after.action_id:
        changes.append(f"outcome {_outcome(before)} -> {_outcome(after)}")
    was = {c.action: c for c in before.candidates}
    now = {c.action: c for c in after.candidates}
    for name in sorted(was.keys() | now.keys()):
        a, b = was.get(name), now.get(name)
        if a is None or b is None:
            changes.append(
                f"{name}: {'not a candidate' if a is None else _candidate(a)} -> "
                f"{'not a candidate' if b is None else _candidate(b)}"
            )
        elif (a.status, a.score, a.channel) != (b.status, b.score, b.channel):
            changes.append(f"{name}: {_candidate(a)} -> {_candidate(b)}")
        elif a.reasons != b.reasons:
            changes.append(f"{name}: {_candidate(a)}, {_reason_change(a.reasons, b.reasons)}")
    same_models = msgspec.structs.replace(after, model_version=before.model_version)
    if not changes and before != same_models:
        changes.append("the record differs outside its candidates")
    return changes


def _outcome(decision: Decision) -> str:
    sent = next((c for c in decision.candidates if c.status in ("sent", "holdout")), None)
    if sent is None:
        return decision.outcome
    return f"{decision.outcome} ({sent.action} on {sent.channel})"


def _reason_change(before: list[str], after: list[str]) -> str:
    """The first reason that reads differently (the decision itself is the same)."""
    for was, now in zip(before, after, strict=False):
        if was != now:
            return f"reason {was!r} -> {now!r}"
    if len(before) > len(after):
        return f"reason {before[len(after)]!r} dropped"
    return f"reason {after[len(before)]!r} added"


def _candidate(c: Candidate) -> str:
    where = f" on {c.channel}" if c.channel else ""
    return f"{c.status}{where}, score {c.score:g}"
