"""Next-step prediction: the baselines, the prequential protocol, and ours against both."""

import functools
import importlib.util
import itertools
import pickle
import sys
from pathlib import Path

import pytest
from river.naive_bayes import MultinomialNB

from operators import next_step
from operators.next_step import (
    MAX_PREFIX,
    BackoffNgram,
    CasePrefix,
    Markov1,
    NextStepLearner,
    default_models,
    prequential,
)
from tests.helpers import SHARED_DATASETS, shared_dataset
from tests.process_logs import (
    GENERATORS,
    Stream,
    generated_stream,
    log_stream,
    read_log_csv,
    write_log_csv,
)


def teach(model, *paths):
    """Let a model learn whole paths, transition by transition."""
    for path in paths:
        for i in range(1, len(path)):
            model.learn(tuple(path[:i]), {}, path[i])


def stream_of(*cases, interleave=False):
    """Cases (lists of activities) as a stream: one after another, or in lockstep."""
    events: Stream = []
    if interleave:
        for step in range(max(len(c) for c in cases)):
            for n, case in enumerate(cases):
                if step < len(case):
                    events.append((f"c{n}", case[step], 0.0, {}))
    else:
        for n, case in enumerate(cases):
            events.extend((f"c{n}", activity, 0.0, {}) for activity in case)
    return [(c, a, float(i), attrs) for i, (c, a, _, attrs) in enumerate(events)]


# --------------------------------------------------------------------------- baselines


def test_markov1_predicts_the_most_frequent_successor_of_the_last_activity():
    model = Markov1()
    teach(model, "xab", "yab", "zac")
    assert model.predict(("z", "a"), {}) == "b"  # a -> b twice, a -> c once: the prefix is ignored
    assert model.predict(("a",), {}) == "b"


def test_markov1_breaks_ties_by_the_successor_seen_first():
    model = Markov1()
    teach(model, "ac", "ab")
    assert model.predict(("a",), {}) == "c"


def test_markov1_falls_back_to_the_most_frequent_successor_overall():
    model = Markov1()
    assert model.predict(("a",), {}) is None  # nothing learned: nothing to say (counts as wrong)
    teach(model, "ab", "cb", "de")
    assert model.predict(("b",), {}) == "b"  # b was never followed: b is the commonest successor
    assert model.predict(("unknown",), {}) == "b"


def test_backoff_uses_the_longest_suffix_seen_before():
    model = BackoffNgram(4)
    teach(model, "xac", "yab", "zab")
    assert model.predict(("x", "a"), {}) == "c"  # (x, a) was followed by c
    markov = Markov1()
    teach(markov, "xac", "yab", "zab")
    assert markov.predict(("x", "a"), {}) == "b"  # markov only sees a: b twice


def test_backoff_backs_off_to_shorter_suffixes_then_to_the_commonest_successor():
    model = BackoffNgram(4)
    teach(model, "xac", "yab", "zab")
    assert model.predict(("w", "a"), {}) == "b"  # (w, a) unseen: a alone, b twice
    assert model.predict(("q",), {}) == "a"  # nothing about q: a followed x, y and z
    assert BackoffNgram(4).predict(("a",), {}) is None


def test_backoff_looks_back_at_most_max_order_activities():
    paths = ["pabc" + "x", "qabc" + "y", "qabc" + "y"]
    order2, order4 = BackoffNgram(2), BackoffNgram(4)
    teach(order2, *paths)
    teach(order4, *paths)
    assert order4.predict(tuple("pabc"), {}) == "x"  # p, a, b, c: order 4 tells them apart
    assert order2.predict(tuple("pabc"), {}) == "y"  # (b, c) only: y twice


def test_backoff_breaks_ties_by_the_larger_name_whatever_the_order():
    # Not by the successor seen first (as markov1 does): the counts alone decide, so the
    # same examples in another order predict the same (the rule of the live flow's model).
    for paths in (["ac", "ab"], ["ab", "ac"]):
        model = BackoffNgram(4)
        teach(model, *paths)
        assert model.predict(("a",), {}) == "c"
        assert model.predict(("q",), {}) == "c"  # the fallback too: b and c once each


def test_backoff_gives_the_share_of_its_prediction_and_can_do_without_the_fallback():
    model, bare = BackoffNgram(4), BackoffNgram(4, fallback=False)
    for m in (model, bare):
        teach(m, "xab", "yab", "zac")
        assert m.leader(("z", "a")) == ("c", 1.0)  # (z, a): c, once
        assert m.leader(("w", "a")) == ("b", 2 / 3)  # a alone: b twice, c once
    assert model.leader(("q",)) == ("a", 3 / 6)  # a is half of all successors
    assert bare.leader(("q",)) is None and bare.predict(("q",), {}) is None
    assert BackoffNgram(4).leader(("q",)) is None  # nothing learned


def test_backoff_resumes_from_a_pickled_snapshot_and_caps_its_keys():
    paths = ["".join(path) for path in itertools.product("abc", repeat=5)]
    straight, resumed = BackoffNgram(4), BackoffNgram(4)
    teach(straight, *paths)
    teach(resumed, *paths[:100])
    resumed = pickle.loads(pickle.dumps(resumed))
    teach(resumed, *paths[100:])
    prefixes = [tuple(path[:n]) for path in paths for n in range(1, 5)]
    assert [resumed.leader(p) for p in prefixes] == [straight.leader(p) for p in prefixes]

    capped = BackoffNgram(4, max_keys=20)
    teach(capped, *paths)
    assert len(capped.table) == 20

    # A snapshot from before the model named what it keeps (its whole attributes).
    earlier = BackoffNgram.__new__(BackoffNgram)
    earlier.__setstate__(
        {"name": "ngram", "max_order": 4, "max_keys": 50_000}
        | {"table": resumed.table, "overall": resumed.overall}
    )
    assert [earlier.leader(p) for p in prefixes] == [straight.leader(p) for p in prefixes]


# --------------------------------------------------------------------------- protocol


class Spy:
    """A model that records what it was shown, and when."""

    def __init__(self, name="spy"):
        self.name = name
        self.calls = []

    def predict(self, prefix, context):
        self.calls.append(("predict", tuple(prefix), dict(context)))

    def learn(self, prefix, context, next_step):
        self.calls.append(("learn", tuple(prefix), dict(context), next_step))


def test_the_first_event_of_a_case_is_not_predicted_and_the_case_end_is_not_either():
    stream = stream_of("abc", "ab", "a", interleave=True)
    result = prequential(stream, [Markov1()])
    assert result["markov1"]["predicted"] == 6 - 3
    spy = Spy()
    prequential(stream, [spy])
    predicted = [call[1] for call in spy.calls if call[0] == "predict"]
    assert sorted(predicted) == sorted([("a",), ("a", "b"), ("a",)])


def test_every_model_predicts_an_event_before_any_model_learns_it():
    first, second = Spy("first"), Spy("second")
    order = []
    for spy in (first, second):
        for method in ("predict", "learn"):
            original = getattr(spy, method)

            def record(*args, _original=original, _name=f"{spy.name}.{method}"):
                order.append(_name)
                return _original(*args)

            setattr(spy, method, record)
    prequential(stream_of("abc", "abd", interleave=True), [first, second])
    # per predicted event: both predict, then both learn
    assert order == ["first.predict", "second.predict", "first.learn", "second.learn"] * 4
    learned = [call for call in first.calls if call[0] == "learn"]
    predicted = [call for call in first.calls if call[0] == "predict"]
    # learn gets the same prefix and context the prediction had, and the answer
    assert [call[1:3] for call in learned] == [call[1:3] for call in predicted]
    assert [call[3] for call in learned] == ["b", "b", "c", "d"]


def test_the_context_holds_what_was_known_before_the_event_never_the_event_itself():
    stream = [
        ("c1", "a", 100.0, {"org:resource": "r1", "case:channel": "web"}),
        ("c1", "b", 160.0, {"org:resource": "r2", "case:channel": "web"}),
        ("c1", "c", 400.0, {"org:resource": "r3", "case:channel": "web"}),
    ]
    spy = Spy()
    prequential(stream, [spy])
    contexts = [call[2] for call in spy.calls if call[0] == "predict"]
    assert contexts[0]["org:resource"] == "r1"  # predicting b: a's resource, not b's
    assert contexts[0]["elapsed_s"] == 0.0
    assert contexts[0]["since_last_s"] is None  # one event so far: no gap yet
    assert contexts[1]["org:resource"] == "r2"  # predicting c: b's resource
    assert contexts[1]["elapsed_s"] == 60.0  # up to b, never up to c's own time
    assert contexts[1]["since_last_s"] == 60.0
    assert contexts[1]["case:channel"] == "web"
    assert all("r3" not in context.values() for context in contexts)


def test_accuracy_rises_on_a_fixed_path_but_each_unseen_transition_is_first_missed():
    cases = ["abcd"] * 20
    for interleave in (False, True):
        results = prequential(stream_of(*cases, interleave=interleave), default_models())
        for name, result in results.items():
            assert result["predicted"] == 60, name
            # a -> b, b -> c, c -> d: each wrong the first time, right ever after
            assert result["correct"] == 57, (name, interleave)
            assert result["accuracy"] == pytest.approx(57 / 60)
    # in lockstep, the first case teaches the others before they reach the same step
    spy_results = prequential(stream_of("ab", "ab", interleave=True), [Markov1()])
    assert spy_results["markov1"]["correct"] == 1


def test_default_models_are_ours_and_the_two_baselines():
    assert [model.name for model in default_models()] == ["ours", "markov1", "ngram"]
    assert isinstance(default_models()[0], NextStepLearner)


# --------------------------------------------------------------------------- ours


def test_ours_learns_a_branch_that_depends_on_a_case_attribute():
    # after "check", web cases go to "pay online", desk cases to "pay at desk"
    events = []
    for n in range(200):
        channel = "web" if n % 3 else "desk"
        payment = "pay online" if channel == "web" else "pay at desk"
        for step, activity in enumerate(["apply", "check", payment]):
            events.append((f"c{n}", activity, n * 10.0 + step, {"case:channel": channel}))
    results = prequential(events, default_models())
    assert results["ours"]["accuracy"] > 0.95
    assert results["ngram"]["accuracy"] < 0.85  # the path alone cannot tell


def test_ours_looks_back_as_far_as_its_order_whatever_it_is():
    # 40 activities, each named once: 20 back, the path learned says what comes next
    path = [f"s{n}" for n in range(40)]
    model = NextStepLearner(max_order=20)
    teach(model, path)
    assert model.predict(tuple(path[:30]), {}) == "s30"
    assert "ngram20" in model.tables and "ngram21" not in model.tables


def test_ours_ignores_identifier_like_and_date_attributes():
    model = NextStepLearner()
    for n in range(400):
        context = {"concept:instance": f"task-{n}", "case:deadline": "2011-12-06 13:41:31"}
        model.learn(("a",), context, "b")
    assert model.attributes["concept:instance"].dropped
    assert "case:deadline" not in model.attributes
    assert not any(expert.endswith("concept:instance") for expert in model.tables)
    assert model.predict(("a",), {"concept:instance": "task-new"}) == "b"


def test_ours_is_deterministic_and_resumes_from_a_pickled_snapshot():
    stream = generated_stream("helpdesk")[:3000]
    half = len(stream) // 2
    straight = prequential(stream, [NextStepLearner()])

    model = NextStepLearner()
    cases: dict[str, CasePrefix] = {}
    correct = 0
    for n, (case_id, activity, ts, attributes) in enumerate(stream):
        if n == half:  # snapshot and restore mid-stream, prefixes included
            model, cases = pickle.loads(pickle.dumps((model, cases)))
        case = cases.setdefault(case_id, CasePrefix())
        if case.events:
            correct += model.predict(case.prefix, case.context()) == activity
            model.learn(case.prefix, case.context(), activity)
        case.add(activity, ts, attributes)
    assert correct == straight["ours"]["correct"]
    assert prequential(stream, [NextStepLearner()]) == straight


def test_memory_is_bounded_per_case_and_per_table():
    case = CasePrefix()
    for n in range(MAX_PREFIX * 3):
        case.add(f"step{n % 7}", float(n), {})
    assert len(case.prefix) == MAX_PREFIX
    assert case.context()["events"] == MAX_PREFIX * 3

    model = NextStepLearner(max_keys=50)
    for n in range(500):
        model.learn((f"a{n}", f"b{n}"), {"org:group": f"g{n % 3}"}, f"c{n % 5}")
    assert all(len(table) <= 50 for table in model.tables.values())

    model = NextStepLearner(max_keys=50, max_trust=40)
    for n in range(500):
        model.learn((f"a{n}", f"b{n}"), {"org:group": f"g{n % 3}"}, f"c{n % 5}")
    assert sum(len([r for r in by_slot if r is not None]) for by_slot in model.trust.values()) == 40
    assert all(model.trust.values())  # no gate kept without a statistic in it


# --------------------------------------------------------------------------- ours vs the baselines


@pytest.fixture(scope="module")
def receipt_results():
    return prequential(read_log_csv(shared_dataset("receipt.csv")), default_models())


def test_a_missing_shared_data_set_fails_the_test_saying_where_it_looked():
    with pytest.raises(pytest.fail.Exception) as failed:
        shared_dataset("no-such-log.csv")
    assert str(SHARED_DATASETS / "no-such-log.csv") in str(failed.value)
    repo = Path(__file__).resolve().parents[2]
    assert repo.parent / "shared" / "datasets" == SHARED_DATASETS  # no path of one machine


def test_ours_strictly_beats_both_baselines_on_the_receipt_log(receipt_results):
    ours, markov, ngram = (receipt_results[n] for n in ("ours", "markov1", "ngram"))
    assert ours["predicted"] == 8577 - 1434  # every event but each case's first
    assert ours["correct"] > markov["correct"]
    assert ours["correct"] > ngram["correct"]


@functools.cache
def plain_source():
    """operators.next_step from its source, whether or not a mypyc build shadows it."""
    path = Path(next_step.__file__).with_name("next_step.py")
    spec = importlib.util.spec_from_file_location("operators._next_step_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# Counts right, each the count before the learner was made faster (prediction for
# prediction the same, ties and fading included): any change to one is a change of model.
# The module as imported (compiled by `make compile`) and its plain source both give them.
PINNED = [("receipt", 6191), ("helpdesk", 5672), ("hospital", 4369), ("permit", 4796)]


@pytest.mark.parametrize("module", ["as imported", "plain source"])
@pytest.mark.parametrize(("name", "correct"), PINNED)
def test_ours_predicts_on_real_and_generated_logs_exactly_as_it_always_did(module, name, correct):
    learner = (next_step if module == "as imported" else plain_source()).NextStepLearner()
    stream = (
        read_log_csv(shared_dataset("receipt.csv")) if name == "receipt" else generated_stream(name)
    )
    assert prequential(stream, [learner])["ours"]["correct"] == correct


def test_ours_keeps_river_naive_bayes_counts_and_ranks_as_river_does():
    """The learner adds to river's counts in place and sums its log-likelihoods itself: the
    counts are those river's `learn_one` makes, the ranking its `joint_log_likelihood`'s."""
    stream = generated_stream("permit")[:1500]
    model, river_nb = NextStepLearner(), MultinomialNB(alpha=0.1)
    cases: dict[str, CasePrefix] = {}
    ranked = 0
    for case_id, activity, ts, attributes in stream:
        case = cases.setdefault(case_id, CasePrefix())
        if case.events:
            prefix, context = case.prefix, case.context()
            model.predict(prefix, context)
            view, predictions = model._predictions(prefix, context)
            candidates = [p for p in dict.fromkeys(predictions[:-1]) if p is not None]
            known = [c for c in candidates if c in river_nb.class_counts]
            if len(known) >= 2:
                likelihood = river_nb.joint_log_likelihood(view.x)
                expected = max(known, key=lambda c: (likelihood[c], -known.index(c)))
                assert predictions[-1] == expected
                ranked += 1
            model.learn(prefix, context, activity)
            river_nb.learn_one(view.x, activity)
        case.add(activity, ts, attributes)
    assert ranked > 500
    ours = model.classifier
    assert ours.class_counts == river_nb.class_counts
    assert ours.class_totals == river_nb.class_totals
    assert ours.feature_counts == river_nb.feature_counts


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_ours_beats_both_baselines_on_a_generated_service_log(name):
    stream = generated_stream(name)
    results = prequential(stream, default_models())
    ours = results["ours"]["correct"]
    assert ours > results["markov1"]["correct"], results
    assert ours > results["ngram"]["correct"], results


# --------------------------------------------------------------------------- the generated logs


def test_generated_logs_are_reproducible_interleaved_and_read_like_a_csv(tmp_path):
    rows = GENERATORS["permit"](seed=5, cases=40)
    assert rows == GENERATORS["permit"](seed=5, cases=40)
    assert rows != GENERATORS["permit"](seed=6, cases=40)
    assert "+02:00" in rows[0]["time:timestamp"]
    write_log_csv(rows, tmp_path / "permit.csv")
    stream = read_log_csv(tmp_path / "permit.csv")
    assert stream == log_stream(rows)
    assert [e[2] for e in stream] == sorted(e[2] for e in stream)
    # cases overlap in time: the stream is not one case after another
    order = [case for case, *_ in stream]
    switches = sum(a != b for a, b in itertools.pairwise(order))
    assert switches > len({*order})
    assert {"case:permit", "org:resource"} <= set(stream[0][3])


def test_a_log_keeps_file_order_for_events_with_the_same_time():
    rows = [
        {"case:concept:name": "1", "concept:name": "b", "time:timestamp": "2020-01-01 10:00:00"},
        {"case:concept:name": "1", "concept:name": "a", "time:timestamp": "2020-01-01T10:00:00"},
        {
            "case:concept:name": "1",
            "concept:name": "z",
            "time:timestamp": "2020-01-01 10:30:00+01:00",
        },
    ]
    assert [activity for _, activity, *_ in log_stream(rows)] == ["z", "b", "a"]
