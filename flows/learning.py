"""The learner step: each online model is bytewax state, recovered with the input.

Examples from the customer step are keyed by model; the logic of a key owns that
model, learns every example once (in a deterministic order within a batch) and
is snapshotted with the input offsets, so after a crash the model resumes
exactly where the input resumes: nothing learned twice, nothing lost. The
customer step reads the same model object (this process's ModelSet) to predict.
"""

import pickle
from collections.abc import Iterable

from bytewax.operators import StatefulBatchLogic

from flows import metrics
from operators.models import Example, ModelSet


def examples(item: tuple[str, object]) -> list[tuple[str, Example]]:
    """Customer-step outputs that are examples, keyed by the model that learns them."""
    _key, value = item
    if type(value) is Example:
        return [(value.model, value)]
    return []


class ModelLogic(StatefulBatchLogic[Example, object, bytes]):
    """One model: learns its examples, snapshots itself, and serves the customer step."""

    def __init__(self, models: ModelSet, resume_state: bytes | None) -> None:
        self._models = models
        self._name: str | None = None
        if resume_state is not None:
            name, model = pickle.loads(resume_state)
            self._name = name
            models.models[name] = model  # predictions resume with the recovered model

    def on_batch(self, values: list[Example]) -> tuple[Iterable[object], bool]:
        models = self._models
        for example in sorted(values, key=lambda e: (e.at, e.example_id)):
            models.learn(example)
        name = values[0].model
        self._name = name
        record = models.models[name].record
        metrics.MODEL_EXAMPLES.labels(name).set(record.learned)
        metrics.MODEL_ACCURACY.labels(name).set(record.accuracy)
        metrics.MODEL_LOSS.labels(name).set(record.loss)
        metrics.MODEL_DRIFTS.labels(name).set(record.drifts)
        return (), False

    def snapshot(self) -> bytes:
        assert self._name is not None
        return pickle.dumps((self._name, self._models.models[self._name]))
