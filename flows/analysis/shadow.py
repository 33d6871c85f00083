"""Champion and challenger: a second playbook or model set deciding beside the live one.

The challenger sees the same stream and decides, but its decisions only go to the
`decisions.shadow` topic, never to a channel. The comparison pairs the two
decisions on each trigger: where they chose differently, the expected value of
what each would send (score = propensity x value x priority x lever), and the
contact-policy violations in what each would send, counted by the independent
checker of the closed-loop evaluation. It runs on a replayed log (pure cores,
`wayfinder shadow`) and in the dataflow (`wayfinder run --challenger`).
"""

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from operators.playbook import CompiledPlaybook
from operators.replay import Replay
from operators.violations import ViolationChecker
from schemas.action import Action
from schemas.decision import Decision
from schemas.event import Event
from schemas.journey import JourneyTransition


def _sent(decision: Decision) -> tuple[str | None, float]:
    for candidate in decision.candidates:
        if candidate.status == "sent":
            return candidate.action, candidate.score
    return None, 0.0


def compare(champion: Iterable[Decision], challenger: Iterable[Decision]) -> dict[str, object]:
    """Pair the decisions on each trigger and say where and how much they differ."""
    ours = {(d.customer, d.trigger_id): d for d in champion}
    theirs = {(d.customer, d.trigger_id): d for d in challenger}
    same = different = 0
    value = {"champion": 0.0, "challenger": 0.0}
    changes: Counter[str] = Counter()
    examples: list[dict[str, object]] = []
    for key in sorted(ours.keys() | theirs.keys()):
        a = _sent(ours[key]) if key in ours else (None, 0.0)
        b = _sent(theirs[key]) if key in theirs else (None, 0.0)
        value["champion"] += a[1]
        value["challenger"] += b[1]
        if a[0] == b[0]:
            same += 1
            continue
        different += 1
        changes[f"{a[0] or 'nothing'} -> {b[0] or 'nothing'}"] += 1
        if len(examples) < 20:
            examples.append(
                {"customer": key[0], "trigger_id": key[1], "champion": a[0], "challenger": b[0]}
            )
    return {
        "triggers": len(ours.keys() | theirs.keys()),
        "same_action": same,
        "different_action": different,
        "only_champion_decided": len(ours.keys() - theirs.keys()),
        "only_challenger_decided": len(theirs.keys() - ours.keys()),
        "expected_value": {k: round(v, 2) for k, v in value.items()},
        "changes": dict(changes.most_common(20)),
        "examples": examples,
    }


def replay_shadow(
    events: list[Event],
    champion: CompiledPlaybook,
    challenger: CompiledPlaybook,
    *,
    challenger_learns: bool = True,
) -> dict[str, object]:
    """Both on the same replayed events (open loop); the comparison, violations included."""
    runs = {
        "champion": Replay(champion),
        "challenger": Replay(challenger, learn=challenger_learns),
    }
    checkers = {
        name: ViolationChecker(replay.step.playbook, replay.step.pseudonym_of)
        for name, replay in runs.items()
    }
    specs = {
        "champion": {a.name: a for a in champion.actions},
        "challenger": {a.name: a for a in challenger.actions},
    }
    seen = {name: 0 for name in runs}
    for event in events:
        for name, replay in runs.items():
            checker = checkers[name]
            checker.saw(event)
            replay.feed(event)
            for output in replay.outputs[seen[name] :]:
                if type(output) is JourneyTransition:
                    checker.transition(output)
                elif type(output) is Action and output.action != "no_action":
                    checker.check(output, specs[name][output.action])
            seen[name] = len(replay.outputs)
    decisions = {
        name: [o for o in replay.outputs if type(o) is Decision] for name, replay in runs.items()
    }
    report = compare(decisions["champion"], decisions["challenger"])
    report["violations"] = {name: checker.total for name, checker in checkers.items()}
    report["versions"] = {"champion": champion.version, "challenger": challenger.version}
    return report


def decisions_in(path: Path) -> list[Decision]:
    decoder = msgspec.json.Decoder(Decision)
    if not path.exists():
        return []
    with path.open("rb") as lines:
        return [decoder.decode(line) for line in lines if line.strip()]


def print_comparison(report: dict[str, Any], console: Console) -> None:
    """The comparison in a few lines: how many decisions differ, and how."""
    value = report["expected_value"]
    violations = report.get("violations")
    console.print(
        f"challenger vs champion: {report['different_action']:,} of {report['triggers']:,} "
        f"decisions differ; expected value {value['challenger']:,.0f} vs "
        f"{value['champion']:,.0f}"
        + (
            f"; violations {violations['challenger']} vs {violations['champion']}"
            if violations is not None
            else ""
        ),
        highlight=False,
    )
    for change, n in list(report["changes"].items())[:8]:
        console.print(f"  {n:>6,}  {change}", highlight=False)
