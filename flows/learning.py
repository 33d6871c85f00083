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

from bytewax.operators import StatefulBatchLogic

from flows import metrics
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
    """One model: learns its examples, snapshots itself, and serves the customer step."""

    def __init__(self, models: ModelSet, resume_state: bytes | None) -> None:
        self._models = models
        self._name: str | None = None
        if resume_state is not None:
            name, model = pickle.loads(resume_state)
            self._name = name
            models.models[name] = model  # predictions resume with the recovered model

    def on_batch(self, values: list[Example]) -> tuple[Iterable[LearnedExamples], bool]:
        models = self._models
        name = values[0].model
        self._name = name
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
        return published, False

    def snapshot(self) -> bytes:
        assert self._name is not None
        with self._models.lock:
            return pickle.dumps((self._name, self._models.models[self._name]))
