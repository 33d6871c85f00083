"""The learner step: every example numbered once, in one order per model.

Examples from the customer step are keyed by model, so one logic (one worker of one
process) owns each model's numbering, snapshotted with the input offsets. Every
example is published, numbered, to `models.examples`: a model's version `name@N` is
the model that learned the first N, so any version can be rebuilt (`wayfinder rerun`).

- Embedded (`ModelLogic`): the step also learns each example into the run's models,
  which it snapshots; the run's rounds make the models every decision asks the same on
  any number of workers.
- On Kafka (`NumberingLogic`): the example log is the truth. The step numbers and
  publishes, and hands its batches to this process's replica at once; every other
  process learns them from the log into its own (`flows.dataflow.replica`), so every
  process decides with models that learned every example, wherever it arose. After a
  crash, what the replayed input emits again and the log already holds is not
  published twice (`ExampleLog`).

A learner batch and a customer's batch never overlap on the models they share: the
set's readers–writer lock (many customer steps read at once, one batch is learned at
a time), so a decision's recorded version is the one it asked.
"""

import logging
import pickle
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bytewax.operators import StatefulBatchLogic

from flows.runtime import metrics
from operators.models import ModelSet
from schemas.learning import Example, LearnedExamples

logger = logging.getLogger(__name__)


def examples(batch: Sequence[tuple[str, object]]) -> list[tuple[str, Example]]:
    """A batch of customer-step outputs: the examples, keyed by the model that learns
    them (a batch at a time: one call, not one an output)."""
    return [(value.model, value) for _key, value in batch if type(value) is Example]


#: The learner step's name (its snapshots are found by it in a recovery folder).
LEARNER = "learn"

#: Examples per published message (a message stays well under Kafka's 1 MB default).
PUBLISHED_PER_MESSAGE = 256


class LearningRounds(Protocol):
    """A run in rounds, as its learners see it (`Rounds`, or a Kafka replay's ledger)."""

    def arrived(self, n: int) -> None:
        """`n` examples reached their learner."""

    def learned(self, n: int) -> None:
        """`n` examples were learned (on Kafka: numbered and given to the replica)."""

    def may_learn(self) -> bool:
        """Nothing of the round in hand decides any more."""


class _PacedLearner(StatefulBatchLogic[Example, LearnedExamples, bytes]):
    """What both learners share. With `rounds`, the examples of a round wait until the
    round has finished deciding, and are then learned all at once in order of (time,
    id): the models every decision asks are the same on any number of workers. What a
    resumed learner learned of the examples that waited in its snapshot is published
    with its next output."""

    def __init__(self, rounds: LearningRounds | None) -> None:
        self._rounds = rounds
        self._name: str | None = None
        self._waiting: list[Example] = []
        #: Learned, not yet published (examples that waited in a snapshot).
        self._unpublished: list[LearnedExamples] = []

    def _learn(self, values: list[Example]) -> list[LearnedExamples]:
        """Learn these examples (of one model, not empty); the messages to publish."""
        raise NotImplementedError

    def on_batch(self, values: list[Example]) -> tuple[Iterable[LearnedExamples], bool]:
        self._name = values[0].model
        rounds = self._rounds
        if rounds is None:
            return self._publish(self._learn(values)), False
        rounds.arrived(len(values))
        self._waiting.extend(values)
        return self.on_notify()

    def on_notify(self) -> tuple[Iterable[LearnedExamples], bool]:
        rounds = self._rounds
        if rounds is not None and rounds.may_learn():
            return self._publish(self._learn_waiting()), False
        return self._publish([]), False

    def on_eof(self) -> tuple[Iterable[LearnedExamples], bool]:
        return self._publish(self._learn_waiting()), False

    def notify_at(self) -> datetime | None:
        if self._unpublished or (self._waiting and self._rounds is not None):
            return datetime.now(UTC) + _RECHECK  # the round is still deciding
        return None

    def _learn_waiting(self) -> list[LearnedExamples]:
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return []
        learned = self._learn(waiting)
        if self._rounds is not None:
            self._rounds.learned(len(waiting))
        return learned

    def _publish(self, published: list[LearnedExamples]) -> list[LearnedExamples]:
        if self._unpublished:
            published, self._unpublished = [*self._unpublished, *published], []
        return published


class ModelLogic(_PacedLearner):
    """One model: learns its examples, snapshots itself, and serves the customer step.

    With `rounds` (an embedded run), a round's examples wait for it to finish deciding
    (`_PacedLearner`). Examples waiting are part of the snapshot.
    """

    def __init__(
        self, models: ModelSet, resume_state: bytes | None, rounds: LearningRounds | None = None
    ) -> None:
        super().__init__(rounds)
        self._models = models
        if resume_state is not None:
            name, model, waiting, unpublished = pickle.loads(resume_state)
            self._name = name
            with models.lock.write():  # (other workers may be deciding already)
                models.models[name] = model  # predictions resume with the recovered model
            # A snapshot falls between rounds: what waited then is learned before the
            # first round of this run, as it would have been without the crash.
            self._unpublished = [*unpublished, *self._learn(waiting)]

    def _learn(self, values: list[Example]) -> list[LearnedExamples]:
        """Learn the examples in order of (time, id); the numbered messages to publish."""
        if not values:
            return []
        models = self._models
        name = values[0].model
        model = models.models[name]
        ordered = sorted(values, key=_order)
        first = model.record.learned + 1
        with models.lock.write():
            for example in ordered:
                model.learn(example)
        n = PUBLISHED_PER_MESSAGE
        published = [
            LearnedExamples(first + i, ordered[i : i + n]) for i in range(0, len(ordered), n)
        ]
        record = model.record
        metrics.MODEL_EXAMPLES.labels(name).set(record.learned)
        metrics.MODEL_ACCURACY.labels(name).set(record.accuracy)
        metrics.MODEL_LOSS.labels(name).set(record.loss)
        metrics.MODEL_DRIFTS.labels(name).set(record.drifts)
        return published

    def snapshot(self) -> bytes:
        assert self._name is not None
        with self._models.lock.read():
            model = self._models.models[self._name]
            return pickle.dumps((self._name, model, self._waiting, self._unpublished))


#: How soon a learner waiting for its round to end looks again.
_RECHECK = timedelta(milliseconds=1)


class ExampleLog(Protocol):
    """The `models.examples` topic as a learner sees it, and this process's replica."""

    def published_after(self, model: str, count: int) -> dict[int, str]:
        """{number: example id} of `model`'s examples in the log numbered after `count`."""

    def learned_here(self, model: str, batches: list[LearnedExamples], ceiling: int | None) -> None:
        """Batches this process numbered: into its replica at once, in number order (the
        follower skips them when they come round the log); `ceiling`: the last number
        of `model` the replica may apply (None: any)."""

    def versions(self) -> dict[str, int]:
        """{model: examples applied} in this process's replica now."""

    def holds(self, model: str) -> bool:
        """Whether this process's replica holds `model` back at a ceiling."""


class NumberingLogic(_PacedLearner):
    """One model on Kafka: numbers its examples, publishes them, and gives them to this
    process's replica.

    When it starts, with a snapshot or without, it reads what the log holds of its
    model after its count: a run resumed from snapshots (or started again without
    them) replays input whose examples were published after that point, and those
    are not published twice. The ids found are dropped as they come again (kept in
    the snapshot until they do); numbering continues after the log's last number, and
    a number the log lacks below it (a message lost with the crash) is given first
    to the next examples, so the log has no gap a replica would wait at for ever.

    A resumed process's replica holds back what the log holds after the snapshot
    (`resume_ceilings`): each such example is released to it when the replay brings
    it again, where the run before the crash had learned it, so the decisions made
    again are made with the models they were made with, and are sent again the same.
    Once the replay numbers an example the log did not hold, it has gone past the
    crash: whatever was not brought again is released at once.

    With `rounds` (a replay on one process), a round's examples wait for it to finish
    deciding, as an embedded run's do (`_PacedLearner`), and are then numbered at once.
    """

    def __init__(
        self, log: ExampleLog, resume_state: bytes | None, rounds: LearningRounds | None = None
    ) -> None:
        super().__init__(rounds)
        self._log = log
        #: The last number given (published, or in a message on its way).
        self._count = 0
        #: Examples the log holds after the count the logic started from, not seen again
        #: yet: {example id: their numbers}.
        self._unseen: dict[str, list[int]] = {}
        #: Numbers this process's replica holds back until the replay brings them again.
        self._awaited: set[int] = set()
        #: Numbers the log lacks below its last one, filled first.
        self._holes: list[int] = []
        #: Whether the log's tail has been read (once a run, on the first batch).
        self._read = False
        if resume_state is not None:
            loaded = pickle.loads(resume_state)
            state = _numbering_state(loaded)
            self._name, self._count, self._unseen, self._holes, awaited, _ = state
            self._awaited = set(awaited)
            # A snapshot falls between rounds: what waited then is numbered (and given
            # to the replica) before the first round of this run, as it would have been
            # without the crash; published with the next batch.
            if len(loaded) == 7 and loaded[6]:
                self._unpublished = self._learn(list(loaded[6]))

    def _learn(self, values: list[Example]) -> list[LearnedExamples]:
        """Number examples (not those the log already holds), in order of (time, id),
        and give them to this process's replica."""
        name = values[0].model
        if not self._read:
            self._read_tail(name)
        unseen = self._unseen
        if unseen:
            fresh = []
            for example in values:
                numbers = unseen.get(example.example_id)
                if numbers is None:
                    fresh.append(example)
                    continue
                self._awaited.discard(numbers.pop(0))  # published before the crash
                if not numbers:
                    del unseen[example.example_id]
            values = fresh
        batches = self._number(sorted(values, key=_order))
        # This process decides with them at once, not when they come round the log: on
        # one process what each decision asked is then the same every run.
        self._log.learned_here(name, batches, self._ceiling())
        return batches

    def _read_tail(self, name: str) -> None:
        self._name = name
        self._read = True
        tail = self._log.published_after(name, self._count)
        if not tail:
            return
        for number in sorted(tail):
            self._unseen.setdefault(tail[number], []).append(number)
        if self._log.holds(name):  # a resumed process: the tail waits for the replay
            self._awaited.update(tail)
        last = max(tail)
        holes = [n for n in range(self._count + 1, last) if n not in tail]
        self._holes = sorted({*self._holes, *holes})
        logger.info(
            "%s examples: %d already in the log after example %d (not published again), "
            "numbering goes on after %d%s",
            name,
            len(tail),
            self._count,
            last,
            f"; {len(holes)} missing numbers filled first" if holes else "",
        )
        self._count = max(self._count, last)

    def _number(self, ordered: list[Example]) -> list[LearnedExamples]:
        if not ordered:
            return []
        holes = self._holes
        numbered: list[tuple[int, Example]] = []
        for example in ordered:
            if holes:
                numbered.append((holes.pop(0), example))
            else:
                self._count += 1
                numbered.append((self._count, example))
                self._awaited.clear()  # past the crash: nothing more is brought again
        metrics.MODEL_PUBLISHED.labels(ordered[0].model).set(self._count)
        return _in_messages(numbered)

    def _ceiling(self) -> int | None:
        """The last number this process's replica may have applied (None: any)."""
        return min(self._awaited) - 1 if self._awaited else None

    def snapshot(self) -> bytes:
        assert self._name is not None
        awaited = sorted(self._awaited)
        versions = self._log.versions()  # what the replica had of every model then
        state = (self._name, self._count, self._unseen, self._holes, awaited, versions)
        return pickle.dumps((*state, self._waiting) if self._waiting else state)


NumberingState = tuple[str, int, dict[str, list[int]], list[int], list[int], dict[str, int]]


def _numbering_state(state: tuple[Any, ...]) -> NumberingState:
    """A learner snapshot (unpickled) as (name, count, unseen, holes, awaited, the
    replica's versions), whichever release wrote it."""
    if len(state) in (6, 7):  # (7: with the examples that waited for their round)
        name, count, unseen, holes, awaited, versions = state[:6]
        return name, count, unseen, holes, awaited, versions
    if len(state) == 4 and not isinstance(state[1], int):
        # A ModelLogic snapshot (before the example log was the truth): its count.
        return state[0], state[1].record.learned, {}, [], [], {}
    name, count, known, holes = state  # ids by how often, before numbers were kept
    return name, count, {i: [0] * n for i, n in known.items()}, holes, [], {}


def resume_ceilings(snapshots: Iterable[object]) -> dict[str, int]:
    """{model: the last example number this process's replica may apply before the
    replay brings more}, for a process that resumes from these learner snapshots
    (`flows.runtime.recovery_store.resumed_snapshots`): a model's own snapshot says
    where its learner was; a model without one had not changed since the run before
    started, as the other learners' snapshots saw it."""
    own: dict[str, int] = {}
    seen: dict[str, int] = {}
    for snapshot in snapshots:
        if not isinstance(snapshot, bytes):
            continue
        name, count, _unseen, _holes, awaited, versions = _numbering_state(pickle.loads(snapshot))
        own[name] = min(awaited) - 1 if awaited else count
        for model, version in versions.items():
            seen[model] = max(seen.get(model, 0), version)
    return {**seen, **own}


def learner(
    models: ModelSet, rounds: LearningRounds | None, log: ExampleLog | None
) -> Callable[[bytes | None], StatefulBatchLogic[Example, LearnedExamples, bytes]]:
    """The learner step's logic: learning into `models` (embedded), or, with the example
    `log` (Kafka), numbering only, for every process's replica to learn from; with
    `rounds`, a round's examples wait until it has finished deciding."""
    if log is None:
        return lambda resume: ModelLogic(models, resume, rounds)
    return lambda resume: NumberingLogic(log, resume, rounds)


def _order(example: Example) -> tuple[float, str]:
    """The order a batch is learned in: by time, then id (the same on any worker)."""
    return (example.at, example.example_id)


def _in_messages(numbered: list[tuple[int, Example]]) -> list[LearnedExamples]:
    """Numbered examples as messages: runs of consecutive numbers, each of at most
    PUBLISHED_PER_MESSAGE examples."""
    messages: list[LearnedExamples] = []
    run: list[Example] = []
    first = last = 0
    for number, example in numbered:
        if run and (number != last + 1 or len(run) == PUBLISHED_PER_MESSAGE):
            messages.append(LearnedExamples(first, run))
            run = []
        if not run:
            first = number
        run.append(example)
        last = number
    if run:
        messages.append(LearnedExamples(first, run))
    return messages
