"""The flow's Prometheus metrics. Labels are bounded vocabularies, never personal data."""

from collections.abc import Iterable
from typing import Any, get_args

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from schemas.deadletter import DeadLetterReason
from schemas.decision import DecisionOutcome, SuppressionPolicy
from schemas.event import FAMILIES
from schemas.journey import TransitionKind

EVENTS_RECEIVED = Counter(
    "wayfinder_events_received", "Records read from the input, good or bad (loop included)."
)
LOOP_EVENTS = Counter(
    "wayfinder_loop_events",
    "Events Wayfinder wrote to its own events topic and read back (logins' handover "
    "requests and merges, forwards, erasures).",
)
DEAD_LETTERS = Counter(
    "wayfinder_dead_letters", "Records sent to the dead-letter output, by reason.", ["reason"]
)
PRODUCED = Counter(
    "wayfinder_produced_messages", "Messages delivered to Kafka, by topic.", ["topic"]
)
DELIVERY_FAILURES = Counter(
    "wayfinder_delivery_failures",
    "Kafka delivery reports with an error, by error (retried, or dead-lettered when hopeless).",
    ["error"],
)
UNSIGNED_RECORDS = Counter(
    "wayfinder_unsigned_records",
    "Records read back from the flow's own topics (decisions, actions, inputs, intent "
    "changes, model examples) without the deployment's signature, skipped, by topic.",
    ["topic"],
)
DELIVERY_RETRIES = Counter(
    "wayfinder_delivery_retries", "Messages produced again after a failed delivery."
)
DUPLICATE_EVENTS = Counter(
    "wayfinder_duplicate_events", "Events ignored because their id was already folded."
)
CONTEXTS_CREATED = Counter(
    "wayfinder_customer_contexts_created",
    "Contexts created: known customers, or anonymous visitors not yet identified.",
    ["kind"],
)
ERASURES = Counter("wayfinder_erasures", "Customers erased on request.")
DECISIONS = Counter("wayfinder_decisions", "Decisions made, by outcome.", ["outcome"])
EVENTS_DECODED = Counter(
    "wayfinder_events_decoded",
    "Events decoded, by type family (interaction, identity, consent, outcome, "
    "decision_request, erasure, loop) and channel (the playbook's; `other` for the rest).",
    ["family", "channel"],
)
TRANSITIONS = Counter(
    "wayfinder_journey_transitions",
    "Journey transitions, by journey and kind.",
    ["journey", "kind"],
)
OPEN_JOURNEYS = Gauge(
    "wayfinder_open_journeys",
    "Journeys open in this process's customer state, by journey.",
    ["journey"],
)
TIME_TO_GOAL = Histogram(
    "wayfinder_journey_time_to_goal_seconds",
    "From a journey's start to its goal (event time), by journey: its completions.",
    ["journey"],
    buckets=(60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
)
SUPPRESSIONS = Counter(
    "wayfinder_suppressions",
    "Candidate actions suppressed, by the policy that held them back.",
    ["policy"],
)
GOALS_BY_GROUP = Counter(
    "wayfinder_goal_completions",
    "Journeys completed, by the customer's group: treated, or holdout (never contacted). "
    "With the decisions by outcome (sent, holdout), the uplift the actions make.",
    ["group"],
)
CUSTOMERS_IN_STATE = Gauge(
    "wayfinder_customers_in_state",
    "Contexts (customers and visitors, not erasures' tombstones) in this process's state.",
)
COLD_CUSTOMERS = Gauge(
    "wayfinder_cold_customers",
    "Customers (and visitors) held out of memory in this process's cold tier: idle longer "
    "than WAYFINDER_COLD_AFTER.",
)
COLD_MOVES = Counter(
    "wayfinder_cold_tier_moves",
    "Customers moved by the cold tier: left (idle, out of memory) or returned (a record, "
    "a deadline due, the input's end).",
    ["way"],
)
COLD_STORE_KEYS = Gauge(
    "wayfinder_cold_store_estimated_keys", "RocksDB's estimate of the cold tier's entries."
)
COLD_STORE_SST_BYTES = Gauge(
    "wayfinder_cold_store_sst_bytes", "Bytes of the cold tier's RocksDB table files on disk."
)
COLD_STORE_MEMTABLE_BYTES = Gauge(
    "wayfinder_cold_store_memtable_bytes", "Bytes of the cold tier's RocksDB memtables."
)
COLD_STORE_CACHE_BYTES = Gauge(
    "wayfinder_cold_store_block_cache_bytes",
    "Bytes the cold tier's RocksDB block cache holds (at most WAYFINDER_COLD_CACHE).",
)
COLD_STORE_PENDING_BYTES = Gauge(
    "wayfinder_cold_store_pending_compaction_bytes",
    "Bytes RocksDB estimates its compactions of the cold tier still have to rewrite.",
)
COLD_STORE_TAKEN_AHEAD = Gauge(
    "wayfinder_cold_store_takes_read_ahead",
    "Customers back from the cold tier since the process started whose context was read "
    "ahead, with their batch's others in one lookup (of wayfinder_cold_tier_moves_total "
    '{way="returned"}; the rest were looked up alone).',
)
STATE_BYTES = Gauge(
    "wayfinder_state_bytes",
    "Bytes of this process's customer state, as its latest snapshots measure it.",
)
SNAPSHOTS = Counter(
    "wayfinder_snapshots", "Customer contexts serialised for bytewax's epoch snapshots."
)
SNAPSHOT_SECONDS = Counter(
    "wayfinder_snapshot_seconds",
    "Time spent serialising customer contexts for snapshots (per snapshot: divided by "
    "wayfinder_snapshots_total).",
)
LAST_SNAPSHOT = Gauge(
    "wayfinder_last_snapshot_timestamp_seconds",
    "When this process last snapshotted a customer's context (Unix time).",
)
RESUMES = Counter(
    "wayfinder_resumes",
    "Runs of this process that resumed from a recovery folder's snapshots (after a crash, a "
    "stop or a redeploy).",
)
AUDIENCE_CHANGES = Counter("wayfinder_audience_changes", "Segment entries and exits.", ["change"])
JOURNEY_CASES = Gauge(
    "wayfinder_journey_finished_cases",
    "Finished journeys folded into the map, by journey.",
    ["journey"],
)
JOURNEY_GOAL_RATE = Gauge(
    "wayfinder_journey_goal_rate", "Share of finished journeys that reached the goal.", ["journey"]
)
MODEL_EXAMPLES = Gauge("wayfinder_model_examples", "Examples a model has learned.", ["model"])
MODEL_ACCURACY = Gauge(
    "wayfinder_model_accuracy", "Prequential accuracy (predicted before learning).", ["model"]
)
MODEL_LOSS = Gauge("wayfinder_model_loss", "Mean online loss (log loss, or 0-1).", ["model"])
MODEL_DRIFTS = Gauge("wayfinder_model_drifts", "Drifts detected (ADWIN on errors).", ["model"])
MODEL_REFUSED = Gauge(
    "wayfinder_model_examples_refused",
    "Examples in models.examples a model could not learn (not of its shape): numbered, skipped.",
    ["model"],
)
INTENT_CHANGES = Counter("wayfinder_intent_changes", "Intent transitions published.")
INPUT_EVENT_TIME = Gauge(
    "wayfinder_input_event_time_seconds",
    "Event time reached by each embedded input partition (how far a replay has got).",
    ["partition"],
)
FRESHNESS = Gauge(
    "wayfinder_freshness_seconds",
    "Wall clock minus this process's watermark: how far behind real time its view of "
    "event time is (a replay: how far back the replayed day is; NaN before any event).",
)
INPUT_CAUGHT_UP = Gauge(
    "wayfinder_input_caught_up",
    "1 once this process has read a partition of the events topic to its end since it "
    "started (then it stays 1: what was there at the start has been read).",
    ["topic", "partition"],
)
INPUT_RECORDS_LOST = Counter(
    "wayfinder_input_records_lost",
    "Records of the events topic deleted (retention, a deletion of records) before this "
    "process read them: it reads on from the earliest the topic still holds.",
    ["topic"],
)
INPUT_PARTITIONS_UNREAD = Gauge(
    "wayfinder_input_partitions_unread",
    "Partitions added to the events topic since the flow started that its readers cannot "
    "take (WAYFINDER_KAFKA_ORDERED=false reads each partition on a reader fixed when the "
    "flow was built): the process needs a restart, and its /livez fails until then.",
    ["topic"],
)
CONSUMERS_REPLACED = Counter(
    "wayfinder_consumers_replaced",
    "Kafka consumers given up and opened anew at their reader's own offsets, by topic (the "
    "events input, the models replica, a cluster's balance): polled all along, one brought "
    "nothing for three Kafka timeouts while the broker said its partition held more (a "
    "client that did not come back after a broker outage).",
    ["topic"],
)
CONSUMER_STALLED = Gauge(
    "wayfinder_consumer_stalled",
    "Partitions of a topic that a consumer opened anew still does not read while the "
    "broker says they hold more: the process needs a restart (it resumes from its "
    "snapshots), and its /livez fails until then.",
    ["topic"],
)
INGEST_TO_ACTION = Histogram(
    "wayfinder_ingest_to_action_seconds",
    "From the batch that held an action's trigger being read to the action being emitted "
    "(wall clock), by kind: sent; reply and no_action are the answers to decision "
    "requests (request to reply).",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
KAFKA_BROKERS = Gauge(
    "wayfinder_kafka_brokers_connected",
    "Brokers of the Kafka cluster the input's consumers are connected to, by librdkafka's "
    "statistics every second; 0 while the output or a learner waits on a cluster that "
    "answers nothing (0: unreachable; NaN: no statistics yet).",
)
KAFKA_BROKERS.set(float("nan"))
ACTIONS = Counter(
    "wayfinder_actions",
    "Actions emitted, by channel, action and kind: sent (pushed), reply (an answer to a "
    "decision request) or no_action (an answer that there is nothing to do).",
    ["channel", "action", "kind"],
)
EVENT_TO_ACTION = Histogram(
    "wayfinder_event_to_action_seconds",
    "From the event time of what an action answers (its trigger) to the action leaving the "
    "flow (wall clock), by kind (sent, reply, no_action). Live: the flow's reaction time; a "
    "replay: how far back the replayed events are.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
MODEL_PUBLISHED = Gauge(
    "wayfinder_model_examples_published",
    "Examples of a model numbered and published to models.examples (set by the process whose "
    "learner step owns the model): the version every replica is heading for.",
    ["model"],
)
MODEL_REPLICA_VERSION = Gauge(
    "wayfinder_model_replica_version",
    "Examples this process's model replica has applied, in number order: the version its "
    "decisions are made with.",
    ["model"],
)
MODEL_REPLICA_STOPPED = Gauge(
    "wayfinder_model_replica_stopped",
    "1 once this process's model replica stopped following models.examples on an error "
    "(0 while it follows, or with no replica): the process then decides with models that "
    "learn nothing more from the others, so its /livez fails and it is restarted.",
)
MODEL_REPLICA_LAG = Gauge(
    "wayfinder_model_replica_lag_seconds",
    "Seconds from a batch of examples being published (its Kafka timestamp) to this "
    "process's replica applying it, for the last batch applied.",
    ["model"],
)


def start_at_zero(journeys: Iterable[str], channels: Iterable[str]) -> None:
    """Create at 0 the series whose label values are known before anything happens (the
    playbook's journeys and channels, the closed vocabularies), as Prometheus advises: a
    series that appears with its first event loses that event to `rate` and `increase`,
    and a panel of a rare one shows nothing until it happens."""
    for outcome in get_args(DecisionOutcome):
        DECISIONS.labels(outcome)
    for policy in get_args(SuppressionPolicy):
        SUPPRESSIONS.labels(policy)
    for reason in get_args(DeadLetterReason):
        DEAD_LETTERS.labels(reason)
    for kind in ("sent", "reply", "no_action"):
        EVENT_TO_ACTION.labels(kind)
        INGEST_TO_ACTION.labels(kind)
    for group in ("treated", "holdout"):
        GOALS_BY_GROUP.labels(group)
    for journey in journeys:
        OPEN_JOURNEYS.labels(journey)
        TIME_TO_GOAL.labels(journey)
        for transition in get_args(TransitionKind):
            TRANSITIONS.labels(journey, transition)
    for family in FAMILIES:
        for channel in (*channels, "other"):
            EVENTS_DECODED.labels(family, channel)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of a counter sample (0 when it has never been touched)."""
    return REGISTRY.get_sample_value(name + "_total", labels or {}) or 0.0


def gauge_value(name: str) -> float:
    """Current value of a gauge without labels (0 when never set)."""
    return REGISTRY.get_sample_value(name) or 0.0


def samples_by_label(
    name: str, label: str, where: dict[str, str] | None = None
) -> dict[str, float]:
    """{label value: count} for one labelled counter, summed over other labels (only the
    samples whose labels include `where`)."""
    totals: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if metric.name != name:
            continue
        for s in metric.samples:
            if where is not None and any(s.labels.get(k) != v for k, v in where.items()):
                continue
            if s.name == name + "_total":
                key = s.labels[label]
                totals[key] = totals.get(key, 0.0) + s.value
    return totals


def low_watermark(name: str) -> float | None:
    """The smallest value of a gauge over its label sets (None when never set)."""
    values = [
        s.value for metric in REGISTRY.collect() if metric.name == name for s in metric.samples
    ]
    return min(values) if values else None


class Children:
    """A labelled metric's children, bound once for each set of labels (prometheus'
    own `labels` takes a lock and checks the names each time)."""

    __slots__ = ("_bound", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._bound: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._bound.get(labels)
        if child is None:
            child = self._bound[labels] = self._metric.labels(*labels)
        return child
