"""Closed-loop evaluation: policies compared on one simulated population and seed.

The simulator's customers have hidden ground truth (flows/world.py) and react
to what they are sent; their reactions (outcomes, and the events that move
their journeys) come back into the stream at their own event time. Four
policies decide on the same population with the same playbook and contact
policies: Wayfinder's learned one (online models), rules only (no models),
random (random choice among the allowed candidates) and an oracle that knows
the hidden truth. An independent checker counts policy violations in what each
sent. `wayfinder evaluate` prints the table and writes the JSON.
"""

import heapq
import itertools
import time
from collections import defaultdict
from hashlib import blake2b
from typing import Any

from flows.lab.population import customer_id, customer_index, directory
from flows.lab.simulator import SimulationConfig, simulate
from flows.lab.world import World
from flows.runtime.settings import state_key
from operators.models import ModelSet, Response
from operators.playbook import ActionSpec, CompiledPlaybook
from operators.replay import Replay
from operators.violations import ViolationChecker
from schemas.action import Action
from schemas.codec import good_events
from schemas.event import Event
from schemas.journey import JourneyTransition
from state.context import CustomerContext

POLICIES = ("learned", "rules", "random", "oracle")
#: Not policies one could deploy: ablations that say where the gap to the oracle lies.
DIAGNOSTICS = ("learned_true_intent",)


class RandomScores:
    """A random policy: the same playbook and contact policies, with guesses in place of
    predictions (a random intent, a random next step) and random preferences."""

    def __init__(self, seed: int, playbook: CompiledPlaybook) -> None:
        self.seed = seed
        self.intents = playbook.intents
        self.points = sorted(playbook.contact_points)

    def _draw(self, *parts: object) -> float:
        text = "|".join(str(p) for p in (self.seed, *parts))
        return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64

    def intent(self, ctx: CustomerContext) -> dict[str, float] | None:
        if not self.intents:
            return None
        pick = self.intents[int(self._draw(ctx.key, ctx.events, "i") * len(self.intents))]
        return {pick: 0.5 + self._draw(ctx.key, ctx.events, "c") / 2}

    def next_step(self, ctx: CustomerContext) -> tuple[str, float] | None:
        pick = self.points[int(self._draw(ctx.key, ctx.events, "n") * len(self.points))]
        return pick, self._draw(ctx.key, ctx.events, "p")

    def propensity(self, ctx: CustomerContext, action: ActionSpec, channel: str) -> Response:
        return Response(self._draw(ctx.key, ctx.last_seen, action.name, channel))

    def version(self) -> str:
        return f"random@{self.seed}"


class Oracle:
    """Knows the hidden truth: each customer's real intent and real chance to convert."""

    def __init__(self, world: World, models: ModelSet) -> None:
        self.world = world
        self.models = models  # next step: the learned one (the truth has no path model)

    def intent(self, ctx: CustomerContext) -> dict[str, float] | None:
        truth = self.world.truth(ctx.key)
        return None if truth is None else {truth.intent: 1.0}

    def next_step(self, ctx: CustomerContext) -> tuple[str, float] | None:
        return self.models.next_step(ctx)

    def propensity(self, ctx: CustomerContext, action: ActionSpec, channel: str) -> Response:
        return Response(self.world.true_propensity(ctx.key, action.name, channel))

    def version(self) -> str:
        return "oracle"


class TrueIntent(Oracle):
    """The learned models, told each customer's real intent: the reward this buys over
    `learned` is what better intent prediction could be worth; the rest of the gap to
    the oracle is response and channel."""

    def propensity(self, ctx: CustomerContext, action: ActionSpec, channel: str) -> Response:
        return self.models.propensity(ctx, action, channel)

    def version(self) -> str:
        return f"true-intent {self.models.version()}"


def closed_loop(
    config: SimulationConfig, policy: str, playbook: CompiledPlaybook
) -> dict[str, Any]:
    """Run one policy on the simulated population, the world reacting as it goes."""
    world = World(config.seed, state_key)
    if policy == "learned":
        replay = Replay(playbook, pseudonym_of=state_key)
    elif policy == "rules":
        replay = Replay(playbook, learn=False, pseudonym_of=state_key)
    elif policy == "random":
        replay = Replay(
            playbook,
            learn=False,
            predictors=RandomScores(config.seed, playbook),
            pseudonym_of=state_key,
        )
    elif policy in ("oracle", "learned_true_intent"):
        models = ModelSet(playbook)
        known = Oracle if policy == "oracle" else TrueIntent
        replay = Replay(playbook, predictors=known(world, models), pseudonym_of=state_key)
        replay.models = models  # still learning what it is not told
        replay.step.models = models
    else:
        choices = ", ".join(POLICIES + DIAGNOSTICS)
        raise ValueError(f"unknown policy {policy!r}; one of {choices}")
    specs = {a.name: a for a in playbook.actions}
    checker = ViolationChecker(playbook, state_key)
    population = directory(config.customers, state_key)
    counter = itertools.count()
    queue: list[tuple[float, int, Event]] = []
    for event in good_events(raw for _ts, raw in simulate(config)):
        heapq.heappush(queue, (event.ts.timestamp(), next(counter), event))

    started = time.perf_counter()
    reward = 0.0
    sent = converted = 0
    goals: dict[str, int] = defaultdict(int)
    by_action: dict[str, float] = defaultdict(float)
    sent_by_action: dict[str, int] = defaultdict(int)
    seen_outputs = 0
    value_of: dict[str, tuple[str, float]] = {}  # action id -> (action, value), for conversions
    while queue:
        _ts, _n, event = heapq.heappop(queue)
        checker.saw(event)
        if event.outcome == "converted" and event.action_id in value_of:
            name, value = value_of[event.action_id]
            reward += value
            by_action[name] += value
            converted += 1
        replay.feed(event)
        fresh = replay.outputs[seen_outputs:]
        seen_outputs = len(replay.outputs)
        for output in fresh:
            if isinstance(output, JourneyTransition):
                checker.transition(output)
                index = population.get(output.customer)
                if output.kind == "completed" and index is not None:
                    goals[customer_id(index)] += 1
            elif isinstance(output, Action) and output.action != "no_action":
                spec = specs[output.action]
                checker.check(output, spec)
                sent += 1
                value_of[output.action_id] = (spec.name, spec.value)
                sent_by_action[spec.name] += 1
                index = population.get(output.customer)
                if index is None:
                    continue
                for reaction in world.react(output, customer_id(index)):
                    heapq.heappush(queue, (reaction.ts.timestamp(), next(counter), reaction))

    customers = [k for k in replay.contexts if customer_index(k) is not None]
    predicted = [(k, replay.contexts[k].intent) for k in customers if replay.contexts[k].intent]
    truths = {k: world.truth(k) for k, _intent in predicted}
    right = sum(1 for k, intent in predicted if (t := truths[k]) is not None and t.intent == intent)
    result: dict[str, Any] = {
        "customers": len(customers),
        "reward": round(reward, 2),
        "actions_sent": sent,
        "conversions": converted,
        "goals_reached": sum(goals.values()),
        "goals_per_customer": round(sum(goals.values()) / max(len(customers), 1), 4),
        "violations": checker.total,
        "violations_by_policy": dict(checker.violations),
        "reward_by_action": {k: round(v, 2) for k, v in sorted(by_action.items())},
        "sent_by_action": dict(sorted(sent_by_action.items())),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if policy in ("learned", "oracle", "learned_true_intent"):
        result["intent_accuracy"] = round(right / len(predicted), 4) if predicted else 0.0
        result["intent_predicted_share"] = round(len(predicted) / max(len(customers), 1), 4)
    if replay.models is not None:
        result["models"] = {
            name: {
                "examples": m.record.learned,
                "prequential_accuracy": round(m.record.accuracy, 4),
                "loss": round(m.record.loss, 4),
                "drifts": m.record.drifts,
            }
            for name, m in replay.models.models.items()
        }
    return result
