"""What the intent model sees of a customer, and the chance of each intent it gives.

The intent model is asked on most journey steps (a third of all events), and each ask
builds the customer's features and scores them against every intent's weights. Both
are here, apart from the river model that learns them, so that they can be compiled
(`scripts/compile`): the same floats, in the same order, in fewer interpreter steps.
"""

import math
from collections.abc import Mapping

from state.context import CustomerContext

#: The latest interactions the features count.
RECENT = 24
#: The latest finished journeys the features count.
FINISHED = 8


def intent_features(ctx: CustomerContext, resolved: str | None = None) -> dict[str, float]:
    """What the customer has been doing lately: contact points, channels, profile.

    `resolved`: the journey whose end labels this example. It is counted as open, not
    done, because the model is asked while journeys are open: learning from "done"
    would teach it a feature it never sees when it matters (train/serve skew).
    """
    x: dict[str, float] = {}
    recent = ctx.interactions
    words: list[str | None] = recent.words
    touchpoints, kinds = recent.last_of(RECENT)  # (indices into words)
    for i in range(len(kinds)):
        touchpoint = touchpoints[i]
        if touchpoint:
            key = f"tp={words[touchpoint]}"
            x[key] = x.get(key, 0.0) + 1.0
        key = f"type={words[kinds[i]]}"
        x[key] = x.get(key, 0.0) + 0.5
    for inst in ctx.journeys:
        key = "open=" + inst.journey
        x[key] = x.get(key, 0.0) + 1.0
    finished = ctx.finished[-FINISHED:]
    if resolved is not None:
        x["open=" + resolved] = x.get("open=" + resolved, 0.0) + 1.0
        last = -1
        for i, summary in enumerate(finished):
            if summary.journey == resolved:
                last = i
        if last >= 0:
            finished = finished[:last] + finished[last + 1 :]
    for summary in finished:
        key = "done=" + summary.journey
        x[key] = x.get(key, 0.0) + 1.0
    for key, value in x.items():
        x[key] = math.log1p(value)
    if ctx.value_tier:
        x["tier=" + ctx.value_tier] = 1.0
    for segment in ctx.segments:
        x["seg=" + segment] = 1.0
    return x


def probabilities(
    weights: Mapping[str, Mapping[str, float]], x: Mapping[str, float]
) -> dict[str, float]:
    """The chance of each label of a multinomial logistic regression whose weights are
    `weights` (label -> feature -> weight), for the features `x`: what river's
    `SoftmaxRegression.predict_proba_one` gives, to the last bit. Each dot product runs
    over the shorter of the two, in its order, and is summed from the left, as river's
    `utils.math.dot` does; then the same softmax, in place."""
    scores: dict[str, float] = {}
    for label, w in weights.items():
        total = 0.0
        if len(w) < len(x):
            for name, weight in w.items():
                if name in x:
                    total += weight * x[name]
        else:
            for name, value in x.items():
                if name in w:
                    total += w[name] * value
        scores[label] = total
    if not scores:
        return scores
    maximum = max(scores.values())
    norm = 0.0
    for label, score in scores.items():
        p = math.exp(score - maximum)
        scores[label] = p
        norm += p
    for label in scores:
        scores[label] /= norm
    return scores
