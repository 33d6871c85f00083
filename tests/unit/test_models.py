"""The online models: prequential records, exactly-once learning, closed-loop evaluation."""

import pickle
import random
import subprocess
import sys
from pathlib import Path

from flows.lab.evaluate import POLICIES, closed_loop
from flows.lab.simulator import SimulationConfig
from operators.customer_step import CustomerStep, Output
from operators.intent import probabilities
from operators.models import INTENT, NEXT_STEP, PROPENSITY, FlowNextStep, ModelSet
from operators.next_step import MAX_KEYS
from operators.replay import Replay
from schemas.codec import good_events
from schemas.event import Event
from schemas.journey import IntentTransition
from schemas.learning import Example
from state.context import CustomerContext
from tests.helpers import Harness, StubPredictors, default_playbook, ev, profile


def examples(n: int) -> list[Example]:
    out = []
    for i in range(n):
        out.append(Example(NEXT_STEP, f"n{i}", ["b", "c", "a"][i % 3], float(i), prefix=("a",)))
        out.append(
            Example(INTENT, f"i{i}", ["pay", "upgrade"][i % 2], float(i), {f"f{i % 2}": 1.0})
        )
        out.append(Example(PROPENSITY, f"x|{i}", str(i % 2), float(i), {"bias": 1.0}))
    return out


def test_every_model_predicts_each_example_before_learning_it():
    models = ModelSet(default_playbook())
    for example in examples(60):
        models.learn(example)
    for name in (INTENT, PROPENSITY, NEXT_STEP):
        record = models.models[name].record
        assert record.learned == 60
        assert 0 <= record.correct <= 60
    assert models.models[INTENT].record.accuracy > 0.8  # two separable intents
    assert "intent@60" in models.version()


def test_resuming_from_a_pickled_model_learns_exactly_the_same_examples():
    stream = examples(80)
    straight = ModelSet(default_playbook())
    for example in stream:
        straight.learn(example)
    first = ModelSet(default_playbook())
    for example in stream[:100]:
        first.learn(example)
    resumed = ModelSet(default_playbook())
    resumed.models = pickle.loads(pickle.dumps(first.models))  # the snapshot at the crash
    for example in stream[100:]:
        resumed.learn(example)
    for name in (INTENT, PROPENSITY, NEXT_STEP):
        a, b = straight.models[name].record, resumed.models[name].record
        assert (a.learned, a.digest, a.correct) == (b.learned, b.digest, b.correct)


def test_the_example_digest_does_not_depend_on_order():
    forward, backward = ModelSet(default_playbook()), ModelSet(default_playbook())
    stream = [e for e in examples(30) if e.model == NEXT_STEP]
    for example in stream:
        forward.learn(example)
    for example in reversed(stream):
        backward.learn(example)
    assert forward.models[NEXT_STEP].record.digest == backward.models[NEXT_STEP].record.digest


class PlainNextStep:
    """The flow's next-step model as it was before it shared `operators.next_step`'s
    back-off n-gram, written plainly: counts per suffix of up to 4 contact points, the
    longest suffix seen before answers with its most frequent successor (ties: the larger
    name) and that successor's share, no answer when no suffix is known."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], dict[str, int]] = {}

    def predict(self, prefix: tuple[str, ...]) -> tuple[str, float] | None:
        for order in range(min(4, len(prefix)), 0, -1):
            counts = self.counts.get(prefix[-order:])
            if counts:
                best = max(counts, key=lambda step: (counts[step], step))
                return best, counts[best] / sum(counts.values())
        return None

    def learn(self, prefix: tuple[str, ...], step: str) -> None:
        for order in range(1, min(4, len(prefix)) + 1):
            counts = self.counts.setdefault(prefix[-order:], {})
            counts[step] = counts.get(step, 0) + 1


def next_step_examples(n: int, seed: int = 7) -> list[Example]:
    """Paths over few contact points (many ties), prefixes of 0 to 6 of them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prefix = tuple(rng.choice("abcd") for _ in range(rng.randint(0, 6)))
        label = rng.choice("abcd") if rng.random() < 0.7 else (prefix or ("a",))[-1]
        out.append(Example(NEXT_STEP, f"n{i}", label, float(i), prefix=prefix))
    return out


def test_the_flow_next_step_model_predicts_as_the_plain_reference_does():
    model, plain = FlowNextStep(), PlainNextStep()
    stream = next_step_examples(3000)
    probes = sorted({e.prefix for e in stream})
    correct = 0
    for n, example in enumerate(stream):
        predicted = plain.predict(example.prefix)
        assert model.predict(example.prefix) == predicted  # step and share, exactly
        correct += predicted is not None and predicted[0] == example.label
        model.learn(example)
        plain.learn(example.prefix, example.label)
        if n % 500 == 0:
            assert [model.predict(p) for p in probes] == [plain.predict(p) for p in probes]
    assert model.record.correct == correct
    assert [model.predict(p) for p in probes] == [plain.predict(p) for p in probes]
    assert model.ngram.max_keys == MAX_KEYS


def test_the_flow_next_step_model_does_not_depend_on_the_order_of_its_examples():
    stream = next_step_examples(2000)
    shuffled = list(stream)
    random.Random(1).shuffle(shuffled)
    forward, other = FlowNextStep(), FlowNextStep()
    for example in stream:
        forward.learn(example)
    for example in shuffled:
        other.learn(example)
    other = pickle.loads(pickle.dumps(other))
    probes = sorted({e.prefix for e in stream})
    assert [forward.predict(p) for p in probes] == [other.predict(p) for p in probes]


def test_importing_the_models_does_not_import_river_or_scipy():
    """river brings scipy (most of a second): it comes when a model is made, so the
    command line, which imports these modules, answers quickly."""
    code = (
        "import importlib, pkgutil, sys, operators, state\n"
        "for package in (operators, state):\n"
        "    for module in pkgutil.iter_modules(package.__path__):\n"
        "        importlib.import_module(package.__name__ + '.' + module.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'river', 'numpy', 'scipy'}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_intent_probabilities_are_river_softmax_regressions_to_the_last_bit():
    """The intent model scores with `operators.intent.probabilities` (compiled) over its
    river model's weights: the same dictionary, value for value, as river's own
    `predict_proba_one`, whether the features are fewer, as many as, or more than the
    weights of a label, and before anything is learned."""
    from river import linear_model, optim  # noqa: PLC0415 (scipy: kept out of the module)

    rng = random.Random(11)
    names = [f"f{i}" for i in range(40)]
    model = linear_model.SoftmaxRegression(optimizer=optim.SGD(0.05))
    assert probabilities(model.weights, {"f0": 1.0}) == model.predict_proba_one({"f0": 1.0})

    def features(size: int) -> dict[str, float]:
        return {name: rng.uniform(-3.0, 3.0) for name in rng.sample(names, size)}

    for i in range(300):
        model.learn_one(features(rng.randint(1, 12)), ["pay", "upgrade", "support"][i % 3])
    sizes = sorted({len(w) for w in model.weights.values()})
    compared = 0
    for size in [0, 1, 5, *sizes, *(s - 1 for s in sizes), *(s + 1 for s in sizes), 40]:
        for _ in range(40):
            x = features(min(size, len(names)))
            ours, rivers = probabilities(model.weights, x), model.predict_proba_one(x)
            assert list(ours.items()) == list(rivers.items())
            compared += 1
    assert compared > 200


def test_intent_changes_are_announced_once_the_model_has_learned():
    from flows.lab.simulator import simulate  # noqa: PLC0415

    records = simulate(SimulationConfig(customers=400, hours=72))
    events = list(good_events(raw for _ts, raw in records))
    replay = Replay(default_playbook())
    replay.run(events)
    changes = [o for o in replay.outputs if type(o) is IntentTransition]
    assert changes
    assert all(c.confidence >= 0.4 and c.margin >= 0.2 for c in changes)
    assert replay.models is not None
    assert replay.models.models[INTENT].record.learned >= 30


def test_closed_loop_policies_report_reward_goals_and_no_violations():
    config = SimulationConfig(customers=150, hours=48)
    results = {p: closed_loop(config, p, default_playbook()) for p in POLICIES}
    for name, result in results.items():
        assert {"reward", "goals_reached", "customers", "violations"} <= set(result), name
        assert result["violations"] == 0, (name, result["violations_by_policy"])
    assert "intent_accuracy" in results["learned"]
    assert results["oracle"]["intent_accuracy"] == 1.0
    again = closed_loop(config, "learned", default_playbook())
    assert again["reward"] == results["learned"]["reward"]  # same population, same seed


def upgrade_then_support(last_page: Event) -> Harness:
    """A customer looks at phones, then at `last_page`, when the predicted intent turns
    from upgrade to support (scripted, no model)."""

    def intent(ctx):
        if ctx.events >= 3:
            return {"get_support": 0.8, "upgrade": 0.3}
        return {"upgrade": 0.8, "get_support": 0.3}

    return Harness(predictors=StubPredictors(intent)).run(
        [profile("medium"), ev("page_view", "web", minutes=1, touchpoint="phones"), last_page]
    )


def test_intent_turning_to_support_triggers_the_fix_before_the_call():
    harness = upgrade_then_support(ev("page_view", "app", minutes=5, touchpoint="help_network"))
    changes = harness.of(IntentTransition)
    assert [(c.previous_intent, c.intent) for c in changes] == [
        (None, "upgrade"),
        ("upgrade", "get_support"),
    ]
    (guide,) = harness.actions("proactive_guide")
    assert guide.trigger_event_id == changes[1].transition_id
    assert guide.reasons[0] == (
        "Predicted intent changed from upgrade to get_support (80%, 50% ahead of the next)."
    )
    (decision,) = [d for d in harness.decisions() if d.trigger_type == "intent_changed"]
    assert decision.trigger_id == changes[1].transition_id and decision.outcome == "sent"


def test_intent_change_with_no_open_support_journey_sends_nothing():
    harness = upgrade_then_support(ev("page_view", "web", minutes=5, touchpoint="phone_detail"))
    assert [c.intent for c in harness.of(IntentTransition)] == ["upgrade", "get_support"]
    assert not harness.actions("proactive_guide")


def test_a_resolved_journey_teaches_the_intent_as_it_looked_while_open():
    playbook = default_playbook()
    step = CustomerStep(playbook, ModelSet(playbook))
    ctx: CustomerContext | None = None
    outputs: list[Output] = []
    for event in (
        profile("medium"),
        ev("page_view", "app", minutes=1, touchpoint="help_network"),
        ev("fault_resolved", "app", minutes=30, touchpoint="help_network"),
    ):
        ctx, out = step.on_event("cust-1", ctx, event)
        outputs += out
    (example,) = [o for o in outputs if type(o) is Example and o.model == INTENT]
    assert example.label == "get_support"
    # Asked while the journey is open, the model must learn from an open journey too.
    assert "open=network_fault" in example.features
    assert "done=network_fault" not in example.features
    assert ctx is not None
    assert ctx.finished[-1].journey == "network_fault"  # the context itself says done
