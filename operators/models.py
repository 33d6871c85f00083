"""The online models of the live flow: intent, response propensity, next step.

Each model is a pure, picklable object that learns from `Example`s and is
asked for predictions by the customer step. Every model learns prequentially:
it predicts each example before learning from it, so its accuracy and loss are
honest online figures, watched by a drift detector (river ADWIN) on its errors.
Examples carry deterministic ids; a model counts them and keeps an
order-independent digest of their ids, so a recovered run can be checked to
have learned exactly the same examples as an uninterrupted one.

river is imported where a model is made, not with this module: it brings scipy
(most of a second), and importing this module (the command line does) stays quick.
"""

import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from hashlib import blake2b
from typing import Any, NamedTuple, Protocol, TypeVar

from msgspec import Struct

from operators.intent import intent_features, probabilities
from operators.next_step import BackoffNgram
from operators.playbook import ActionSpec, CompiledPlaybook
from schemas.learning import Example
from state.context import RESPONSES, CustomerContext

INTENT, PROPENSITY, NEXT_STEP = "intent", "propensity", "next_step"

#: A change of intent is announced when the new one leads by this margin.
INTENT_MARGIN = 0.2
INTENT_CONFIDENCE = 0.4
#: Examples a model learns before its predictions are used.
WARM_UP = 30
#: The response score of an action before it has any outcome.
PRIOR_RESPONSE = 0.25


class Response(NamedTuple):
    """What a response model says of an action in a context."""

    #: The chance that the customer responds.
    expected: float
    #: What is not known yet about such a context: a bonus that gets an action tried
    #: where it has been tried little (0 where the predictor does not explore).
    exploration: float = 0.0

    @property
    def score(self) -> float:
        """The optimistic score decisions rank by (at most 1)."""
        return min(1.0, self.expected + self.exploration)


class Learning(Struct):
    """A model's online record: what it learned and how well it predicted it first.
    `learned` counts the examples numbered for it, `refused` those of them it could not
    learn (`OnlineModel.learn`)."""

    learned: int = 0
    digest: int = 0
    correct: int = 0
    loss_total: float = 0.0
    drifts: int = 0
    refused: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.learned if self.learned else 0.0

    @property
    def loss(self) -> float:
        return self.loss_total / self.learned if self.learned else 0.0


def _id_hash(example_id: str) -> int:
    return int.from_bytes(blake2b(example_id.encode(), digest_size=8).digest(), "big")


class OnlineModel:
    """Common bookkeeping: prequential score, loss, drift on errors, example digest."""

    name = ""

    def __init__(self) -> None:
        from river.drift import ADWIN  # noqa: PLC0415 (scipy: see the module docstring)

        self.record = Learning()
        self._drift = ADWIN()

    @property
    def version(self) -> str:
        return f"{self.name}@{self.record.learned}"

    def learn(self, example: Example) -> None:
        """Learn one example. One that is not of the shape this model learns (the
        example log is an input like any other: anyone who may write to it may write
        anything) is refused, its number taken all the same, so version N is still
        the log's first N, wherever it is rebuilt."""
        record = self.record
        record.learned += 1
        record.digest ^= _id_hash(example.example_id)
        if not (example.model == self.name and _well_formed(example) and self._accepts(example)):
            record.refused += 1
            return
        correct, loss = self._score(example)
        record.correct += correct
        record.loss_total += loss
        self._drift.update(0.0 if correct else 1.0)
        if self._drift.drift_detected:
            record.drifts += 1
        self._learn(example)

    def _accepts(self, example: Example) -> bool:
        """Whether the example has what this model learns from."""
        raise NotImplementedError

    def _score(self, example: Example) -> tuple[bool, float]:
        raise NotImplementedError

    def _learn(self, example: Example) -> None:
        raise NotImplementedError


#: Bounds of an example the models learn: far above what the customer step makes.
_MAX_FEATURES = 512
_MAX_NAME = 256
_MAX_FEATURE_VALUE = 1e6


def _well_formed(example: Example) -> bool:
    """Finite time, a bounded number of finite, bounded features, names and labels of
    bounded length. (Loops, not `all` over generators: most examples are next steps,
    with no features and a short path, and a generator each cost more than the checks.)"""
    features, prefix = example.features, example.prefix
    if not (
        math.isfinite(example.at)
        and 0 < len(example.label) <= _MAX_NAME
        and len(features) <= _MAX_FEATURES
        and len(prefix) <= _MAX_FEATURES
    ):
        return False
    for name, value in features.items():
        if not (len(name) <= _MAX_NAME and abs(value) <= _MAX_FEATURE_VALUE):  # NaN fails too
            return False
    for step in prefix:  # noqa: SIM110 (a loop: see the docstring)
        if not 0 < len(step) <= _MAX_NAME:
            return False
    return True


# ---------------------------------------------------------------- intent


class IntentModel(OnlineModel):
    """Multi-class online intent (river softmax regression); labels come when journeys end."""

    name = INTENT

    def __init__(self) -> None:
        from river import linear_model, optim  # noqa: PLC0415 (scipy: see the module docstring)

        super().__init__()
        self.model = linear_model.SoftmaxRegression(optimizer=optim.SGD(0.05))
        self.seen = False

    def predict(self, ctx: CustomerContext) -> dict[str, float] | None:
        """The probability of each intent, or None while warming up."""
        if self.record.learned < WARM_UP:
            return None
        return probabilities(self.model.weights, intent_features(ctx)) or None

    def _accepts(self, example: Example) -> bool:
        return True  # any well-formed features, any label (an intent)

    def _score(self, example: Example) -> tuple[bool, float]:
        if not self.seen:
            return False, math.log(2)
        scores = probabilities(self.model.weights, example.features)
        p = scores.get(example.label, 1e-9)
        best = max(scores, key=lambda k: (scores[k], k)) if scores else None
        return best == example.label, -math.log(max(p, 1e-9))

    def _learn(self, example: Example) -> None:
        self.model.learn_one(example.features, example.label)
        self.seen = True


# ---------------------------------------------------------------- propensity


def propensity_features(ctx: CustomerContext, channel: str, at: float) -> dict[str, float]:
    """The customer as an action meets them: channel, value tier, intent, segments, time
    of day, and whether they answer on this channel."""
    hour = int((at % 86400) // 3600) // 6
    x = {"bias": 1.0, f"ch={channel}": 1.0, f"tier={ctx.value_tier}": 1.0, f"hour={hour}": 1.0}
    if ctx.intent:
        x[f"intent={ctx.intent}"] = 1.0
    for segment in ctx.segments:
        x[f"seg={segment}"] = 1.0
    if channel == ctx.preferred_channel:
        x["preferred_channel"] = 1.0
    answered = sum(1 for s in ctx.actions if s.channel == channel and s.outcome in RESPONSES)
    if answered:
        x["answered_here"] = math.log1p(answered)
    return x


class _Arm:
    """One action's response model: a calibrated estimate and a measure of ignorance."""

    __slots__ = ("expected", "spread")

    def __init__(self) -> None:
        from river import linear_model, optim  # noqa: PLC0415 (scipy: see the module docstring)

        #: The chance of a response (logistic regression: a probability, well calibrated).
        self.expected = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
        #: Bayesian linear regression, for its posterior: how little is known of a context.
        self.spread = linear_model.BayesianLinearRegression()

    def __getstate__(self) -> tuple[Any, Any]:
        return self.expected, self.spread

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self.expected, self.spread = state


class PropensityModel(OnlineModel):
    """How likely the customer is to respond to an action, as a contextual bandit (LinUCB,
    disjoint: one model per action, learned from its outcomes). The score is the expected
    response plus what is not known yet about this context (the posterior's spread), so
    an action tried little in such a context is tried again, and one tried often is
    scored by what it does."""

    name = PROPENSITY

    def __init__(self) -> None:
        super().__init__()
        self.arms: dict[str, _Arm] = {}

    def predict(
        self, ctx: CustomerContext, action: ActionSpec, channel: str, at: float
    ) -> Response:
        arm = self.arms.get(action.name)
        if arm is None:
            return Response(PRIOR_RESPONSE)
        x = propensity_features(ctx, channel, at)
        expected = arm.expected.predict_proba_one(x).get(True, 0.0)
        belief = arm.spread.predict_one(x, with_dist=True)
        unknown = math.sqrt(max(belief.sigma**2 - 1.0 / arm.spread.beta, 0.0))  # not noise
        return Response(float(expected), unknown)

    @staticmethod
    def _action(example: Example) -> str:
        return example.example_id.split("|", 1)[0]

    def _accepts(self, example: Example) -> bool:
        # (The posterior cannot be updated from no features: the bias is always one.)
        return bool(example.features) and example.label in ("0", "1")

    def _score(self, example: Example) -> tuple[bool, float]:
        arm = self.arms.get(self._action(example))
        p = arm.expected.predict_proba_one(example.features).get(True, 0.0) if arm else 0.5
        responded = example.label == "1"
        q = p if responded else 1 - p
        return (p >= 0.5) == responded, -math.log(max(q, 1e-9))

    def _learn(self, example: Example) -> None:
        action = self._action(example)
        arm = self.arms.get(action)
        if arm is None:
            arm = self.arms[action] = _Arm()
        responded = example.label == "1"
        arm.expected.learn_one(example.features, responded)
        arm.spread.learn_one(example.features, 1.0 if responded else 0.0)


# ---------------------------------------------------------------- next step


class FlowNextStep(OnlineModel):
    """The next contact point from the recent path: the back-off n-gram of order <= 4 of
    `operators.next_step` (the process-mining baseline's, without its fallback), which
    keeps each suffix's leading successor as it counts, so that learning from every step
    of every customer, and predicting, cost a few dictionary lookups. Ties go to the
    larger name: the same examples in any order give the same predictions."""

    name = NEXT_STEP
    ORDER = 4

    def __init__(self) -> None:
        super().__init__()
        self.ngram = BackoffNgram(self.ORDER, fallback=False)

    def predict(self, prefix: tuple[str, ...]) -> tuple[str, float] | None:
        """(next contact point, the share of times it followed this suffix) or None."""
        return self.ngram.leader(prefix)

    def _accepts(self, example: Example) -> bool:
        return True  # any well-formed path and next step

    def _score(self, example: Example) -> tuple[bool, float]:
        predicted = self.predict(example.prefix)
        correct = predicted is not None and predicted[0] == example.label
        return correct, 0.0 if correct else 1.0

    def _learn(self, example: Example) -> None:
        self.ngram.learn(example.prefix, {}, example.label)


def recent_path(ctx: CustomerContext, limit: int = 4) -> tuple[str, ...]:
    """The customer's last contact points, oldest first."""
    return tuple(reversed(ctx.interactions.latest_touchpoints(limit)))


class Predictors(Protocol):
    """What the customer step asks of models: learned ones, or an oracle's, or none."""

    def intent(self, ctx: CustomerContext) -> dict[str, float] | None: ...

    def propensity(self, ctx: CustomerContext, action: ActionSpec, channel: str) -> Response: ...

    def next_step(self, ctx: CustomerContext) -> tuple[str, float] | None: ...

    def version(self) -> str: ...


_Model = TypeVar("_Model", bound=OnlineModel)


class ReadersWriterLock:
    """Many readers at once, or one writer (bytewax workers are threads).

    Customer steps read the models together; a writer (the learner of an embedded run,
    a process's replica following the example log) learns one batch at a time, alone.
    A waiting writer goes before readers that come after it, so a stream of customer
    batches never starves the models of their examples. Not reentrant: a reader that
    reads again while a writer waits would wait for ever.
    """

    def __init__(self) -> None:
        #: Readers come and go under the plain lock (one call in C a side); the condition
        #: on it is waited on only while a writer is in or waiting.
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._read = _Hold(self._acquire_read, self._release_read)
        self._write = _Hold(self._acquire_write, self._release_write)

    def read(self) -> AbstractContextManager[None]:
        """Held while a customer step asks the models (shared)."""
        return self._read

    def write(self) -> AbstractContextManager[None]:
        """Held while a batch is learned (exclusive)."""
        return self._write

    def _acquire_read(self) -> None:
        with self._mutex:
            if not (self._writing or self._writers_waiting):
                self._readers += 1
                return
        with self._changed:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if not self._readers and self._writers_waiting:
                self._changed.notify_all()  # (the lock held is the condition's)

    def _acquire_write(self) -> None:
        with self._changed:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._changed.wait()
            self._writers_waiting -= 1
            self._writing = True

    def _release_write(self) -> None:
        with self._changed:
            self._writing = False
            self._changed.notify_all()


class _Hold(AbstractContextManager[None]):
    """One side of a ReadersWriterLock as a `with` block (one object, any thread)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *_exc: object) -> None:
        self._release()


class ModelSet:
    """The three models, as the customer step sees them (read) and the learner feeds them."""

    def __init__(self, playbook: CompiledPlaybook) -> None:
        self.playbook = playbook
        #: Read while a customer step asks (many at once), written while a batch is
        #: learned: what a decision asked is all of one version.
        self.lock = ReadersWriterLock()
        self.models: dict[str, OnlineModel] = {
            INTENT: IntentModel(),
            PROPENSITY: PropensityModel(),
            NEXT_STEP: FlowNextStep(),
        }

    def learn(self, example: Example) -> None:
        self.models[example.model].learn(example)

    def version(self) -> str:
        return " ".join(m.version for m in self.models.values())

    def _model(self, name: str, kind: type[_Model]) -> _Model:
        # The set is keyed by name (the learner restores a model under its name).
        model = self.models[name]
        assert isinstance(model, kind)
        return model

    def intent(self, ctx: CustomerContext) -> dict[str, float] | None:
        return self._model(INTENT, IntentModel).predict(ctx)

    def propensity(self, ctx: CustomerContext, action: ActionSpec, channel: str) -> Response:
        at = ctx.last_seen
        return self._model(PROPENSITY, PropensityModel).predict(ctx, action, channel, at)

    def next_step(self, ctx: CustomerContext) -> tuple[str, float] | None:
        return self._model(NEXT_STEP, FlowNextStep).predict(recent_path(ctx))


def model_records(models: ModelSet) -> dict[str, dict[str, object]]:
    """What each model has learned, and how well: for files, reports and recovery checks."""
    return {
        name: {
            "version": model.version,
            "examples": model.record.learned,
            "example_digest": f"{model.record.digest:016x}",
            "prequential_accuracy": round(model.record.accuracy, 4),
            "loss": round(model.record.loss, 4),
            "drifts": model.record.drifts,
        }
        for name, model in models.models.items()
    }
