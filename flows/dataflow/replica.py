"""Each process's replica of the models, following the numbered example log.

On Kafka the learner step numbers every example and publishes it to
`models.examples` (one partition: one order) (`flows.dataflow.learner`). Every
process keeps its own `ModelSet`: the process whose learner numbered a batch applies
it at once (`learned_here`: on one process, what each decision asked is the same
every run); every other batch comes from a follower, a daemon thread with a consumer
assigned to that partition (no group is joined, no offset committed). Each model's
batches are applied strictly in number order, whoever offers them. A number
already applied (a message delivered twice) is skipped; a gap (a
message that arrived before the one it follows) is waited at, never skipped. So the
replica's `intent@N` is the model that learned examples 1..N of the log, which is
what `wayfinder rerun` rebuilds for a decision that recorded it.

At start the replica catches up with the log's end as of then before the flow
decides anything (as Kafka Streams restores a store before its tasks run), within
WAYFINDER_MODELS_CATCH_UP, and says so in one line. A process that resumes from
snapshots learns only what its learners had learned by then (`ceilings`); the rest of
the log waits until the replay brings each example again (`learner.NumberingLogic`),
so what is decided again is decided with the same models. Then it follows while the
flow runs, holding the models' write lock for one message at a time (customer steps
hold the read lock, many at once). Gauges: the version each model decides with, and
the lag from a batch's publication (its Kafka timestamp) to its being applied here.
"""

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from statistics import median, quantiles

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from flows.dataflow.kafka_reach import waiting_on_the_cluster
from flows.runtime import metrics
from flows.runtime.consumer_stall import StallWatch, close_within
from flows.runtime.kafka_metadata import end_offset, transient
from flows.runtime.settings import KafkaSettings, kafka_timeout_seconds
from flows.runtime.signature import RecordSignature
from operators.models import ModelSet
from schemas.learning import LearnedExamples
from schemas.topics import MODEL_EXAMPLES

logger = logging.getLogger(__name__)

#: Messages taken at once at most, and how long a poll waits for one (the stop is seen
#: as often).
_BATCH = 500
_POLL_S = 0.1
#: How long the follower waits for its consumer to close as it ends.
_CLOSE_S = 5.0
#: How far beyond a model's last learned example a batch may start and wait for the
#: ones before it (a learner's batches come in order, give or take a crash's holes).
_AHEAD_AT_MOST = 1_000_000
#: How long a resumed replica holds examples back once the replay stops bringing them.
_HELD_IDLE_S = 60.0
#: How long a model's next example may be missing before the replica says so.
_GAP_SAID_AFTER_S = 30.0
#: Publication-to-applied lags kept for the summary at exit (the latest ones).
_LAGS_KEPT = 100_000

_decode = msgspec.json.Decoder(LearnedExamples).decode


class ModelReplica:
    """This process's models, learned from `models.examples` (a fresh `ModelSet`).

    `start` catches up and leaves the follower running; `published_after` is what a
    learner step that starts reads of the log (`flows.dataflow.learner.ExampleLog`).
    """

    def __init__(
        self,
        models: ModelSet,
        settings: KafkaSettings,
        signature: RecordSignature,
        ceilings: dict[str, int] | None = None,
    ) -> None:
        """`signature`: the deployment's, which every batch of the log carries (one
        that does not is not learned from). `ceilings`: when the process resumes from
        snapshots, the last number of each model that its learner had at the snapshot
        (`learner.resume_ceilings`); what the log holds after it is held back until the
        replay brings it again."""
        self.models = models
        self._signature = signature
        self.topic = settings.topic(MODEL_EXAMPLES)
        self._config = {
            "bootstrap.servers": settings.bootstrap_servers,
            # Required by the client; never joined (assign) nor committed to.
            "group.id": f"{settings.group}.models-replica",
            "enable.auto.commit": "false",
            "enable.partition.eof": "false",
            **settings.librdkafka_config(),
        }
        #: Where the log's end is asked when the follower's consumer brings nothing.
        self._admin_config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": settings.bootstrap_servers,
            **settings.librdkafka_config(),
        }
        self._timeout = kafka_timeout_seconds()
        #: The follower's consumer now (it opens one anew that stopped reading).
        self._following: Consumer | None = None
        #: Guards what the follower shares with other threads: position, index.
        self._progress = threading.Condition()
        #: The next offset the follower reads.
        self.position = 0
        #: Per model, (last number, offset) of each message read: where a tail starts.
        self._index: dict[str, list[tuple[int, int]]] = {}
        self._in_order = InOrder(models, ceilings)
        #: Lags (seconds) of the batches applied once caught up: the service's figure.
        self.lags: deque[float] = deque(maxlen=_LAGS_KEPT)
        self._live = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors_said: set[int] = set()
        #: Per model, the refused examples already said.
        self._refused: dict[str, int] = {}
        #: Per model waiting at a gap: (the number missing, since when; None: said).
        self._gaps: dict[str, tuple[int, float | None]] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self, catch_up_timeout: float) -> bool:
        """Start following the log, and wait until the replica has applied it up to its
        end as of now (at most `catch_up_timeout` seconds): whether it got there."""
        started = time.monotonic()
        consumer = Consumer(self._config)
        end = self._end(consumer)
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._following = consumer
        stall = StallWatch(AdminClient(self._admin_config), self.topic)
        self._thread = threading.Thread(
            target=_follow,
            args=(weakref.ref(self), consumer, self._stop, stall),
            name="wayfinder-models-replica",
            daemon=True,
        )
        metrics.MODEL_REPLICA_STOPPED.set(0)
        self._thread.start()
        _REPLICAS.add(self)
        reached = self.wait_for(end, catch_up_timeout)
        self._in_order.hold_from_now()
        self._live = True
        elapsed = time.monotonic() - started
        if reached:
            held = self._in_order.held()
            logger.info(
                "models replica caught up with %s: %d examples applied (%s), offset %d, "
                "in %.1f s%s",
                self.topic,
                self.applied(),
                self.models.version(),
                end,
                elapsed,
                f"; {held} examples after the snapshot held until the replay learns them again"
                if held
                else "",
            )
        else:
            logger.warning(
                "models replica: %s read to offset %d of %d within %.0f s "
                "(WAYFINDER_MODELS_CATCH_UP); deciding with %s while it reads the rest",
                self.topic,
                self.position,
                end,
                catch_up_timeout,
                self.models.version(),
            )
        return reached

    def read_to(self, _partition: int) -> int:
        """The offset the follower has read the log up to."""
        return self.position

    def wait_for(self, offset: int, timeout: float) -> bool:
        """Wait until the follower has read (and applied what it can of) the log up to
        `offset`; whether it did within `timeout` seconds."""
        with self._progress:
            return self._progress.wait_for(lambda: self.position >= offset, timeout)

    def close(self, drain_timeout: float = 0.0) -> None:
        """Stop following; with `drain_timeout`, first read to the log's end as of now
        (so a bounded run's replica ends with every example of it). Logs one line."""
        if self._thread is None or self._stop.is_set():
            return
        for name, published in self._in_order.release_all():
            self._applied(name, published)
        if drain_timeout > 0:
            # (A consumer of its own: the follower's is busy in its thread.)
            consumer = Consumer(self._config)
            try:
                with contextlib.suppress(KafkaException):  # gone: stop where it is
                    self.wait_for(self._end(consumer, drain_timeout), drain_timeout)
            finally:
                consumer.close()
        self._stop.set()
        self._thread.join(timeout=5)
        logger.info(
            "models replica stops with %s (%d examples, read to offset %d of %s; "
            "%d duplicates skipped, %d batches numbered far beyond the log dropped); "
            "lag from publication to applied: %s",
            self.models.version(),
            self.applied(),
            self.position,
            self.topic,
            self._in_order.duplicates,
            self._in_order.beyond,
            self.lag_summary() or "no batch applied after the catch-up",
        )

    # ------------------------------------------------------------------ what it knows

    def applied(self) -> int:
        """Examples applied, all models together."""
        return sum(model.record.learned for model in self.models.models.values())

    def versions(self) -> dict[str, int]:
        """{model: examples applied}: the versions this process decides with now."""
        with self.models.lock.read():
            return {name: model.record.learned for name, model in self.models.models.items()}

    def lag_summary(self) -> dict[str, float]:
        """Publication-to-applied lag of the batches applied once caught up, in
        milliseconds: {batches, median_ms, p95_ms, max_ms} (empty when none)."""
        lags = list(self.lags)
        if not lags:
            return {}
        p95 = quantiles(lags, n=20)[-1] if len(lags) > 1 else lags[0]
        return {
            "batches": len(lags),
            "median_ms": round(median(lags) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1),
            "max_ms": round(max(lags) * 1000, 1),
        }

    def learned_here(self, model: str, batches: list[LearnedExamples], ceiling: int | None) -> None:
        """Batches this process's learner numbered, applied now (in its worker's thread),
        up to `ceiling` (the learner's: what the replay has brought again)."""
        if model not in self.models.models:
            return
        now = time.time()
        for applied, at in self._in_order.hold(model, ceiling):
            self._applied(applied, at)
        for learned in batches:
            for applied, at in self._in_order.offer(learned, now):
                self._applied(applied, at)

    def holds(self, model: str) -> bool:
        """Whether `model` is held back at a ceiling (a resumed process)."""
        return self._in_order.holds(model)

    def published_after(self, model: str, count: int) -> dict[int, str]:
        """{number: example id} of `model`'s examples in the log numbered after `count`
        (what a learner step that starts must not publish again). Reads the log from
        the first message that holds one (the follower's index) to its end now. A
        broker that stops answering meanwhile is waited for, as `_end_once_reachable`
        waits: the learner cannot tell what is already published without the rest, and
        giving up would stop the flow."""
        with self._progress:
            starts = [offset for last, offset in self._index.get(model, ()) if last > count]
            start = min(starts, default=self.position)
        consumer = Consumer(self._config)
        try:
            end = self._end_once_reachable(consumer)
            if start >= end:
                return {}
            part = TopicPartition(self.topic, 0, start)
            consumer.assign([part])
            key = model.encode()
            found: dict[int, str] = {}
            reached, moved, waited, said = start, time.monotonic(), 0.0, "no error"
            with waiting_on_the_cluster(lambda: waited > 0):
                while reached < end:
                    before = reached
                    for msg in consumer.consume(_BATCH, _POLL_S):
                        error = msg.error()
                        if error is not None:
                            said = error.str()  # (librdkafka asks again by itself)
                            continue
                        reached = max(reached, (msg.offset() or 0) + 1)
                        value = msg.value()
                        if msg.key() != key or value is None or not self._signed(msg, value):
                            continue
                        learned = _decode(value)
                        for number, example in enumerate(learned.examples, start=learned.first):
                            if number > count:
                                found[number] = example.example_id
                    # (past a transaction's markers too, which no message reaches)
                    reached = max(reached, consumer.position([part])[0].offset)
                    now = time.monotonic()
                    if reached > before:
                        moved, waited = now, 0.0
                    elif now - moved >= self._timeout:
                        moved = now
                        waited += self._timeout
                        logger.warning(
                            "%s: read to offset %d of %d, nothing more in %.0f s (%s); "
                            "waiting for the broker",
                            self.topic,
                            reached,
                            end,
                            waited,
                            said,
                        )
            return found
        finally:
            consumer.close()

    # ------------------------------------------------------------------ following

    def _signed(self, msg: Message, value: bytes) -> bool:
        return self._signature.holds(MODEL_EXAMPLES, msg.key(), value, msg.headers())

    def _end_once_reachable(self, consumer: Consumer) -> int:
        """The log's end offset, waiting out a broker that cannot be reached: a learner
        cannot tell what is already published without it, and the flow waits for the
        broker anyway (its input and its outputs); giving up would stop the flow. Once
        an ask has failed, the process reaches no broker until one answers (the worker
        thread polls no input meanwhile: `kafka_reach`)."""
        waited = 0.0
        with waiting_on_the_cluster(lambda: waited > 0):
            while True:
                try:
                    return self._end(consumer)
                except KafkaException as exc:
                    if not transient(exc):
                        raise
                    waited += self._timeout
                    logger.warning(
                        "%s: no end offset after %.0f s (%s); waiting for the broker",
                        self.topic,
                        waited,
                        exc,
                    )

    def _end(self, consumer: Consumer, timeout: float | None = None) -> int:
        """The log's end offset now (0 when the topic is not there yet)."""
        return end_offset(consumer, self.topic, 0, timeout or self._timeout)

    def _take(self, messages: list[Message], reached: int = -1) -> None:
        """Apply what the follower read (in the follower's thread); `reached`: where its
        consumer is now, past a transaction's markers too, which no message reaches."""
        read: list[tuple[str, int, int]] = []
        position = None
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._say_error(error)
                continue
            offset = msg.offset() or 0
            position = offset + 1
            value = msg.value()
            if value is None:
                continue
            if not self._signed(msg, value):
                metrics.UNSIGNED_RECORDS.labels(MODEL_EXAMPLES).inc()
                logger.warning(
                    "%s offset %d: without this deployment's signature (written by another "
                    "producer, or under another WAYFINDER_STATE_KEY_SECRET); not learned",
                    self.topic,
                    offset,
                )
                continue
            try:
                learned = _decode(value)
            except msgspec.DecodeError:
                logger.warning("%s offset %d: not a batch of examples; skipped", self.topic, offset)
                continue
            if not learned.examples:
                continue
            name = learned.examples[0].model
            if name not in self.models.models:
                logger.warning("%s offset %d: no model %r here; skipped", self.topic, offset, name)
                continue
            read.append((name, learned.first + len(learned.examples) - 1, offset))
            _kind, stamp = msg.timestamp()
            published = stamp / 1000 if stamp > 0 else time.time()
            for applied, at in self._in_order.offer(learned, published):
                self._applied(applied, at)
        self._end_idle_hold()
        self._say_gaps()
        position = max(position or 0, reached)
        if position <= self.position:
            return
        with self._progress:
            for name, last, offset in read:
                self._index.setdefault(name, []).append((last, offset))
            self.position = position
            self._progress.notify_all()

    def _applied(self, name: str, published: float) -> None:
        """A batch of `name`'s examples, published at `published`, has been applied."""
        lag = max(time.time() - published, 0.0)
        if self._live:
            self.lags.append(lag)
        record = self.models.models[name].record
        if record.refused > self._refused.get(name, 0):
            logger.warning(
                "models replica: %s refused %d examples of %s so far (not of its shape: "
                "written by something other than a learner step); numbered, not learned",
                name,
                record.refused,
                self.topic,
            )
            self._refused[name] = record.refused
            metrics.MODEL_REFUSED.labels(name).set(record.refused)
        metrics.MODEL_REPLICA_VERSION.labels(name).set(record.learned)
        metrics.MODEL_REPLICA_LAG.labels(name).set(lag)
        metrics.MODEL_EXAMPLES.labels(name).set(record.learned)
        metrics.MODEL_ACCURACY.labels(name).set(record.accuracy)
        metrics.MODEL_LOSS.labels(name).set(record.loss)
        metrics.MODEL_DRIFTS.labels(name).set(record.drifts)

    def _end_idle_hold(self) -> None:
        """Hold models no more once the replay has brought nothing back for a while (it
        brings no more: the run went on elsewhere, or its learner is on no worker here)."""
        released = self._in_order.release_all(idle=_HELD_IDLE_S)
        if released:
            logger.warning(
                "models replica: the replay brought no held example again in %.0f s; "
                "deciding with the whole log (%s)",
                _HELD_IDLE_S,
                self.models.version(),
            )
        for name, published in released:
            self._applied(name, published)

    def _say_gaps(self) -> None:
        """Warn (once a gap) when a model's next example has been missing for long: its
        later ones wait, and so does every decision's view of that model."""
        now = time.monotonic()
        for name, waiting in self._in_order.waiting_now().items():
            if not waiting:
                self._gaps.pop(name, None)
                continue
            missing = self.models.models[name].record.learned + 1
            seen, since = self._gaps.setdefault(name, (missing, now))
            if seen != missing:
                self._gaps[name] = (missing, now)
            elif since is not None and now - since > _GAP_SAID_AFTER_S:
                self._gaps[name] = (missing, None)  # said
                logger.warning(
                    "models replica: %s example %d has not come in %.0f s; the %d examples "
                    "after it in %s wait for it",
                    name,
                    missing,
                    now - since,
                    waiting,
                    self.topic,
                )

    def _say_error(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF or code in self._errors_said:
            return
        self._errors_said.add(code)  # once per kind: librdkafka retries what it can
        logger.warning("models replica, reading %s: %s", self.topic, error.str())


class InOrder:
    """Feeds a model set the numbered batches of the log, in whatever order they come:
    each model's examples are learned strictly in number order, each number once. A
    batch that comes before the one it follows waits for it (a gap is never skipped);
    examples whose number was learned already are skipped (a batch delivered twice).
    A model may be held at a ceiling (a resumed process: what it had learned at its
    snapshot); what is above it waits until the ceiling is raised. Each batch is
    learned under the set's write lock, alone."""

    def __init__(self, models: ModelSet, ceilings: dict[str, int] | None = None) -> None:
        self.models = models
        #: The follower and this process's learner both offer batches.
        self._lock = threading.Lock()
        #: Per model, batches waiting for an earlier one, by first number: (batch, when
        #: it was published).
        self.waiting: dict[str, dict[int, tuple[LearnedExamples, float]]] = {}
        #: Per held model, the last number that may be learned.
        self.ceilings = {n: c for n, c in (ceilings or {}).items() if n in models.models}
        #: Per held model, when its ceiling was last raised (or the hold began).
        self._raised = dict.fromkeys(self.ceilings, time.monotonic())
        #: Examples skipped because their number had been learned already.
        self.duplicates = 0
        #: Batches dropped because they started too far beyond what was learned.
        self.beyond = 0

    def offer(self, learned: LearnedExamples, published: float) -> list[tuple[str, float]]:
        """Take one batch (of one model, known to the set); (model, publication time)
        of each batch learned now, this one and those that waited for it."""
        if not learned.examples:
            return []
        name = learned.examples[0].model
        with self._lock:
            applied = self.models.models[name].record.learned
            if learned.first > applied + _AHEAD_AT_MOST:
                self.beyond += 1  # not from a learner step: it would wait for ever
                return []
            _wait(self.waiting.setdefault(name, {}), learned, published)
            return self._learn(name)

    def hold(self, name: str, ceiling: int | None) -> list[tuple[str, float]]:
        """Raise a held model's ceiling (None: hold it no more); what that lets it learn.
        A model not held stays so."""
        with self._lock:
            if name not in self.ceilings:
                return []
            self._raised[name] = time.monotonic()
            if ceiling is None:
                del self.ceilings[name]
            else:
                self.ceilings[name] = max(self.ceilings[name], ceiling)
            return self._learn(name)

    def release_all(self, idle: float = 0.0) -> list[tuple[str, float]]:
        """Hold no model (with `idle`: none whose ceiling has not been raised for that
        many seconds): what each can learn now."""
        with self._lock:
            now = time.monotonic()
            idle_ones = [n for n in self.ceilings if now - self._raised[n] >= idle]
            for name in idle_ones:
                del self.ceilings[name]
            return [done for name in idle_ones for done in self._learn(name)]

    def holds(self, name: str) -> bool:
        with self._lock:
            return name in self.ceilings

    def hold_from_now(self) -> None:
        """Count a hold's idle time from now (the flow starts: the replay begins)."""
        with self._lock:
            self._raised = dict.fromkeys(self.ceilings, time.monotonic())

    def waiting_now(self) -> dict[str, int]:
        """{model: examples waiting for an earlier one}, read under the lock: the learner
        offers batches while the follower asks."""
        with self._lock:
            return {
                name: sum(len(batch.examples) for batch, _at in waiting.values())
                for name, waiting in self.waiting.items()
            }

    def held(self) -> int:
        """Examples read but held above a ceiling."""
        with self._lock:
            return sum(
                len(batch.examples)
                for name in self.ceilings
                for batch, _at in self.waiting.get(name, {}).values()
            )

    def _learn(self, name: str) -> list[tuple[str, float]]:
        waiting = self.waiting.setdefault(name, {})
        model = self.models.models[name]
        ceiling = self.ceilings.get(name)
        done: list[tuple[str, float]] = []
        while waiting:
            first = min(waiting)
            applied = model.record.learned
            if first > applied + 1:
                break  # a gap: the batch that fills it has not come yet
            if ceiling is not None and applied >= ceiling:
                break  # held: the replay has not brought the next one again
            batch, at = waiting.pop(first)
            examples = batch.examples[applied + 1 - first :]
            self.duplicates += len(batch.examples) - len(examples)
            if ceiling is not None and applied + len(examples) > ceiling:
                rest = ceiling - applied
                _wait(waiting, LearnedExamples(ceiling + 1, examples[rest:]), at)
                examples = examples[:rest]
            if not examples:
                continue
            with self.models.lock.write():
                for example in examples:
                    model.learn(example)
            done.append((name, at))
        return done


def _wait(
    waiting: dict[int, tuple[LearnedExamples, float]], batch: LearnedExamples, at: float
) -> None:
    """Keep a batch until it can be learned; of two from the same number (a resumed
    learner may cut its messages elsewhere), the longer."""
    kept = waiting.get(batch.first)
    if kept is None or len(kept[0].examples) < len(batch.examples):
        waiting[batch.first] = (batch, at)


def _follow(
    replica_ref: "weakref.ref[ModelReplica]",
    consumer: Consumer,
    stop: threading.Event,
    stall: StallWatch,
) -> None:
    """The follower's loop. It holds its replica weakly: a flow that is dropped (a test's)
    takes its replica with it, and the follower ends. A consumer that brings nothing
    while the log holds more (`StallWatch`) is opened anew where the follower is."""
    heard = {0: time.monotonic()}
    try:
        while not stop.is_set():
            # Wait for one message, then take what else is there without waiting (a batch
            # waited for would add up to a poll's wait to every example's lag).
            first = consumer.poll(_POLL_S)
            messages = [first, *consumer.consume(_BATCH, 0)] if first is not None else []
            now = time.monotonic()
            if any(msg.error() is None for msg in messages):
                heard[0] = now
            replica = replica_ref()
            if replica is None:
                return
            try:
                reached = consumer.position([TopicPartition(replica.topic, 0)])[0].offset
                replica._take(messages, reached)
            except Exception:  # the follower never dies in silence, nor unseen
                metrics.MODEL_REPLICA_STOPPED.set(1)
                logger.exception(
                    "models replica: a batch from %s failed; the replica follows no more "
                    "(/livez fails: restart the process)",
                    replica.topic,
                )
                raise
            if stall.stalled(now, heard, replica.read_to):
                old, consumer = consumer, Consumer(replica._config)
                consumer.assign([TopicPartition(replica.topic, 0, replica.position)])
                replica._following = consumer
                close_within(old, 0.0, stall.topic)
            del replica
    finally:
        close_within(consumer, _CLOSE_S, stall.topic)


#: The replicas of this process still following, for the line each says at exit.
_REPLICAS: "weakref.WeakSet[ModelReplica]" = weakref.WeakSet()
#: How long a replica reads at exit to end with the log's last example.
_DRAIN_AT_EXIT_S = 5.0


def live_replicas() -> list[ModelReplica]:
    """The replicas of this process still following the log."""
    return list(_REPLICAS)


@atexit.register
def _close_at_exit() -> None:
    for replica in live_replicas():
        replica.close(_DRAIN_AT_EXIT_S)
