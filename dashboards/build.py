"""Wayfinder's Grafana dashboards, as code (the Grafana Foundation SDK): writes one
provisioning-ready JSON file per dashboard beside this file.

    python dashboards/build.py          # write the JSON files
    python dashboards/build.py --check  # exit 1 if a file differs from what the code builds

The data source is a variable (`datasource`), so the files load as they are into any
Grafana with a Prometheus data source; `journey` picks journeys where a panel splits
by them. Every panel's query is run against a real Prometheus by the suite
(`tests/e2e/test_prometheus.py`): a panel that shows nothing fails it.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption

HERE = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The window of rates: Grafana's own (at least four scrapes), not a fixed one.
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: its title, what it answers, its unit and queries; `kind` is the
    visualisation (timeseries, stat, bargauge)."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat", "bargauge"] = "timeseries"
    width: int = 12


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


def _quantiles(histogram: str, where: str, by: str = "") -> tuple[Query, ...]:
    """p50 and p99 of a histogram (split by `by`, if given)."""
    keep = f"{by}, le" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({keep}) "
            f"(rate({histogram}_bucket{{{where}}}[{RATE}])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.99)
    )


DEAD_LETTERS = Panel(
    "Dead letters by reason",
    "Records that could not be used, per second, by reason.",
    "ops",
    _q(f"sum by (reason) (rate(wayfinder_dead_letters_total[{RATE}]))", "{{reason}}"),
)

OVERVIEW = (
    "Wayfinder / Overview",
    "Is it keeping up, and how fast does it answer? Throughput, freshness, latency, errors, lag.",
    [
        Panel(
            "Events decoded",
            "Events per second, by type family (interaction, identity, consent, outcome, "
            "decision_request, erasure, loop).",
            "ops",
            _q(f"sum by (family) (rate(wayfinder_events_decoded_total[{RATE}]))", "{{family}}"),
        ),
        Panel(
            "Actions emitted",
            "Actions per second: sent (pushed to a channel), reply and no_action (answers "
            "to decision requests).",
            "ops",
            _q(f"sum by (kind) (rate(wayfinder_actions_total[{RATE}]))", "{{kind}}"),
        ),
        Panel(
            "Freshness",
            "Wall clock minus the watermark, the slowest process's: how far behind real time "
            "the flow's view of event time is.",
            "s",
            _q("max(wayfinder_freshness_seconds)", "freshness"),
            kind="stat",
            width=6,
        ),
        Panel(
            "Consumer lag",
            "Messages of the events topic not yet read, all partitions.",
            "short",
            _q("sum(bytewax_kafka_consumer_lag)", "lag"),
            kind="stat",
            width=6,
        ),
        Panel(
            "Processes",
            "Processes serving metrics (a cluster's each say which they are).",
            "short",
            _q("count(wayfinder_process_info)", "processes"),
            kind="stat",
            width=6,
        ),
        Panel(
            "Dead-letter ratio",
            "Share of records read that went to the dead-letter topic.",
            "percentunit",
            _q(
                f"sum(rate(wayfinder_dead_letters_total[{RATE}])) / "
                f"clamp_min(sum(rate(wayfinder_events_received_total[{RATE}])), 1e-9)",
                "dead letters",
            ),
            kind="stat",
            width=6,
        ),
        Panel(
            "Ingest to action",
            "From the batch holding the trigger being read to the action leaving the "
            "customer step (pushed actions).",
            "s",
            _quantiles("wayfinder_ingest_to_action_seconds", 'kind="sent"'),
        ),
        Panel(
            "Decision request to reply",
            "From a decision request being read to its answer (an action, or no action).",
            "s",
            _quantiles("wayfinder_ingest_to_action_seconds", 'kind=~"reply|no_action"'),
        ),
        Panel(
            "Event time to action",
            "From the trigger's event time to the action leaving the flow: the reaction "
            "time customers see (a replay: how old the replayed events are).",
            "s",
            _quantiles("wayfinder_event_to_action_seconds", 'kind="sent"'),
        ),
        DEAD_LETTERS,
    ],
)

JOURNEYS = (
    "Wayfinder / Journeys",
    "Where are customers on their journeys? Funnels, completion, stalls and abandonment, "
    "time to goal.",
    [
        Panel(
            "Funnel",
            "Journey transitions in the range, by kind, for the journeys chosen.",
            "short",
            _q(
                "sum by (kind) (increase(wayfinder_journey_transitions_total"
                '{journey=~"$journey"}[$__range]))',
                "{{kind}}",
            ),
            kind="bargauge",
        ),
        Panel(
            "Open journeys",
            "Journeys open in the customers' state, by journey.",
            "short",
            _q('sum by (journey) (wayfinder_open_journeys{journey=~"$journey"})', "{{journey}}"),
        ),
        Panel(
            "Entered and completed",
            "Journeys entered and completed per second, by journey.",
            "ops",
            _q(
                "sum by (journey, kind) (rate(wayfinder_journey_transitions_total"
                f'{{journey=~"$journey", kind=~"entered|completed"}}[{RATE}]))',
                "{{journey}} {{kind}}",
            ),
        ),
        Panel(
            "Completion ratio",
            "Completions to entries in the range, by journey.",
            "percentunit",
            _q(
                "sum by (journey) (increase(wayfinder_journey_transitions_total"
                '{journey=~"$journey", kind="completed"}[$__range])) / sum by (journey) '
                "(increase(wayfinder_journey_transitions_total"
                '{journey=~"$journey", kind="entered"}[$__range]))',
                "{{journey}}",
            ),
            kind="bargauge",
        ),
        Panel(
            "Stalls and abandonment",
            "Journeys stalled (past their stage's patience), resumed and abandoned, per "
            "second, by journey.",
            "ops",
            _q(
                "sum by (journey, kind) (rate(wayfinder_journey_transitions_total"
                f'{{journey=~"$journey", kind=~"stalled|resumed|abandoned"}}[{RATE}]))',
                "{{journey}} {{kind}}",
            ),
        ),
        Panel(
            "Time to goal",
            "From a journey's start to its goal (event time): median and 99th percentile.",
            "s",
            _quantiles("wayfinder_journey_time_to_goal_seconds", 'journey=~"$journey"'),
        ),
    ],
)

DECISIONS = (
    "Wayfinder / Decisions and models",
    "What is decided, what is held back and why, does it work, and are the models sound?",
    [
        Panel(
            "Decisions by outcome",
            "Decisions per second: sent, suppressed, no_action, holdout.",
            "ops",
            _q(f"sum by (outcome) (rate(wayfinder_decisions_total[{RATE}]))", "{{outcome}}"),
        ),
        Panel(
            "Actions sent",
            "Actions pushed per second, by channel and action.",
            "ops",
            _q(
                f'sum by (channel, action) (rate(wayfinder_actions_total{{kind="sent"}}[{RATE}]))',
                "{{channel}} {{action}}",
            ),
        ),
        Panel(
            "Suppressions by policy",
            "Candidate actions held back per second, by the policy that held them.",
            "ops",
            _q(f"sum by (policy) (rate(wayfinder_suppressions_total[{RATE}]))", "{{policy}}"),
        ),
        Panel(
            "Goals per decision: treated and holdout",
            "Journeys completed per decision, for customers who are sent actions and for the "
            "holdout, who never are: the gap is the uplift the actions make.",
            "short",
            (
                Query(
                    'sum(increase(wayfinder_goal_completions_total{group="treated"}[$__range]))'
                    ' / sum(increase(wayfinder_decisions_total{outcome="sent"}[$__range]))',
                    "treated",
                ),
                Query(
                    'sum(increase(wayfinder_goal_completions_total{group="holdout"}[$__range]))'
                    ' / sum(increase(wayfinder_decisions_total{outcome="holdout"}[$__range]))',
                    "holdout",
                ),
            ),
            kind="bargauge",
        ),
        Panel(
            "Model accuracy",
            "Prequential accuracy of each model (predicted before it learned).",
            "percentunit",
            _q("max by (model) (wayfinder_model_accuracy)", "{{model}}"),
        ),
        Panel(
            "Model loss",
            "Mean online loss of each model.",
            "short",
            _q("max by (model) (wayfinder_model_loss)", "{{model}}"),
        ),
        Panel(
            "Examples learned",
            "Examples each model learned per second.",
            "ops",
            _q(f"sum by (model) (rate(wayfinder_model_examples[{RATE}]))", "{{model}}"),
        ),
        Panel(
            "Drifts detected",
            "Concept drifts each model's error detector (ADWIN) has found.",
            "short",
            _q("max by (model) (wayfinder_model_drifts)", "{{model}}"),
        ),
        Panel(
            "Replica versions behind",
            "Examples published that a process's replica has not applied yet: how far "
            "behind the newest model each process decides.",
            "short",
            _q(
                "max by (model) (wayfinder_model_examples_published) - on (model) "
                "group_right min by (model, instance) (wayfinder_model_replica_version)",
                "{{model}} {{instance}}",
            ),
        ),
        Panel(
            "Intent changes",
            "Changes of predicted intent published per second.",
            "ops",
            _q(f"sum(rate(wayfinder_intent_changes_total[{RATE}]))", "intent changes"),
        ),
    ],
)

RELIABILITY = (
    "Wayfinder / Reliability",
    "Is anything lost, late or stuck? Dead letters, delivery, snapshots, restarts, lag.",
    [
        Panel(
            "Consumer lag by partition",
            "Messages of the events topic not yet read, by partition.",
            "short",
            _q(
                "sum by (topic, partition) (bytewax_kafka_consumer_lag)",
                "{{topic}} {{partition}}",
            ),
        ),
        Panel(
            "Brokers connected",
            "Brokers of the Kafka cluster each process's input is connected to (0: "
            "unreachable; its /readyz says so).",
            "short",
            _q("min by (instance) (wayfinder_kafka_brokers_connected)", "{{instance}}"),
        ),
        Panel(
            "Input read to its end",
            "Partitions of the events topic each process has read to their end since it "
            "started (readiness waits for all).",
            "short",
            _q("sum by (instance) (wayfinder_input_caught_up)", "{{instance}}"),
        ),
        DEAD_LETTERS,
        Panel(
            "Delivery errors and retries",
            "Kafka delivery reports with an error, and messages produced again, per second.",
            "ops",
            (
                Query(
                    f"sum(rate(wayfinder_delivery_failures_total[{RATE}])) or vector(0)",
                    "errors",
                ),
                Query(f"sum(rate(wayfinder_delivery_retries_total[{RATE}]))", "retries"),
            ),
        ),
        Panel(
            "Messages produced",
            "Messages delivered to Kafka per second, by topic.",
            "ops",
            _q(f"sum by (topic) (rate(wayfinder_produced_messages_total[{RATE}]))", "{{topic}}"),
        ),
        Panel(
            "Snapshot age",
            "Seconds since each process last snapshotted a customer's context.",
            "s",
            _q(
                "time() - max by (instance) (wayfinder_last_snapshot_timestamp_seconds)",
                "{{instance}}",
            ),
        ),
        Panel(
            "Snapshot time per context",
            "Mean time to serialise one customer's context for bytewax's snapshot.",
            "s",
            _q(
                f"sum(rate(wayfinder_snapshot_seconds_total[{RATE}])) / "
                f"sum(rate(wayfinder_snapshots_total[{RATE}]))",
                "per context",
            ),
        ),
        Panel(
            "Restarts and resumes",
            "Process starts, and runs resumed from snapshots, in the range.",
            "short",
            (
                Query("sum(changes(process_start_time_seconds[$__range]))", "restarts"),
                Query("sum(increase(wayfinder_resumes_total[$__range]))", "resumes"),
            ),
            kind="stat",
        ),
        Panel(
            "Customers in state",
            "Contexts held in memory (hot) and in the cold tier (idle, on disk).",
            "short",
            (
                Query("sum(wayfinder_customers_in_state)", "hot"),
                Query("sum(wayfinder_cold_customers)", "cold"),
            ),
        ),
        Panel(
            "Cold tier",
            "Customers leaving memory and coming back per second, and of those coming "
            "back, those read ahead with their batch's others; the tier's RocksDB files and "
            "the compaction it still owes.",
            "short",
            (
                Query(
                    f"sum by (way) (rate(wayfinder_cold_tier_moves_total[{RATE}]))",
                    "{{way}} /s",
                ),
                Query(
                    f"sum(rate(wayfinder_cold_store_takes_read_ahead[{RATE}]))",
                    "read ahead /s",
                ),
                Query("sum(wayfinder_cold_store_sst_bytes)", "files (bytes)"),
                Query(
                    "sum(wayfinder_cold_store_pending_compaction_bytes)", "compaction owed (bytes)"
                ),
            ),
        ),
        Panel(
            "State size",
            "Bytes of customer state, by process, as its snapshots measure it.",
            "bytes",
            _q("sum by (instance) (wayfinder_state_bytes)", "{{instance}}"),
        ),
        Panel(
            "Duplicates and unsigned records",
            "Redelivered events recognised and ignored; records on the flow's own topics "
            "without the deployment's signature, skipped.",
            "ops",
            (
                Query(f"sum(rate(wayfinder_duplicate_events_total[{RATE}]))", "duplicates"),
                Query(
                    f"sum(rate(wayfinder_unsigned_records_total[{RATE}])) or vector(0)",
                    "unsigned",
                ),
            ),
        ),
    ],
)

DASHBOARDS = {
    "overview": OVERVIEW,
    "journeys": JOURNEYS,
    "decisions": DECISIONS,
    "reliability": RELIABILITY,
}


def build(name: str) -> dict[str, object]:
    """The JSON of one dashboard, as Grafana's provisioning reads it."""
    title, description, panels = DASHBOARDS[name]
    board = (
        dashboard.Dashboard(title)
        .uid(f"wayfinder-{name}")
        .description(description)
        .tags(["wayfinder"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    if name == "journeys":
        board = board.with_variable(
            dashboard.QueryVariable("journey")
            .label("Journey")
            .datasource(DATASOURCE)
            .query("label_values(wayfinder_journey_transitions_total, journey)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
    for number, panel in enumerate(panels, start=1):
        board = board.with_panel(_panel(panel, number))
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def _panel(panel: Panel, number: int) -> timeseries.Panel | stat.Panel | bargauge.Panel:
    built: timeseries.Panel | stat.Panel | bargauge.Panel
    if panel.kind == "stat":
        built = stat.Panel()
    elif panel.kind == "bargauge":
        built = bargauge.Panel()
    else:
        built = timeseries.Panel()
    built = (
        built.id(number)
        .title(panel.title)
        .description(panel.description)
        .unit(panel.unit)
        .datasource(DATASOURCE)
        .span(panel.width)
        .height(8)
    )
    for ref, query in zip("ABCDEFGH", panel.queries, strict=False):
        built = built.with_target(
            prometheus.Dataquery().ref_id(ref).expr(query.expr).legend_format(query.legend)
        )
    return built


def rendered(name: str) -> str:
    return json.dumps(build(name), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name in DASHBOARDS:
        path = HERE / f"{name}.json"
        text = rendered(name)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
