"""What the online models learn from, on the `models.examples` topic.

The learner step publishes every example in the order it learned it, numbered
(in runs of up to a few hundred per message):
a model's version `name@N` is the model that learned the first N of them, so a
model of any recorded version can be rebuilt from this log (to re-run a decision).
"""

from msgspec import Struct


class Example(Struct, array_like=True, frozen=True):
    """One labelled example for one model, with a deterministic id."""

    model: str
    example_id: str
    label: str
    at: float
    features: dict[str, float] = {}
    prefix: tuple[str, ...] = ()


class LearnedExamples(Struct, array_like=True, frozen=True):
    """Examples one model learned in a row: `examples[i]` is its example number
    `first + i` (1-based), the one that made version `name@(first + i)`."""

    first: int
    examples: list[Example]
