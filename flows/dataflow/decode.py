"""The decode step: raw records in, keyed events, dead letters and event time out."""

import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from flows.dataflow.clock import EventClock, EventTime
from flows.dataflow.cold_tier import LEAVING, Wake
from flows.dataflow.customer import Keyed, Stamp
from flows.dataflow.epochs import EpochMark
from flows.dataflow.ledger import FlowLedger
from flows.dataflow.sources import RawRecord
from flows.runtime import metrics
from flows.runtime.settings import FAULT_EXIT_CODE, fault_after_events, state_key
from operators.identity import customer_key, visitor_key
from schemas.codec import BadInput, EventDecoder
from schemas.deadletter import DeadLetter, dead_letter
from schemas.event import TYPE_FAMILIES, Event

#: (raw bytes, source, partition, offset, when the broker received it (ms since the epoch,
#: as the message says: made a date only for a dead letter), and for a record the source
#: had to cut: its original size and SHA-256): what a dead letter says of it.
Unpacked = tuple[bytes | None, str, int | None, int | None, int | None, tuple[int, str] | None]
Decoded = tuple[str, Keyed] | DeadLetter | EventTime


class AheadLimit:
    """How far ahead an event's time may be: `max_ahead` seconds past the later of the
    wall clock and the end the input plans to reach (a simulation of the future).

    An event from a clock gone wrong would otherwise move everyone's watermark, and
    every other customer's open journeys would stall and be abandoned against it.
    """

    def __init__(self, max_ahead: float, planned_end: float = float("-inf")) -> None:
        self.max_ahead = max_ahead
        self.planned_end = planned_end

    def not_after(self) -> float:
        return max(time.time(), self.planned_end) + self.max_ahead

    def explain(self, ts: datetime) -> str:
        return (
            f"$.ts {ts.isoformat()} is more than {self.max_ahead:g} s ahead of the clock "
            "(WAYFINDER_MAX_AHEAD)"
        )


def make_decoder(
    max_bytes: int,
    unpack: Callable[[Any], Unpacked],
    clock: EventClock,
    ledger: FlowLedger | None,
    ahead: AheadLimit,
    channels: Iterable[str] = (),
    coming: Callable[[list[str]], object] | None = None,
) -> Callable[[list[Any]], list[Decoded]]:
    """Decode a batch of raw inputs into keyed events or dead letters.

    Batch-wise, so the per-record work is the decode itself. An identify event
    goes to both its keys: the customer folds it, the visitor hands over. Each
    batch also says how far in event time it reached (for the watermark's state).
    Whatever a record holds, it leaves as an event or a dead letter, never an error.
    `channels`: the playbook's, which the count of events by channel names (the others
    are counted as `other`: a label's values stay bounded whatever the input holds).
    `coming`: told the state keys of each batch's customers that it brings to their step
    (the cold tier reads those it holds together: `ColdTier.coming`).
    """
    decoder = EventDecoder(max_bytes)
    by_family = _EventCounts(channels)
    received = metrics.EVENTS_RECEIVED
    dead = metrics.DEAD_LETTERS
    crash_after = fault_after_events()
    seen = [0]
    crash_lock = threading.Lock()
    # Each worker's epoch (its partitions' marks), by thread: not a `threading.local`,
    # which a worker thread loses (`operators.per_thread` says why), and with it the
    # epoch of a batch without a mark.
    epochs: dict[int, int] = {}

    def decode(batch: list[Any]) -> list[Decoded]:
        thread = threading.get_ident()
        if batch and type(batch[0]) is EpochMark:
            epochs[thread] = batch[0].epoch
            batch = batch[1:]
        if crash_after is not None:
            with crash_lock:  # (every worker's events count)
                seen[0] += len(batch)
                due = seen[0] >= crash_after
            if due:
                os._exit(FAULT_EXIT_CODE)  # a crash, on purpose: no clean-up, no flush
        out: list[Decoded] = []
        latest = float("-inf")
        by_part: dict[tuple[str, int], float] = {}  # partitions the clock follows
        bad = extra = special = 0
        not_after = ahead.not_after()
        # Where event time was before the batch, and when it was read.
        stamped: Stamp = (clock.watermark, clock.latest, time.time(), epochs.get(thread, 0))
        counts: dict[tuple[str, str], int] = {}  # this batch's: workers decode at once
        for item in batch:
            kind_of_item = type(item)
            if kind_of_item is Wake:  # the cold tier's, from the input itself
                special += 1
                out.append((item.key, ("", item, stamped)))
                continue
            if kind_of_item is EpochMark:  # (batches taken together)
                special += 1
                epochs[thread] = item.epoch
                stamped = (stamped[0], stamped[1], stamped[2], item.epoch)
                continue
            raw, source, partition, offset, received_ms, cut = unpack(item)
            try:
                if cut is not None:
                    raise BadInput("too_large", f"{cut[0]} bytes, limit {max_bytes}")
                event = decoder.decode(raw)
                ts = event.ts.timestamp()
                if ts > not_after:
                    raise BadInput("too_far_ahead", ahead.explain(event.ts))
            except BadInput as exc:
                dead.labels(exc.reason).inc()
                bad += 1
                size, digest = cut if cut is not None else (None, None)
                out.append(
                    dead_letter(
                        exc.reason,
                        exc.detail,
                        raw,
                        source,
                        size=size,
                        sha256=digest,
                        partition=partition,
                        offset=offset,
                        received_at=_broker_time(received_ms),
                    )
                )
                continue
            latest = max(latest, ts)
            kind = (event.type, event.channel)
            counts[kind] = counts.get(kind, 0) + 1
            if partition is not None and ts > by_part.get((source, partition), float("-inf")):
                by_part[(source, partition)] = ts
            to = event.to
            if to is not None:  # the loop's: for a state it names by pseudonym alone
                out.append((to, ("", event, stamped)))
                continue
            key = customer_key(event)
            out.append((state_key(key), (key, event, stamped)))
            if event.type == "identify":
                visitor = visitor_key(event)
                out.append((state_key(visitor), (visitor, event, stamped)))
                extra += 1
        if by_part:
            for part, ts in by_part.items():
                clock.advance(ts, part)
                out.append(EventTime.of(ts, part))
        elif latest > float("-inf"):
            clock.advance(latest)
            out.append(EventTime(latest))

        received.inc(len(batch) - special)
        by_family.add(counts)
        if latest > float("-inf"):
            clock.resumed_after_end = False  # new input: its end is a new one
        if ledger is not None:
            ledger.started(extra)
            ledger.settled(bad, all_consumers=True)
        if coming is not None:
            coming([item[0] for item in out if type(item) is tuple and _brings(item[1][1])])
        return out

    return decode


def _brings(value: Event | Wake) -> bool:
    """Whether a record brings its customer to their step (a wake that asks them to
    leave does not: it is for a customer in memory, or for nobody)."""
    return type(value) is not Wake or value.kind not in LEAVING


class _EventCounts:
    """Events decoded by type family and channel, added a batch at a time (one increment
    of each labelled child a batch, not one an event). Shared by the process's workers:
    each batch counts in a dict of its own, and the children's cache only grows."""

    def __init__(self, channels: Iterable[str]) -> None:
        self._channels = frozenset(channels)
        self._children: dict[tuple[str, str], Any] = {}

    def add(self, counts: dict[tuple[str, str], int]) -> None:
        for (event_type, channel), count in counts.items():
            labels = (
                TYPE_FAMILIES.get(event_type, "interaction"),
                channel if channel in self._channels else "other",
            )
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = metrics.EVENTS_DECODED.labels(*labels)
            child.inc(count)


def unpack_raw(record: RawRecord) -> Unpacked:
    return record.value, record.source, None, record.position, None, record.cut


def unpack_kafka(msg: Message) -> Unpacked:
    _kind, ts_ms = msg.timestamp()
    return msg.value(), msg.topic() or "", msg.partition(), msg.offset(), ts_ms, None


def _broker_time(ts_ms: int | None) -> datetime | None:
    """A message's timestamp (None: a record that has none): a producer may set any 64-bit
    value (CreateTime), and one that no calendar holds is no reason to stop; the dead
    letter just goes without it."""
    if ts_ms is None or not 0 < ts_ms < _LATEST_MS:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, UTC)


_LATEST_MS = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)
