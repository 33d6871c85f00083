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
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bytewax.operators import StatefulBatchLogic

from flows.dataflow.rounds import Rounds
from flows.runtime import metrics
from operators.models import ModelSet
from schemas.learning import Example, LearnedExamples

logger = logging.getLogger(__name__)


def examples(item: tuple[str, object]) -> list[tuple[str, Example]]:
    """Customer-step outputs that are examples, keyed by the model that learns them."""
    _key, value = item
    if type(value) is Example:
        return [(value.model, value)]
    return []


#: Examples per published message (a message stays well under Kafka's 1 MB default).
PUBLISHED_PER_MESSAGE = 256


class ModelLogic(StatefulBatchLogic[Example, LearnedExamples, bytes]):
    """One model: learns its examples, snapshots itself, and serves the customer step.

    With `rounds` (an embedded run), the examples of a round wait until
    the round has finished deciding, and are then learned all at once in order of
    (time, id): the models every decision asks are the same on any number of
    workers. Examples waiting are part of the snapshot.
    """

    def __init__(
        self, models: ModelSet, resume_state: bytes | None, rounds: Rounds | None = None
    ) -> None:
        self._models = models
        self._rounds = rounds
        self._name: str | None = None
        self._waiting: list[Example] = []
        #: Learned, not yet published (examples that waited in a snapshot).
        self._unpublished: list[LearnedExamples] = []
        if resume_state is not None:
            name, model, waiting, unpublished = pickle.loads(resume_state)
            self._name = name
            models.models[name] = model  # predictions resume with the recovered model
            # A snapshot falls between rounds: what waited then is learned before the
            # first round of this run, as it would have been without the crash.
            self._unpublished = [*unpublished, *self._learn(waiting)]

    def on_batch(self, values: list[Example]) -> tuple[Iterable[LearnedExamples], bool]:
        self._name = values[0].model
        rounds = self._rounds
        if rounds is None:
            return self._publish(self._learn(values)), False
        rounds.arrived(len(values))
        self._waiting.extend(values)
        if rounds.may_learn():
            return self._learn_waiting(), False
        return self._publish([]), False

    def on_notify(self) -> tuple[Iterable[LearnedExamples], bool]:
        rounds = self._rounds
        if rounds is not None and rounds.may_learn():
            return self._learn_waiting(), False
        return self._publish([]), False

    def on_eof(self) -> tuple[Iterable[LearnedExamples], bool]:
        return self._learn_waiting(), False

    def notify_at(self) -> datetime | None:
        if self._unpublished or (self._waiting and self._rounds is not None):
            return datetime.now(UTC) + _RECHECK  # the round is still deciding
        return None

    def _learn_waiting(self) -> list[LearnedExamples]:
        waiting, self._waiting = self._waiting, []
        published = self._learn(waiting)
        if self._rounds is not None:
            self._rounds.learned(len(waiting))
        return self._publish(published)

    def _publish(self, published: list[LearnedExamples]) -> list[LearnedExamples]:
        if self._unpublished:
            published, self._unpublished = [*self._unpublished, *published], []
        return published

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

    def learned_here(self, batches: list[LearnedExamples]) -> None:
        """Batches this process numbered: into its replica at once, in number order (the
        follower skips them when they come round the log)."""


class NumberingLogic(StatefulBatchLogic[Example, LearnedExamples, bytes]):
    """One model on Kafka: numbers its examples, publishes them, and gives them to this
    process's replica.

    When it starts, with a snapshot or without, it reads what the log holds of its
    model after its count: a run resumed from snapshots (or started again without
    them) replays input whose examples were published after that point, and those
    are not published twice. The ids found are dropped as they come again (kept in
    the snapshot until they do); numbering continues after the log's last number, and
    a number the log lacks below it (a message lost with the crash) is given first
    to the next examples, so the log has no gap a replica would wait at for ever.
    """

    def __init__(self, log: ExampleLog, resume_state: bytes | None) -> None:
        self._log = log
        self._name: str | None = None
        #: The last number given (published, or in a message on its way).
        self._count = 0
        #: Ids the log holds after the count the logic started from, not seen again yet.
        self._known: Counter[str] = Counter()
        #: Numbers the log lacks below its last one, filled first.
        self._holes: list[int] = []
        #: Whether the log's tail has been read (once a run, on the first batch).
        self._read = False
        if resume_state is not None:
            state = pickle.loads(resume_state)
            if len(state) == 4 and not isinstance(state[1], int):
                # A ModelLogic snapshot (before the example log was the truth): its count.
                self._name, self._count = state[0], state[1].record.learned
            else:
                self._name, self._count, known, self._holes = state
                self._known = Counter(known)

    def on_batch(self, values: list[Example]) -> tuple[Iterable[LearnedExamples], bool]:
        if not self._read:
            self._read_tail(values[0].model)
        known = self._known
        if known:
            fresh = []
            for example in values:
                times = known.get(example.example_id)
                if times is None:
                    fresh.append(example)
                elif times > 1:
                    known[example.example_id] = times - 1
                else:
                    del known[example.example_id]  # published before the crash
            values = fresh
        return self._number(sorted(values, key=_order)), False

    def _read_tail(self, name: str) -> None:
        self._name = name
        self._read = True
        tail = self._log.published_after(name, self._count)
        if not tail:
            return
        self._known.update(tail.values())
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
        metrics.MODEL_PUBLISHED.labels(ordered[0].model).set(self._count)
        batches = _in_messages(numbered)
        # This process decides with them at once, not when they come round the log: on
        # one process what each decision asked is then the same every run.
        self._log.learned_here(batches)
        return batches

    def snapshot(self) -> bytes:
        assert self._name is not None
        return pickle.dumps((self._name, self._count, dict(self._known), self._holes))


def learner(
    models: ModelSet, rounds: Rounds | None, log: ExampleLog | None
) -> Callable[[bytes | None], StatefulBatchLogic[Example, LearnedExamples, bytes]]:
    """The learner step's logic: learning into `models` (embedded), or, with the example
    `log` (Kafka), numbering only, for every process's replica to learn from."""
    if log is None:
        return lambda resume: ModelLogic(models, resume, rounds)
    return lambda resume: NumberingLogic(log, resume)


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
