"""Re-running a decision: models rebuilt from their example log to a recorded version."""

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest

from flows.lab.simulator import SimulationConfig, simulate
from operators.customer_step import CustomerStep
from operators.identity import customer_key
from operators.models import INTENT, NEXT_STEP, PROPENSITY, ModelSet
from operators.rerun import (
    Rerun,
    RerunError,
    differences,
    histories,
    open_basis,
    parse_version,
)
from schemas.codec import good_events
from schemas.decision import Decision, DecisionBasis, DecisionInput
from schemas.learning import Example, LearnedExamples
from state.context import CustomerContext, from_snapshot
from state.key_vault import CustomerKey
from tests.helpers import default_playbook


def examples(n: int) -> list[Example]:
    """n examples of each model, interleaved."""
    out = []
    for i in range(n):
        features = {f"f{i % 2}": 1.0, "g": float(i % 5)}
        out.append(Example(NEXT_STEP, f"n{i}", "abc"[i % 3], i, prefix=("a",)))
        out.append(Example(INTENT, f"i{i}", ["pay", "buy"][i % 2], i, features))
        out.append(Example(PROPENSITY, f"x|{i}", str(i % 2), i, features))
    return out


def logged(n: int, per_message: int = 7) -> list[LearnedExamples]:
    """The examples as the learner publishes them: numbered runs, per model."""
    out = []
    for name in (NEXT_STEP, INTENT, PROPENSITY):
        mine = [e for e in examples(n) if e.model == name]
        out += [LearnedExamples(i + 1, mine[i : i + per_message]) for i in range(0, n, per_message)]
    return out


def test_a_model_rebuilt_from_its_example_log_is_the_model_of_that_version():
    live = ModelSet(default_playbook())
    at_40 = {}
    for example in examples(90):
        live.learn(example)
        model = live.models[example.model]
        if model.record.learned == 40:
            at_40[example.model] = pickle.dumps(model)
    rebuilt = histories(default_playbook(), logged(90))
    for name in (INTENT, PROPENSITY, NEXT_STEP):
        assert pickle.dumps(rebuilt[name].at(90)) == pickle.dumps(live.models[name])
        assert pickle.dumps(rebuilt[name].at(40)) == at_40[name]  # back again, from a checkpoint
        assert rebuilt[name].at(40).version == f"{name}@40"


def test_a_resumed_run_that_publishes_an_example_number_again_is_read_by_its_last_copy():
    log = logged(5)
    redo = LearnedExamples(5, [Example(NEXT_STEP, "after-resume", "z", 9.0, prefix=("a",))])
    rebuilt = histories(default_playbook(), [*log, redo])
    assert rebuilt[NEXT_STEP].examples[-1].example_id == "after-resume"


def test_a_gap_in_the_example_log_is_refused_with_the_missing_number():
    log = [
        r for r in logged(5, per_message=1) if not (r.examples[0].model == INTENT and r.first == 3)
    ]
    with pytest.raises(RerunError, match="intent has a gap: example 3"):
        histories(default_playbook(), log)


def test_a_version_beyond_the_log_names_the_model_and_what_the_log_holds():
    rebuilt = histories(default_playbook(), logged(5))
    with pytest.raises(RerunError, match=r"propensity@6 is not in the example log \(it holds 5"):
        rebuilt[PROPENSITY].at(6)


def test_model_versions_parse_and_a_bad_one_says_which_part():
    assert parse_version("intent@3 next_step@10") == {"intent": 3, "next_step": 10}
    assert parse_version(None) == {}
    with pytest.raises(RerunError, match="'propensity' is not name@count"):
        parse_version("intent@3 propensity")


@dataclass
class Lagged:
    decisions: list[Decision]
    inputs: list[DecisionInput]
    log: list[LearnedExamples]
    keys: dict[str, bytes]
    pseudonym_of: Callable[[str], str]

    def basis(self, recorded: DecisionInput) -> DecisionBasis:
        return open_basis(recorded, self.keys.get(recorded.customer))


def lagged_run(customers: int) -> Lagged:
    """The customer step over a simulated stream, its models learning in batches behind
    it as the flow's learner does, with decision inputs, the customers' keys and the
    example log recorded."""
    playbook = default_playbook()
    models = ModelSet(playbook)
    step = CustomerStep(playbook, models, record_inputs=True)
    records = simulate(SimulationConfig(customers=customers, hours=48, seed=3))
    contexts: dict[str, CustomerContext | None] = {}
    decisions: list[Decision] = []
    inputs: list[DecisionInput] = []
    log: list[LearnedExamples] = []
    pending: list[Example] = []
    keys: dict[str, bytes] = {}
    for n, event in enumerate(good_events(raw for _ts, raw in records)):
        key = customer_key(event)
        ctx, outputs = step.on_event(key, contexts.get(key), event)
        contexts[key] = ctx
        for output in outputs:
            if type(output) is Example:
                pending.append(output)
            elif type(output) is Decision:
                decisions.append(output)
            elif type(output) is DecisionInput:
                inputs.append(output)
            elif type(output) is CustomerKey and output.secret is not None:
                keys[step.pseudonym_of(output.key)] = output.secret
        if n % 40 == 0:  # the learner's batch
            for example in sorted(pending, key=lambda e: (e.at, e.example_id)):
                model = models.models[example.model]
                model.learn(example)
                log.append(LearnedExamples(model.record.learned, [example]))
            pending.clear()
    return Lagged(decisions, inputs, log, keys, step.pseudonym_of)


def test_every_decision_rerun_with_its_recorded_model_versions_is_the_same_decision():
    run = lagged_run(150)
    decisions, inputs = run.decisions, run.inputs
    playbook = default_playbook()
    rerun = Rerun(playbook, histories(playbook, run.log), run.pseudonym_of)
    assert len(inputs) == len(decisions) > 200
    asked = [d for d in decisions if "xpected response" in str(d.candidates)]
    assert asked  # decisions that asked the response model are among them
    latest = rerun.latest()
    for original, recorded in zip(decisions, inputs, strict=True):
        assert recorded.decision_id == original.decision_id
        again = rerun.decide(recorded, run.basis(recorded))
        assert msgspec.json.encode(again) == msgspec.json.encode(original)
        assert differences(original, again) == []
    newest = rerun.decide(inputs[0], run.basis(inputs[0]), latest)
    assert newest.model_version == " ".join(f"{n}@{v}" for n, v in latest.items())


def test_a_decision_made_with_another_playbook_version_is_not_rerun_with_this_one():
    run = lagged_run(20)
    rerun = Rerun(default_playbook(), histories(default_playbook(), run.log), run.pseudonym_of)
    moved = msgspec.structs.replace(run.inputs[0], playbook_version="2025.01-old@0000000000")
    with pytest.raises(RerunError, match=r"made with playbook version 2025\.01-old"):
        rerun.decide(moved, run.basis(run.inputs[0]))


def test_a_decision_input_is_sealed_under_its_customers_key_and_bound_to_its_decision():
    run = lagged_run(20)
    first, second = next(
        (a, b)
        for a in run.inputs
        for b in run.inputs
        if a.customer == b.customer and a.decision_id != b.decision_id
    )
    basis = run.basis(first)
    assert basis.trigger.trigger_id and basis.context
    # Nothing of the context or the trigger is readable in the record as published.
    published = msgspec.json.encode(first)
    assert basis.context not in published and basis.trigger.trigger_id.encode() not in published
    # The key never travels with what it seals, not even inside the sealed context.
    secret = run.keys[first.customer]
    assert secret not in basis.context and from_snapshot(basis.context).secret == b""
    # Moved to another decision's record, or opened with another customer's key: unreadable.
    moved = msgspec.structs.replace(second, basis=first.basis)
    with pytest.raises(RerunError, match="erased"):
        run.basis(moved)
    other = next(k for c, k in run.keys.items() if c != first.customer)
    with pytest.raises(RerunError, match="erased"):
        open_basis(first, other)


def test_a_decision_of_an_erased_customer_says_the_customer_was_erased():
    run = lagged_run(20)
    recorded = run.inputs[0]
    with pytest.raises(
        RerunError, match=f"decision {recorded.decision_id}: its customer was erased"
    ):
        open_basis(recorded, None)
