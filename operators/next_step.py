"""Next-step prediction: which contact point a customer goes to next, learned online.

Three models share one small contract (`predict` then `learn`, per customer
prefix) and one evaluation, `prequential`: events in timestamp order, cases
interleaved; each event after a case's first is predicted from that case's
prefix and what is known of the case at that moment, before any model learns
from it; then every model learns from it. The case end is not predicted.

- `Markov1`: the most frequent successor of the last activity.
- `BackoffNgram`: the most frequent successor of the longest suffix (up to
  order 4) seen before, backing off to shorter suffixes. It is also the live
  flow's next-step model (`operators.models.FlowNextStep` wraps it).
- `NextStepLearner` ("ours"): a pool of experts - the n-grams of every order,
  their recency-weighted twins, experts that condition the last activity on
  what else is known (the set of contact points already visited, visits of the
  last one, position, elapsed time, the gap between the last two events, each
  case attribute and the last event's resource or group), and river's naive
  Bayes over the same features - and a gate that learns online which expert
  has lately been right most often in the current situation (the last activity
  and what was visited), leaving the back-off n-gram only on evidence.

`CasePrefix` keeps what is known of one case (the last `MAX_PREFIX` activities,
times, the latest event's attributes) and gives the prefix and context to
predict from: `prequential` uses it, and so can a live flow, per customer.

Pure core: no bytewax, no wall clock, no randomness (nothing depends on hash
order either); the same input order gives the same predictions. State is
counts tables with a cap on their keys and plain containers: every model and
`CasePrefix` pickles, so a flow can snapshot them.
"""

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Context = Mapping[str, str | float | None]
Attributes = Mapping[str, str | float | None]

#: Activities kept per case; older ones leave the prefix (the count stays in the context).
MAX_PREFIX = 32
#: Keys one counts table holds before it stops adding new ones (bounded memory, live).
MAX_KEYS = 50_000
#: (gate context, expert) hit rates the gate of ours keeps, at most.
MAX_TRUST = 500_000

#: Context keys the prefix tracker adds; everything else is an attribute.
ELAPSED, SINCE_LAST, EVENTS = "elapsed_s", "since_last_s", "events"
_DERIVED = (ELAPSED, SINCE_LAST, EVENTS)

_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}")


class NextStepModel(Protocol):
    """Predicts a case's next activity from its prefix and context; learns from the answer."""

    name: str

    def predict(self, prefix: Sequence[str], context: Context) -> str | None: ...

    def learn(self, prefix: Sequence[str], context: Context, next_step: str) -> None: ...


# ---------------------------------------------------------------- counts tables


def _argmax(counts: dict[str, float]) -> str | None:
    """The most frequent key; ties go to the key seen first (insertion order)."""
    best, best_count = None, 0.0
    for key, count in counts.items():
        if count > best_count:
            best, best_count = key, count
    return best


def _add(counts: dict[str, float], key: str, decay: float = 1.0) -> None:
    """Count one more `key`; with decay < 1 the earlier counts of this table fade first."""
    if decay < 1.0:
        for k in counts:
            counts[k] *= decay
    counts[key] = counts.get(key, 0.0) + 1.0


class _Table:
    """Successor counts per context key, capped at `max_keys` keys."""

    __slots__ = ("counts", "decay", "max_keys")

    def __init__(self, decay: float = 1.0, max_keys: int = MAX_KEYS) -> None:
        self.decay = decay
        self.max_keys = max_keys
        self.counts: dict[object, dict[str, float]] = {}

    def predict(self, key: object) -> str | None:
        successors = self.counts.get(key)
        return _argmax(successors) if successors else None

    def learn(self, key: object, next_step: str) -> None:
        successors = self.counts.get(key)
        if successors is None:
            if len(self.counts) >= self.max_keys:
                return
            successors = self.counts[key] = {}
        _add(successors, next_step, self.decay)

    def __getstate__(self) -> dict[str, Any]:
        return {"decay": self.decay, "max_keys": self.max_keys, "counts": self.counts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.decay, self.max_keys, self.counts = state["decay"], state["max_keys"], state["counts"]


# ---------------------------------------------------------------- baselines


class Markov1:
    """First-order Markov: the most frequent successor of the last activity.

    An activity never seen with a successor falls back to the activity most often
    seen as a successor overall (None before anything was learned).
    """

    name = "markov1"

    def __init__(self) -> None:
        self.successors = _Table()
        self.overall: dict[str, float] = {}

    def predict(self, prefix: Sequence[str], context: Context) -> str | None:
        if prefix:
            predicted = self.successors.predict(prefix[-1])
            if predicted is not None:
                return predicted
        return _argmax(self.overall)

    def learn(self, prefix: Sequence[str], context: Context, next_step: str) -> None:
        if prefix:
            self.successors.learn(prefix[-1], next_step)
        _add(self.overall, next_step)


class _Successors:
    """What followed one suffix: counts, their total, and the leader, kept as they grow."""

    __slots__ = ("best", "best_count", "counts", "total")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        self.best = ""
        self.best_count = 0

    def add(self, step: str) -> None:
        count = self.counts[step] = self.counts.get(step, 0) + 1
        self.total += 1
        # Counts only grow, so the leader changes only to the step just counted.
        if count > self.best_count or (count == self.best_count and step > self.best):
            self.best, self.best_count = step, count

    def __getstate__(self) -> tuple[dict[str, int], int, str, int]:
        return self.counts, self.total, self.best, self.best_count

    def __setstate__(self, state: tuple[dict[str, int], int, str, int]) -> None:
        self.counts, self.total, self.best, self.best_count = state


class BackoffNgram:
    """Back-off n-gram: the most frequent successor of the longest suffix seen before.

    Suffixes of length `max_order` down to 1; then, with `fallback`, the activity
    most often seen as a successor overall (without it: None, nothing is known).
    One implementation for the process-mining baseline and the live flow's model
    (`operators.models.FlowNextStep`, no fallback). At most `max_keys` suffixes
    are counted; a new one is ignored once the table is full.

    Ties go to the larger name (string order), not to the successor seen first:
    the prediction is then a function of the counts alone, so a model that
    learned the same examples in another order (customers interleaved otherwise,
    a replay, a recovery) predicts the same; and it is the rule the live flow
    always had, so its predictions, and the decisions they drive, stay as they
    were. Each suffix keeps its leader as it counts (counts only grow, so the
    leader can only become the step just counted): learning and predicting cost
    a few dictionary lookups, whatever the number of successors. That is the hot
    path of the flow, which learns from every step of every customer.
    """

    name = "ngram"

    def __init__(self, max_order: int = 4, fallback: bool = True, max_keys: int = MAX_KEYS) -> None:
        if max_order < 1:
            raise ValueError(f"max_order must be at least 1, not {max_order}")
        self.max_order = max_order
        self.max_keys = max_keys
        self.table: dict[tuple[str, ...], _Successors] = {}
        self.overall = _Successors() if fallback else None

    def __getstate__(self) -> tuple[int, int, dict[tuple[str, ...], _Successors], Any]:
        # What it learned and its settings, not its name: a compiled class would
        # otherwise keep the name as an attribute of each model (and share the string).
        return self.max_order, self.max_keys, self.table, self.overall

    def __setstate__(self, state: tuple[Any, ...] | dict[str, Any]) -> None:
        if isinstance(state, dict):  # a snapshot from before __getstate__
            state = (state["max_order"], state["max_keys"], state["table"], state["overall"])
        self.max_order, self.max_keys, self.table, self.overall = state

    def leader(self, prefix: Sequence[str]) -> tuple[str, float] | None:
        """(the predicted next activity, the share of the times it followed the suffix it
        is predicted from, or of all successors when it is the fallback), or None."""
        table, recent = self.table, tuple(prefix[-self.max_order :])
        for order in range(len(recent), 0, -1):
            successors = table.get(recent[-order:])
            if successors is not None:
                return successors.best, successors.best_count / successors.total
        overall = self.overall
        if overall is not None and overall.total:
            return overall.best, overall.best_count / overall.total
        return None

    def predict(self, prefix: Sequence[str], context: Context) -> str | None:
        found = self.leader(prefix)
        return found[0] if found is not None else None

    def learn(self, prefix: Sequence[str], context: Context, next_step: str) -> None:
        table, recent = self.table, tuple(prefix[-self.max_order :])
        for order in range(1, len(recent) + 1):
            key = recent[-order:]
            successors = table.get(key)
            if successors is None:
                if len(table) >= self.max_keys:
                    continue
                successors = table[key] = _Successors()
            successors.add(next_step)
        if self.overall is not None:
            self.overall.add(next_step)


# ---------------------------------------------------------------- ours


def _bucket(value: float) -> int:
    """Log2 buckets, symmetric around zero: 0, ±1, ±2-3, ±4-7, ..."""
    magnitude = int(math.log2(1.0 + abs(value)))
    return magnitude if value >= 0 else -magnitude


def _duration_bucket(seconds: float | None) -> int | None:
    """Log2 buckets of minutes: under a minute, 1-3 min, 3-7 min, ... ; None when unknown."""
    if seconds is None:
        return None
    return int(math.log2(1.0 + max(seconds, 0.0) / 60.0))


def _number(value: object) -> float | None:
    """A finite number, or None."""
    # (types in a tuple: compiled, `int | float` would build a union at every call)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _attribute_value(value: str | float | None) -> str | int | None:
    """A categorical value for an attribute: numbers bucketed, dates and blanks dropped."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return _bucket(float(value)) if math.isfinite(value) else None
    value = str(value).strip()
    if not value or _DATE_LIKE.match(value):
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return _bucket(number) if math.isfinite(number) else None


#: Uses of an attribute looked at, and the share of distinct values among them that marks
#: an identifier.
ID_WINDOW, ID_SHARE = 200, 0.5


@dataclass
class _AttributeStats:
    """Whether an attribute looks like an identifier: most values new in its first uses."""

    seen: int = 0
    values: set[object] = field(default_factory=set)
    dropped: bool = False

    def observe(self, value: object) -> bool:
        """Record one use; False once the attribute is dropped."""
        if self.dropped or self.seen >= ID_WINDOW:
            return not self.dropped
        self.seen += 1
        self.values.add(value)
        if len(self.values) > ID_SHARE * ID_WINDOW:
            self.dropped = True
        if self.dropped or self.seen >= ID_WINDOW:
            self.values = set()
        return not self.dropped


class NextStepLearner:
    """Ours: experts of every kind, and a gate that learns online which one to follow where.

    Experts. Each is a counts table keyed by one view of (prefix, context) that
    predicts the most frequent successor of its key, or, for a key it has not
    seen yet, what the back-off n-gram predicts (so an expert is never silent):

    - the n-grams of every order 0..`max_order`, and the back-off n-gram itself (over
      these tables: a tie goes to the successor seen first, as in every table of
      ours, not to the larger name as in `BackoffNgram`);
    - the last activity with: the set of activities visited so far (where parallel
      branches stand), the visits of the last activity (loops), the position, the
      elapsed time, the gap between the last two events (log buckets), the visited
      set and that gap;
    - the last activity with each attribute's value (case attributes and the last
      event's resource, group, ...), alone and with the visited set. Numbers are
      log-bucketed, dates and blanks ignored, identifier-like attributes (nearly
      every value new) dropped.

    Every table exists twice: plain counts, and counts that fade by `recency` at
    each new observation of the same key (so a process that changes is followed).
    One more expert is river's multinomial naive Bayes over one-hot features (the
    last 1-3 activities, the visited set, the attribute values), which adds up
    evidence from several attributes at once; it ranks the candidates the other
    experts put forward.

    Gate. Per expert it keeps a fading hit rate (`trust_decay` per observation)
    overall, per last activity, and per last activity and visited set; the finest
    rate is shrunk towards the coarser ones (weight `prior_weight`). Each candidate
    next step gets the best rate among the experts proposing it; the back-off
    n-gram's candidate gets `margin` extra, so the gate leaves it only on
    evidence. Ours therefore stays close to the back-off n-gram where the
    context says nothing, and follows the context where it does.

    `exclude` leaves experts out by name ("seen", "visits", "position", "elapsed",
    "since_last", "seen+since_last", "@<attribute>", "seen@<attribute>", "river"),
    for ablations. `max_keys` caps each table, `max_trust` the gate's statistics.
    """

    name = "ours"

    def __init__(
        self,
        max_order: int = 4,
        recency: float = 0.9,
        trust_decay: float = 0.995,
        prior_weight: float = 10.0,
        margin: float = 0.02,
        naive_bayes_alpha: float = 0.1,
        max_keys: int = MAX_KEYS,
        exclude: frozenset[str] = frozenset(),
        max_trust: int = MAX_TRUST,
    ) -> None:
        self.max_order = max_order
        self.recency = recency
        self.trust_decay = trust_decay
        self.prior_weight = prior_weight
        self.margin = margin
        self.naive_bayes_alpha = naive_bayes_alpha
        self.max_keys = max_keys
        self.exclude = exclude
        #: Whether every table has its fading twin (an expert "name~" in the gate).
        self.fading = recency < 1.0
        self._name_orders()
        #: tables[expert][key]: what followed that key, plain and fading, under one lookup.
        self.tables: dict[str, dict[object, _Leading]] = {}
        # trust[gate context][slot of an expert] = its hit rate there (fading; None: none
        # yet). By gate first: a prediction reads every expert in the same few gates, so
        # each gate (a tuple, whose hash Python does not keep) is hashed once, not once
        # per expert; then by the expert's place in `expert_slots`, a list's index, not a
        # dictionary's lookup of its name (some fifty experts, twice an event).
        self.trust: dict[object, list[_HitRate | None]] = {}
        #: Each expert's place in every gate's list, by name (the order they came in).
        self.expert_slots: dict[str, int] = {}
        self.max_trust = max_trust
        self._trusted = 0  # hit rates held, at most `max_trust`
        self.attributes: dict[str, _AttributeStats] = {}
        # river's multinomial naive Bayes, its counts (per class, per class of all the
        # frequencies, per feature and class) kept here as plain dictionaries: `_rank` and
        # `_learn_naive_bayes` make the sums of its `joint_log_likelihood` and `learn_one`.
        # river keeps them in Counters, each write of which Python dispatches through a
        # generic `__setitem__` (Counter defines `__delitem__`): 9% of the learner's work.
        # `classifier` gives river's model with these counts.
        self.class_counts: dict[str, int] = {}
        self.class_totals: dict[str, float] = {}
        self.feature_counts: dict[str, dict[str, float]] = {}
        #: Raw attribute strings and their categorical values (`_attribute_value`).
        self._values: dict[str, str | int | None] = {}
        self._name_features()
        #: (prefix, context, view, the experts' predictions) of the last call.
        self._last: tuple[tuple[str, ...], dict[str, Any], _View, list[str | None]] | None = None

    #: What a snapshot holds: everything learned and the settings (not the last call's).
    _STATE = (
        "max_order",
        "recency",
        "trust_decay",
        "prior_weight",
        "margin",
        "naive_bayes_alpha",
        "max_keys",
        "exclude",
        "fading",
        "tables",
        "trust",
        "max_trust",
        "_trusted",
        "attributes",
        "class_counts",
        "class_totals",
        "feature_counts",
        "_values",
        "expert_slots",
    )

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._name_orders()
        self._name_features()
        self._last = None

    def _name_orders(self) -> None:
        """The n-gram experts' names, by order (from `max_order`: not snapshotted)."""
        self._ngrams = tuple(f"ngram{order}" for order in range(self.max_order + 1))
        self._ngram_names = frozenset(self._ngrams)

    def _name_features(self) -> None:
        """Empty caches of the strings a view names its experts and river's features by
        (not snapshotted). Each event would otherwise build some twenty strings anew, and
        every table and count they look up would hash each again: a string built once
        keeps its hash."""
        #: An attribute's experts: "@name", "seen@name".
        self._attribute_experts: dict[str, tuple[str, str]] = {}
        #: river's features: "last2=a|b" by the last activities, "seen=a" by the activity,
        #: "name=value" by (name, value, whether a bool: True and 1 are one key otherwise).
        self._last_features: dict[tuple[str, ...], str] = {}
        self._seen_features: dict[str, str] = {}
        self._value_features: dict[tuple[str, str | int | bool, bool], str] = {}
        #: Each set of activities visited, once, and its features (`_seen_set`).
        self._seen_sets: dict[frozenset[str], tuple[frozenset[str], tuple[str, ...]]] = {}
        #: Contexts' names in order, by their names as they came (`_sorted_names`).
        self._sorted: dict[tuple[str, ...], list[str]] = {}
        #: The slots of a view's experts, by its layout (`_View.layout`).
        self._layouts: dict[tuple[int, tuple[str, ...]], list[int]] = {}

    # -- what the learner sees of a prefix and its context

    def _value(self, raw: str | float | None) -> str | int | None:
        """`_attribute_value`, remembered per string: a log repeats a few values."""
        if type(raw) is not str:
            return _attribute_value(raw)
        values = self._values
        try:
            return values[raw]
        except KeyError:
            value = _attribute_value(raw)
            if len(values) < self.max_keys:
                values[raw] = value
            return value

    def _view(self, prefix: tuple[str, ...], context: dict[str, str | float | None]) -> "_View":
        attributes: list[tuple[str, str | int | bool]] = []
        stats_of = self.attributes
        for name in self._sorted_names(context):
            if name in _DERIVED:
                continue
            stats = stats_of.get(name)
            if stats is not None and stats.dropped:
                continue
            value = self._value(context[name])
            if value is not None:
                attributes.append((name, value))

        length = len(prefix)
        keys: list[tuple[str, object]] = [
            (self._ngrams[order], prefix[length - order :])
            for order in range(min(self.max_order, length), -1, -1)
        ]
        gates: list[object] = [()]
        x: dict[str, float] = {}
        names: tuple[str, ...] = ()
        if prefix:
            last = prefix[-1]
            seen, seen_features = self._seen_set(prefix)
            gates += [last, (last, seen)]
            events = _number(context.get(EVENTS))
            position = int(events) if events is not None else length
            elapsed = _duration_bucket(_number(context.get(ELAPSED)))
            since_last = _duration_bucket(_number(context.get(SINCE_LAST)))
            keys += [
                ("seen", (last, seen)),
                ("visits", (last, prefix.count(last))),
                ("position", (last, min(position, 16))),
                ("elapsed", (last, elapsed)),
                ("since_last", (last, since_last)),
                ("seen+since_last", (last, seen, since_last)),
            ]
            for name, value in attributes:
                at, seen_at = self._experts_of(name)
                keys.append((at, (last, value)))
                keys.append((seen_at, (last, seen, value)))
            for order in range(1, min(3, length) + 1):
                x[self._last_feature(prefix[-order:])] = 1.0
            for feature in seen_features:
                x[feature] = 1.0
            for name, value in attributes:
                x[self._value_feature(name, value)] = 1.0
            names = tuple([name for name, _ in attributes])
        if self.exclude:
            keys = [(e, k) for e, k in keys if e not in self.exclude]
        # (the experts follow from the number of keys and the attributes' names)
        return _View(keys, gates, x, attributes, (len(keys), names))

    def _slots(self, view: "_View") -> list[int]:
        """The slots of `view`'s experts in the gate's order: the back-off n-gram, each
        key's expert, their fading twins, river."""
        layout = self._layouts.get(view.layout)
        if layout is None:
            experts = [_BACKOFF] + [expert for expert, _ in view.keys]
            if self.fading:
                experts += [expert + "~" for expert in experts]
            if "river" not in self.exclude:
                experts.append("river")
            slots = self.expert_slots
            for expert in experts:
                if expert not in slots:
                    slots[expert] = len(slots)
            layout = [slots[expert] for expert in experts]
            if len(self._layouts) < self.max_keys:
                self._layouts[view.layout] = layout
        return layout

    def _seen_set(self, prefix: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
        """The activities of `prefix`, as the one frozenset of those activities that every
        key and gate holds (a lookup then finds its key's set by identity, where an equal
        set built anew would be compared element by element in each of some ten lookups),
        and river's features of them, in the activities' order."""
        seen = frozenset(prefix)
        known = self._seen_sets.get(seen)
        if known is not None:
            return known
        found = seen, tuple([self._seen_feature(activity) for activity in sorted(seen)])
        if len(self._seen_sets) < self.max_keys:
            self._seen_sets[seen] = found
        return found

    def _sorted_names(self, context: dict[str, str | float | None]) -> list[str]:
        """The context's names in order, remembered by the names as they come (a log's
        events name the same few, in the same order: a lookup, not a sort)."""
        names = tuple(context)
        known = self._sorted.get(names)
        if known is None:
            known = sorted(names)
            if len(self._sorted) < self.max_keys:
                self._sorted[names] = known
        return known

    def _experts_of(self, name: str) -> tuple[str, str]:
        experts = self._attribute_experts.get(name)
        if experts is None:
            experts = ("@" + name, "seen@" + name)
            if len(self._attribute_experts) < self.max_keys:
                self._attribute_experts[name] = experts
        return experts

    def _last_feature(self, last: tuple[str, ...]) -> str:
        feature = self._last_features.get(last)
        if feature is None:
            feature = f"last{len(last)}=" + "|".join(last)
            if len(self._last_features) < self.max_keys:
                self._last_features[last] = feature
        return feature

    def _seen_feature(self, activity: str) -> str:
        feature = self._seen_features.get(activity)
        if feature is None:
            feature = "seen=" + activity
            if len(self._seen_features) < self.max_keys:
                self._seen_features[activity] = feature
        return feature

    def _value_feature(self, name: str, value: str | int | bool) -> str:
        key = (name, value, type(value) is bool)
        feature = self._value_features.get(key)
        if feature is None:
            feature = f"{name}={value}"
            if len(self._value_features) < self.max_keys:
                self._value_features[key] = feature
        return feature

    # -- experts

    def _predictions(
        self, prefix: Sequence[str], context: Context
    ) -> tuple["_View", list[str | None]]:
        """The view, and every expert's prediction in the gate's order (its slots'): the
        back-off n-gram and each expert, then their fading twins, then river (computed
        once for a predict and the learn after it)."""
        prefix = tuple(prefix)
        last = self._last
        if last is not None and last[0] == prefix and last[1] == context:
            return last[2], last[3]
        copied = dict(context)  # (kept for the next call; a dict's lookups are the fast ones)
        view = self._view(prefix, copied)
        tables = self.tables
        view.slots = self._slots(view)
        plain: list[str | None] = [None]
        faded: list[str | None] = [None]
        # The back-off n-gram: the first n-gram (longest first) that knows its key. A
        # key is in a plain table exactly when it is in its fading twin.
        found: _Leading | None = None
        held = view.leading
        for expert, key in view.keys:
            table = tables.get(expert)
            leading = table.get(key) if table is not None else None
            held.append(leading)
            if leading is None:
                plain.append(None)
                faded.append(None)
                continue
            plain.append(leading.best)
            faded.append(leading.faded_best)
            if found is None and expert in self._ngram_names:
                found = leading
        # (an expert that does not know its key says what the back-off n-gram says; the
        # back-off n-gram's own place holds None, so it says itself)
        backoff = found.best if found is not None else None
        predictions = [backoff if p is None else p for p in plain]
        if self.fading:
            faded_backoff = found.faded_best if found is not None else None
            predictions += [faded_backoff if p is None else p for p in faded]
        if "river" not in self.exclude:
            # (the distinct predictions, first seen first: a few among some forty, which a
            # list finds by a comparison or two where a dictionary hashes each one in)
            candidates: list[str] = []
            for p in predictions:
                if p is not None and p not in candidates:
                    candidates.append(p)
            predictions.append(self._rank(view.x, candidates))
        if len(predictions) != len(view.slots):  # (the gate's loops go by index over both)
            raise RuntimeError(f"{len(predictions)} predictions for {len(view.slots)} experts")
        self._last = (prefix, copied, view, predictions)
        return view, predictions

    def _rank(self, x: dict[str, float], candidates: list[str]) -> str | None:
        """The candidate river's naive Bayes finds most likely (its joint log-likelihood:
        log P(candidate), then each feature's log P(f | candidate) added in turn)."""
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        class_counts, class_totals, feature_counts = (
            self.class_counts,
            self.class_totals,
            self.feature_counts,
        )
        alpha = self.naive_bayes_alpha
        all_classes = sum(class_counts.values())
        terms = alpha * len(feature_counts)
        features = [feature_counts.get(feature) for feature in x]
        values = list(x.values())
        best, best_score = None, -math.inf
        # (`math.log` called as such: compiled, that is C's log on a double, the very
        # function Python's calls; through a local name it was a Python call parsing its
        # arguments, some thirty an event)
        for candidate in candidates:
            if candidate not in class_counts:
                continue
            score = math.log(class_counts[candidate] / all_classes)
            denominator = class_totals[candidate] + terms
            for at in range(len(features)):
                counts = features[at]
                seen = counts.get(candidate, 0.0) if counts is not None else 0.0
                score += values[at] * math.log((seen + alpha) / denominator)
            if score > best_score:
                best, best_score = candidate, score
        return best

    # -- gate

    def predict(self, prefix: Sequence[str], context: Context) -> str | None:
        view, predictions = self._predictions(prefix, context)
        trust = self.trust
        gates = [trust.get(gate) for gate in view.gates]  # coarse to fine
        prior = self.prior_weight
        # Each candidate, in the order experts first proposed it, and the best trust among
        # the experts proposing it (two lists: a few candidates, found by a comparison or
        # two, where a dictionary would hash the name at each of some forty experts).
        candidates: list[str] = []
        support: list[float] = []
        slots = view.slots
        # (kept for the learn after it: experts by gates)
        rates: list[_HitRate | None] = [None] * (len(slots) * len(gates))
        i = 0
        # (loops by index over the two lists `_predictions` made the same length: compiled,
        # a zip with `strict=True` is Python's, which makes a tuple an expert)
        for e in range(len(slots)):
            slot, predicted = slots[e], predictions[e]
            # The expert's fading hit rate in the finest gate, shrunk to coarser ones: from
            # 0.5 with weight 2 in the coarsest, then with weight `prior` in each finer one.
            rate, weight = 0.5, 2.0
            for by_slot in gates:
                stats = by_slot[slot] if by_slot is not None and slot < len(by_slot) else None
                if stats is None:
                    rate = (weight * rate) / weight
                else:
                    rates[i] = stats
                    rate = (stats.hits + weight * rate) / (stats.seen + weight)
                i += 1
                weight = prior
            if predicted is not None:
                at, held = 0, len(candidates)
                while at < held and candidates[at] != predicted:
                    at += 1
                if at == held:
                    candidates.append(predicted)
                    support.append(rate)
                elif rate > support[at]:
                    support[at] = rate
        view.rates = rates
        default = predictions[0]
        if default is not None:  # (proposed by the back-off n-gram, first: the first candidate)
            support[0] += self.margin
        best, best_support = None, 0.0  # (the first of the largest, as `_argmax`)
        for at in range(len(candidates)):
            if support[at] > best_support:
                best, best_support = candidates[at], support[at]
        return best

    def learn(self, prefix: Sequence[str], context: Context, next_step: str) -> None:
        view, predictions = self._predictions(prefix, context)
        fade = self.trust_decay
        trust = self.trust
        gates = [trust.get(gate) for gate in view.gates]
        rates = view.rates  # (as `predict` found them: nothing learned since)
        count = len(gates)
        slots = view.slots
        for e in range(len(slots)):
            predicted = predictions[e]
            hit = 1.0 if predicted is not None and predicted == next_step else 0.0
            for at in range(count):
                if rates is not None:
                    stats = rates[e * count + at]
                else:
                    by_slot, slot = gates[at], slots[e]
                    stats = by_slot[slot] if by_slot is not None and slot < len(by_slot) else None
                if stats is None:
                    stats = self._new_rate(gates, view.gates, at, slots[e])
                    if stats is None:
                        continue  # full: this context is judged by its coarser ones
                stats.hits = stats.hits * fade + hit
                stats.seen = stats.seen * fade + 1.0
        self._learn_tables(view, next_step)

    def _new_rate(
        self, gates: list[list["_HitRate | None"] | None], names: list[object], at: int, slot: int
    ) -> "_HitRate | None":
        """A new hit rate for the expert in `slot` in gate `at` (None once `max_trust` are
        held); the gate is kept, in `gates` too, once it holds one."""
        if self._trusted >= self.max_trust:
            return None
        by_slot = gates[at]
        if by_slot is None:
            by_slot = gates[at] = self.trust[names[at]] = []
        if slot >= len(by_slot):
            by_slot.extend([None] * (slot + 1 - len(by_slot)))
        stats = by_slot[slot] = _HitRate()
        self._trusted += 1
        return stats

    def _learn_tables(self, view: "_View", next_step: str) -> None:
        """Every expert's table, river's counts and the attributes' usage learn the step."""
        tables, fading, recency, max_keys = self.tables, self.fading, self.recency, self.max_keys
        keys, held = view.keys, view.leading
        for at in range(len(keys)):
            expert, key = keys[at]
            leading = held[at]  # (looked up by `_predictions`; nothing learned since)
            if leading is None:
                table = tables.get(expert)
                if table is None:
                    table = tables[expert] = {}
                if len(table) >= max_keys:
                    continue
                leading = table[key] = _Leading(fading)
            leading.add(next_step, recency)
        if view.x:
            self._learn_naive_bayes(view.x, next_step)
        for name, value in view.attributes:
            usage = self.attributes.get(name)
            if usage is None:
                usage = self.attributes[name] = _AttributeStats()
            if not usage.observe(value):
                tables.pop("@" + name, None)
                tables.pop("seen@" + name, None)
        self._last = None

    @property
    def classifier(self) -> Any:
        """river's `MultinomialNB` with the counts learned so far (a copy: it learns apart)."""
        from river.naive_bayes import MultinomialNB  # noqa: PLC0415 (scipy: only when asked)

        model = MultinomialNB(alpha=self.naive_bayes_alpha)
        model.class_counts.update(self.class_counts)
        model.class_totals.update(self.class_totals)
        for feature, counts in self.feature_counts.items():
            model.feature_counts[feature].update(counts)
        return model

    def _learn_naive_bayes(self, x: dict[str, float], next_step: str) -> None:
        """river's `MultinomialNB.learn_one`, on the counts kept here."""
        if not x:
            return
        class_counts, class_totals, feature_counts = (
            self.class_counts,
            self.class_totals,
            self.feature_counts,
        )
        class_counts[next_step] = class_counts.get(next_step, 0) + 1
        # (0.0, not river's 0: the same sums, a float's, which compiled are native; the
        # class's total added to in turn as river does, and written once)
        total = class_totals.get(next_step, 0.0)
        for feature, frequency in x.items():
            counts = feature_counts.get(feature)
            if counts is None:
                counts = feature_counts[feature] = {}
            counts[next_step] = frequency + counts.get(next_step, 0.0)
            total = frequency + total
        class_totals[next_step] = total


class _HitRate:
    """An expert's fading hits and predictions in one gate context (floats a compiled
    learner keeps unboxed)."""

    __slots__ = ("hits", "seen")

    def __init__(self) -> None:
        self.hits = 0.0
        self.seen = 0.0


class _Leading:
    """What followed one key in one expert's table: the counts and their fading twin,
    each with its leader kept as it learns (ties: the successor seen first), so that a
    prediction is a lookup."""

    __slots__ = ("best", "best_count", "counts", "faded", "faded_best", "steps")

    def __init__(self, fading: bool = True) -> None:
        # (a default: compiled, the class is unpickled through a call without arguments)
        #: The successors in the order first counted, and their counts. Lists, not a
        #: dictionary: a key has a few successors, found by a comparison or two (the same
        #: string, mostly) where a dictionary hashes and probes, and each step rewalks
        #: them all for the fading counts anyway.
        self.steps: list[str] = []
        self.counts: list[float] = []
        self.best: str | None = None
        self.best_count = 0.0
        #: The fading counts, in the order of `steps`, which every step rewrites whole.
        self.faded: list[float] | None = [] if fading else None
        self.faded_best: str | None = None

    def add(self, step: str, decay: float) -> None:
        counts, steps = self.counts, self.steps
        place, known = 0, len(steps)
        while place < known and steps[place] != step:
            place += 1
        if place == known:
            steps.append(step)
            counts.append(1.0)
            count = 1.0
        else:
            count = counts[place] + 1.0
            counts[place] = count
        best = self.best
        if step == best:
            self.best_count = count
        elif count > self.best_count:
            self.best, self.best_count = step, count
        elif count == self.best_count:
            for key in steps:  # a tie: the one seen first leads
                if key == step:
                    self.best = step
                    break
                if key == best:
                    break
        faded = self.faded
        if faded is None:
            return
        # Every earlier count fades, then this step counts one more: the leader is the
        # first of the largest, found in the same pass.
        leader, leader_count = None, 0.0
        held = len(faded)
        for at in range(held):
            faded_count = faded[at] * decay + 1.0 if at == place else faded[at] * decay
            faded[at] = faded_count
            if faded_count > leader_count:
                leader, leader_count = steps[at], faded_count
        if held < len(steps):  # a step new here: `steps` has it last
            faded.append(1.0)
            if leader_count < 1.0:
                leader = step
        self.faded_best = leader


#: The back-off n-gram's name in the gate.
_BACKOFF = "backoff"


class _View:
    """One (prefix, context) as the learner sees it, and what its prediction looked up
    (a learn after it reuses them instead of looking each up again). A plain class, not
    a dataclass: compiled, a dataclass's `__init__` is still the one `dataclasses`
    writes in Python, and a view is made for every event."""

    __slots__ = ("attributes", "gates", "keys", "layout", "leading", "rates", "slots", "x")

    def __init__(
        self,
        keys: list[tuple[str, object]],
        gates: list[object],
        x: dict[str, float],
        attributes: list[tuple[str, str | int | bool]],
        layout: tuple[int, tuple[str, ...]],
    ) -> None:
        self.keys = keys  # (expert, key into its table)
        self.gates = gates  # gate contexts, coarse to fine
        self.x = x  # one-hot features for river
        self.attributes = attributes  # usable attributes, normalised
        #: What its experts follow from: the number of its keys, the attributes' names.
        self.layout = layout
        #: Each expert's slot in the gate's lists (`NextStepLearner._slots`).
        self.slots: list[int] = []
        #: Each key's entry in its expert's table (None: not there), by `_predictions`.
        self.leading: list[_Leading | None] = []
        #: Each expert's hit rate in each gate (None: not there), experts by gates, once
        #: `predict` asked.
        self.rates: list[_HitRate | None] | None = None


def default_models() -> list[NextStepModel]:
    """Ours and the two baselines it is measured against, in that order."""
    return [NextStepLearner(), Markov1(), BackoffNgram(4)]


# ---------------------------------------------------------------- prefixes and evaluation


@dataclass
class CasePrefix:
    """What is known of one case after its latest event: the prefix and the context.

    The prefix holds the last `MAX_PREFIX` activities; `events` counts them all.
    The context gives the time from the case's first to its latest event, the gap
    between its latest two events (None after one event), the number of events,
    and the latest event's attributes (case attributes ride on every event).
    """

    activities: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_PREFIX))
    events: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    gap: float | None = None
    attributes: dict[str, str | float | None] = field(default_factory=dict)

    def add(self, activity: str, ts: float, attributes: Attributes) -> None:
        """The case's next event has happened."""
        if self.events:
            self.gap = ts - self.last_ts
        else:
            self.first_ts = ts
        self.activities.append(activity)
        self.events += 1
        self.last_ts = ts
        self.attributes = dict(attributes)

    @property
    def prefix(self) -> tuple[str, ...]:
        return tuple(self.activities)

    def context(self) -> dict[str, str | float | None]:
        context = dict(self.attributes)
        context[ELAPSED] = self.last_ts - self.first_ts
        context[SINCE_LAST] = self.gap
        context[EVENTS] = float(self.events)
        return context


def prequential(
    stream: Iterable[tuple[str, str, float, Attributes]], models: Sequence[NextStepModel]
) -> dict[str, dict[str, Any]]:
    """Test-then-train on one stream of (case id, activity, epoch seconds, attributes).

    Events come in timestamp order, cases interleaved. Each event after its
    case's first is predicted by every model from the case's prefix and context
    (built from earlier events only: this event's attributes and time reach the
    context of the case's next prediction), then every model learns it.
    Returns {model name: {"predicted": n, "correct": k, "accuracy": k / n}}.
    """
    cases: dict[str, CasePrefix] = {}
    correct = [0] * len(models)
    predicted = 0
    for case_id, activity, ts, attributes in stream:
        case = cases.get(case_id)
        if case is None:
            case = cases[case_id] = CasePrefix()
        else:
            prefix, context = case.prefix, case.context()
            predicted += 1
            for i, model in enumerate(models):
                if model.predict(prefix, context) == activity:
                    correct[i] += 1
            for model in models:
                model.learn(prefix, context, activity)
        case.add(activity, ts, attributes)
    return {
        model.name: {
            "predicted": predicted,
            "correct": correct[i],
            "accuracy": correct[i] / predicted if predicted else 0.0,
        }
        for i, model in enumerate(models)
    }
