"""`wayfinder simulate`, `react` and `evaluate`: the simulation lab."""

import argparse
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console

from flows.cli.options import (
    DEFAULT_OUT,
    Subcommands,
    add_command,
    add_playbook_arg,
    add_simulation_args,
    print_error,
    simulation,
    write_json,
)
from flows.lab.simulator import SimulationConfig

if TYPE_CHECKING:
    from schemas.action import Action
    from state.key_vault import VaultReader


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from flows.lab.simulator import simulate

    sim = simulation(args)
    if args.kafka:
        return _produce_simulation(sim, console)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("wb") as f:
        for _ts, raw in simulate(sim):
            f.write(raw + b"\n")
            n += 1
    console.print(
        f"wrote {n:,} events of {sim.customers:,} customers to {out}",
        soft_wrap=True,
        highlight=False,
    )
    return 0


class _KeyFields(msgspec.Struct):
    customer_id: str | None = None
    anonymous_id: str | None = None


_KEY_READER = msgspec.json.Decoder(_KeyFields)


def partition_key(raw: bytes) -> bytes | None:
    """Key by customer so one customer's events stay in order on one partition."""
    try:
        fields = _KEY_READER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    key = fields.customer_id or fields.anonymous_id
    return key.encode() if key else None


def _produce_simulation(sim: SimulationConfig, console: Console) -> int:
    from kafka import KafkaProducer

    from flows.lab.simulator import simulate
    from flows.runtime.kafka_check import check_connection
    from flows.runtime.settings import KafkaSettings
    from flows.runtime.topics import ensure_topics
    from schemas.topics import EVENTS

    settings = KafkaSettings.from_env()
    check_connection(settings)
    ensure_topics(settings)
    topic = settings.topic(EVENTS)
    producer = KafkaProducer(linger_ms=20, acks="all", **settings.kafka_python_config())
    n = 0
    for _ts, raw in simulate(sim):
        producer.send(topic, key=partition_key(raw), value=raw)
        n += 1
    producer.flush()
    producer.close()
    console.print(f"produced {n:,} events of {sim.customers:,} customers to {topic}")
    return 0


def _vault_instance(vault: "VaultReader", action: "Action", _key: str, token: str) -> str | None:
    """What an action's content names by token, as its customer's vault entry says."""
    return vault.instance(action.customer, token)


#: How long an action whose pseudonym the key vault does not resolve yet is tried again.
_RESOLVE_WITHIN = 10.0


def cmd_react(args: argparse.Namespace, console: Console) -> int:
    """The simulated customers' side of the closed loop on Kafka: read the action topics,
    write their reactions (outcomes, and what the action made happen) to the events topic.

    As a channel does, it learns whom an action is for from the key vault (an action
    names the customer by pseudonym); one whose customer is not in the vault yet (the
    flow writes it as it publishes) is tried again for `_RESOLVE_WITHIN` seconds."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from flows.lab.world import World
    from flows.runtime.kafka_check import check_connection
    from flows.runtime.settings import KafkaSettings, load_compiled, playbook_path
    from schemas.action import Action
    from schemas.codec import encode
    from schemas.topics import EVENTS, action_topic
    from state.key_vault import VaultReader

    settings = KafkaSettings.from_env()
    playbook = load_compiled(args.playbook or playbook_path())
    check_connection(settings)
    world = World(args.seed)
    if settings.key_vault is None:
        print_error(
            console,
            "WAYFINDER_KEY_VAULT is not set: actions name customers by pseudonym, which "
            "the flow's key vault resolves",
        )
        return 2
    vault = VaultReader(settings.key_vault)
    topics = [settings.topic(action_topic(channel)) for channel in playbook.channels]
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.kafka_python_config())
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or [])
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    decoder = msgspec.json.Decoder(Action)
    reacted = produced = unresolved = 0
    waiting: list[tuple[float, Action]] = []  # (first read, action) not resolved yet
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < args.idle or waiting:
            batch = consumer.poll(timeout_ms=500)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    quiet_since = now
                    waiting.append((now, decoder.decode(record.value)))
            if waiting:
                vault.refresh()
            still: list[tuple[float, Action]] = []
            for since, action in waiting:
                if not action.customer or action.action == "no_action":
                    reacted += 1  # nobody to react (an erased customer's answer), or nothing
                    continue
                customer = vault.customer(action.customer)
                if customer is None:
                    if now - since < _RESOLVE_WITHIN:
                        still.append((since, action))
                    else:
                        unresolved += 1  # erased meanwhile, or a visitor never named
                    continue
                reacted += 1
                for event in world.react(action, customer, partial(_vault_instance, vault, action)):
                    producer.send(
                        settings.topic(EVENTS), key=customer.encode(), value=encode(event)
                    )
                    produced += 1
            waiting = still
            producer.flush()
    finally:
        consumer.close()
        producer.close()
        vault.close()
    console.print(
        f"read {reacted + unresolved:,} actions, wrote {produced:,} reactions to "
        f"{settings.topic(EVENTS)}"
        + (f" ({unresolved:,} for customers the key vault does not know)" if unresolved else ""),
        highlight=False,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from flows.lab.evaluate import DIAGNOSTICS, POLICIES, closed_loop
    from flows.runtime.settings import load_compiled, playbook_path

    sim = simulation(args)
    playbook = load_compiled(args.playbook or playbook_path())
    console.print(
        f"evaluating {', '.join(POLICIES)} on {sim.customers:,} simulated customers, "
        f"{sim.hours:g} h, seed {sim.seed} ...",
        highlight=False,
    )
    results = {}
    for policy in POLICIES:
        results[policy] = closed_loop(sim, policy, playbook)
        console.print(f"  {policy}: done in {results[policy]['seconds']} s", highlight=False)
    table = Table(title="Closed-loop evaluation (same population, same seed)")
    for column in (
        "policy",
        "reward",
        "goals/customer",
        "conversions",
        "sent",
        "intent acc.",
        "violations",
    ):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for policy, r in results.items():
        accuracy = r.get("intent_accuracy")
        table.add_row(
            policy,
            f"{r['reward']:,.0f}",
            f"{r['goals_per_customer']:.3f}",
            f"{r['conversions']:,}",
            f"{r['actions_sent']:,}",
            "–" if accuracy is None else f"{accuracy:.1%}",
            str(r["violations"]),
        )
    console.print(table)
    learned, rules, oracle = (results[p]["reward"] for p in ("learned", "rules", "oracle"))
    ratios: dict[str, float | None] = {
        "learned_vs_rules": round(learned / rules, 3) if rules else None,
        "learned_vs_oracle": round(learned / oracle, 3) if oracle else None,
    }
    console.print(
        f"learned / rules-only reward: {ratios['learned_vs_rules']}x; "
        f"learned / oracle: {learned / oracle if oracle else 0:.0%}",
        highlight=False,
    )
    diagnostics = {}
    if args.diagnostics:
        for name in DIAGNOSTICS:
            diagnostics[name] = closed_loop(sim, name, playbook)
        told = diagnostics["learned_true_intent"]["reward"]
        ratios["learned_true_intent_vs_rules"] = round(told / rules, 3) if rules else None
        console.print(
            f"told the true intent, the learned models reach {told:,.0f} "
            f"({ratios['learned_true_intent_vs_rules']}x rules-only, "
            f"{told / oracle if oracle else 0:.0%} of the oracle): the difference to learned "
            "is what intent prediction leaves on the table",
            highlight=False,
        )
    document = {
        "population": {"customers": sim.customers, "hours": sim.hours, "seed": sim.seed},
        "playbook_version": playbook.version,
        "policies": results,
        "diagnostics": diagnostics,
        "ratios": ratios,
    }
    console.print(f"wrote {write_json(args.json, document)}", soft_wrap=True, highlight=False)
    return 0


def register(sub: Subcommands) -> None:
    simulate = add_command(
        sub,
        "simulate",
        help="write simulated events to a file or the events topic",
        description="Write the simulator's events (wire format) to a JSON-lines file or Kafka.",
    )
    target = simulate.add_mutually_exclusive_group()
    target.add_argument(
        "--out", type=Path, default=DEFAULT_OUT / "events.jsonl", help="JSON-lines file"
    )
    target.add_argument("--kafka", action="store_true", help="produce to the events topic")
    add_simulation_args(simulate)
    simulate.set_defaults(handler=cmd_simulate)

    react = add_command(
        sub,
        "react",
        help="simulated customers react to actions on Kafka (closed loop)",
        description=(
            "Read every action topic and write the simulated customers' reactions (action "
            "outcomes, and the events a working action causes) to the events topic; stops "
            "after --idle seconds without a new action. Use the seed of the simulation."
        ),
    )
    react.add_argument("--seed", type=int, default=SimulationConfig().seed, help="simulator seed")
    react.add_argument("--idle", type=float, default=30.0, help="seconds without actions to stop")
    add_playbook_arg(react, "playbook whose channels to read")
    react.set_defaults(handler=cmd_react)

    evaluate = add_command(
        sub,
        "evaluate",
        help="compare policies in a closed loop with the simulator",
        description=(
            "Run Wayfinder's learned policy, rules only, random and an oracle (which knows "
            "the simulated customers' hidden truth) on the same simulated population and "
            "seed; the customers react to what they are sent. Prints reward, goals reached "
            "per customer, intent accuracy and policy violations, and writes them as JSON."
        ),
    )
    add_simulation_args(evaluate, customers=1000, hours_=168.0)
    add_playbook_arg(evaluate)
    evaluate.add_argument(
        "--json", type=Path, default=DEFAULT_OUT / "evaluation.json", help="where to write the JSON"
    )
    evaluate.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip the ablation that tells the learned models each customer's true intent",
    )
    evaluate.set_defaults(handler=cmd_evaluate)
