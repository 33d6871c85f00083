"""The metrics operators read agree with what the flow wrote: journeys by journey and
kind, open journeys, time to goal, suppressions by policy, the uplift's groups, the
latency from ingest to action, events by family and channel, the state held.

Prometheus's registry is process-global: each figure is the change over one run."""

import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import zstandard
from prometheus_client import REGISTRY

from flows.dataflow import held_state
from flows.dataflow.clock import EventClock
from flows.dataflow.decode import AheadLimit, make_decoder, unpack_raw
from flows.dataflow.sources import RawRecord
from operators import basis_packing
from schemas.codec import DEFAULT_MAX_EVENT_BYTES, encode
from tests.flow_helpers import ENTRY_POINTS, run_embedded, simulated
from tests.helpers import default_playbook, ev

CUSTOMERS, HOURS, SEED = 200, 24.0, 5
Labels = tuple[tuple[str, str], ...]


def _samples(sample: str) -> dict[Labels, float]:
    """{labels: value} of every sample of this name in the registry."""
    found: dict[Labels, float] = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == sample:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


class _Change:
    """What a run added to each sample of the families asked for."""

    def __init__(self, *samples: str) -> None:
        self._before = {name: _samples(name) for name in samples}

    def __call__(self, sample: str, *by: str) -> dict[str, float]:
        """The changes, summed by the values of the labels `by` (joined with "/")."""
        before = self._before[sample]
        totals: dict[str, float] = {}
        for labels, value in _samples(sample).items():
            change = value - before.get(labels, 0.0)
            if change:
                named = dict(labels)
                key = "/".join(named[label] for label in by)
                totals[key] = totals.get(key, 0.0) + change
        return {key: total for key, total in totals.items() if total}


FAMILIES = (
    "wayfinder_journey_transitions_total",
    "wayfinder_open_journeys",
    "wayfinder_journey_time_to_goal_seconds_count",
    "wayfinder_suppressions_total",
    "wayfinder_goal_completions_total",
    "wayfinder_ingest_to_action_seconds_count",
    "wayfinder_actions_total",
    "wayfinder_events_decoded_total",
    "wayfinder_events_received_total",
    "wayfinder_dead_letters_total",
    "wayfinder_customers_in_state",
    "wayfinder_customer_contexts_created_total",
    "wayfinder_state_bytes",
)


def _records(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    return (json.loads(line) for line in lines)


def test_journey_decision_and_state_metrics_agree_with_the_outputs(entry_point, tmp_path):
    change = _Change(*FAMILIES)
    run = run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), tmp_path / "out")

    transitions = [t for t in _records(run.lines("journeys.jsonl")) if "journey" in t]
    by_journey_kind = Counter(f"{t['journey']}/{t['kind']}" for t in transitions)
    counted = change("wayfinder_journey_transitions_total", "journey", "kind")
    assert counted == dict(by_journey_kind) and by_journey_kind

    # Open now: entered, less what ended (completed, abandoned, merged into a customer).
    opened: Counter[str] = Counter()
    for t in transitions:
        if t["kind"] == "entered":
            opened[t["journey"]] += 1
        elif t["kind"] in ("completed", "abandoned", "merged"):
            opened[t["journey"]] -= 1
    assert change("wayfinder_open_journeys", "journey") == {j: n for j, n in opened.items() if n}

    completed = Counter(t["journey"] for t in transitions if t["kind"] == "completed")
    assert completed
    assert change("wayfinder_journey_time_to_goal_seconds_count", "journey") == dict(completed)
    groups = change("wayfinder_goal_completions_total", "group")
    assert sum(groups.values()) == sum(completed.values()) and groups.get("treated")

    decisions = list(_records(run.lines("decisions.jsonl")))
    policies = Counter(
        c["policy"] for d in decisions for c in d["candidates"] if c["status"] == "suppressed"
    )
    assert len(policies) > 1
    assert change("wayfinder_suppressions_total", "policy") == dict(policies)

    # Every answer to a request is timed from its batch's read; pushed actions too, but
    # for those a timer found (the end of the input's, here), which no batch brought.
    actions = change("wayfinder_actions_total", "kind")
    timed = change("wayfinder_ingest_to_action_seconds_count", "kind")
    assert timed.get("reply", 0) == actions.get("reply", 0)
    assert timed.get("no_action", 0) == actions.get("no_action", 0)
    assert 0 < timed["sent"] <= actions["sent"]

    # Each decoded event is counted once, by family and by a channel of the playbook's.
    received = change("wayfinder_events_received_total")[""]
    decoded = change("wayfinder_events_decoded_total", "family")
    assert {"interaction", "identity", "decision_request", "outcome", "loop"} <= set(decoded)
    undecodable = change("wayfinder_dead_letters_total", "reason")
    assert sum(decoded.values()) <= received <= sum(decoded.values()) + sum(undecodable.values())
    channels = set(change("wayfinder_events_decoded_total", "channel"))
    assert channels and channels <= {*default_playbook().channels, "other"}

    # Every context the run made is still held (an embedded run discards none but the
    # erased), and the state's bytes are the snapshots' (taken at every epoch's end).
    created = sum(change("wayfinder_customer_contexts_created_total").values())
    assert 0 < change("wayfinder_customers_in_state")[""] <= created
    assert change("wayfinder_state_bytes")[""] > 1000 * CUSTOMERS


def test_workers_decoding_at_once_count_every_event_once() -> None:
    """A process's workers share one decode step: each batch's counts are its own, so
    no worker's count is lost to another's and none trips on another's (a cluster of
    two workers once stopped on "dictionary changed size during iteration")."""
    playbook = default_playbook()
    clock = EventClock()
    decode = make_decoder(
        DEFAULT_MAX_EVENT_BYTES, unpack_raw, clock, None, AheadLimit(86400.0), playbook.channels
    )
    kinds = [(t, c) for t in ("page_view", "call", "app_open") for c in (*playbook.channels, "fax")]
    batches = [
        [
            RawRecord(encode(ev(t, c, minutes=i, customer=f"c{worker}-{i}")), "test", i)
            for i, (t, c) in enumerate(kinds * 3)
        ]
        for worker in range(4)
    ]
    change = _Change("wayfinder_events_decoded_total")
    failures: list[BaseException] = []

    def work(batch: list[RawRecord]) -> None:
        try:
            for _ in range(ROUNDS):
                decode(batch)
        except BaseException as exc:  # what a worker would stop on
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand over between threads as often as the GIL can
    try:
        workers = [threading.Thread(target=work, args=(batch,)) for batch in batches]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[0]
    decoded = change("wayfinder_events_decoded_total")
    assert decoded[""] == ROUNDS * sum(len(batch) for batch in batches)


ROUNDS = 300


def test_a_worker_thread_keeps_its_share_of_the_gauges_and_its_compressor(
    tmp_path, monkeypatch
) -> None:
    """bytewax lets go of a worker thread's Python state between some of its steps, and
    a `threading.local` with it: kept so, each thread's share of the state gauges was
    made again and again (16 shares for two workers in this run, every one added up at
    each scrape, ever more with uptime), and so was its compressor of decision inputs
    (44, each loading its dictionary). Kept by thread: one each, for the whole run."""
    made: Counter[int] = Counter()
    compressor = zstandard.ZstdCompressor

    def counted(*args: Any, **kwargs: Any) -> zstandard.ZstdCompressor:
        made[threading.get_ident()] += 1
        return compressor(*args, **kwargs)

    monkeypatch.setattr(zstandard, "ZstdCompressor", counted)
    monkeypatch.setattr(basis_packing._PACKERS, "_by_thread", {})  # (none from earlier threads)
    shares = len(held_state._threads())
    run_embedded(ENTRY_POINTS["cluster_main-2thread"], simulated(300, 2.0, 7), tmp_path / "out")
    assert len(held_state._threads()) - shares <= 2  # (a thread's id may be an earlier's)
    assert made and all(n == 1 for n in made.values()) and len(made) <= 2
