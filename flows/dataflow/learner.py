"""The learner step: each online model is bytewax state, recovered with the input.

Examples from the customer step are keyed by model; the logic of a key owns that
model, learns every example once (in a deterministic order within a batch) and
is snapshotted with the input offsets, so after a crash the model resumes
exactly where the input resumes: nothing learned twice, nothing lost. The
customer step reads the same model object (this process's ModelSet) to predict;
the set's lock keeps a learner batch from landing in the middle of a customer's
(so a decision's recorded model version is the one it asked). Every example
learned is published, numbered, so any version can be rebuilt (`models.examples`).
"""

import pickle
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from flows.dataflow.rounds import Rounds
from flows.runtime import metrics
from operators.models import ModelSet
from schemas.learning import Example, LearnedExamples


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
        ordered = sorted(values, key=lambda e: (e.at, e.example_id))
        first = model.record.learned + 1
        with models.lock:
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
        with self._models.lock:
            model = self._models.models[self._name]
            return pickle.dumps((self._name, model, self._waiting, self._unpublished))


#: How soon a learner waiting for its round to end looks again.
_RECHECK = timedelta(milliseconds=1)
