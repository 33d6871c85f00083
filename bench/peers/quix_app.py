"""Wayfinder's customer step on Quix Streams: the same pure cores, in the runtime a Python
team would otherwise pick, so `make bench` prices Wayfinder's flow runtime (bytewax) and
not its cores.

    events topic ─ admit ──────┐
    loop topic ─── admit_loop ─┴─ concat → group_by(state key) → step → output topic
         ↑                                                           │
         └────────── merges, forwards, erasures of linked devices ───┘

Each event goes to its customer's state (an identify to the visitor's too), keyed as the
flow keys it (the customer's pseudonym), through Quix's own repartition topic. A
customer's context lives in Quix's RocksDB state as snapshot bytes. Examples teach this
process's models (one process: they live in it). Everything else goes to the output topic,
but keys for the key vault, which go to no topic, as in Wayfinder.

The records the step sends round go to a loop topic of this run's own, not back to the
events topic as Wayfinder's flow sends them: appended to a topic read from its beginning,
a login's answer would come back only after the rest of its partition (Wayfinder's
bounded Kafka replay hands them back in rounds instead), and the input would not stay as
it was for the next run. Joining the two inputs (`concat`) turns on Quix's timestamp
alignment, which hands each loop record on right after the record that caused it (it
carries that record's timestamp): the outputs are then the in-process replay's within a
few per cent. Its buffered polling waits up to `consumer_poll_timeout` each time a
partition's buffer runs dry (once a repartitioned record, here): at Quix's default (1 s)
that is a third of the speed, so it is cut to 10 ms. Time moves only with events: Quix
has no per-key timers, so deadlines fire on a customer's next event, as in a replay
without `advance`.

Quix Streams pins confluent-kafka below 2.13 and bytewax needs a newer one, so this runs
in a virtualenv of its own (no bytewax; nothing of `flows.dataflow`):

    PYTHONPATH=. /tmp/vq/bin/python -m bench.peers.quix_app --bootstrap 127.0.0.1:9092 \\
        --events-topic T --output-topic O --expect N
"""

import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import msgspec
import quixstreams
from kafka.admin import KafkaAdminClient
from quixstreams import Application, State
from quixstreams.models import TopicConfig
from quixstreams.models.serializers.json import JSONDeserializer, JSONSerializer

from bench.peers import arguments, report
from flows.runtime.settings import deployment_secret, load_default_playbook, state_key
from operators.customer_step import CustomerStep
from operators.identity import LoopSeal, customer_key, visitor_key
from operators.models import ModelSet
from schemas.audience import Tombstone
from schemas.codec import BadInput, EventDecoder, encode
from schemas.event import Event
from schemas.learning import Example
from state.context import from_snapshot, to_snapshot
from state.key_vault import CustomerKey, InstanceName, KeyDestroyed

#: The state entry (under each customer's key) that holds their context's snapshot.
CONTEXT = "context"
#: How long a poll waits for records (Quix's default: 1 s; see above).
POLL_TIMEOUT = 0.01
#: Seconds without a record after which a run that has not seen --expect events gives up.
IDLE_TIMEOUT = 60.0

#: What the step hands on: (for the loop?, encoded record; None is a Kafka tombstone).
Out = tuple[bool, bytes | None]


class Routed(msgspec.Struct, array_like=True, frozen=True):
    """An event on its way to one state: `key` the customer (or visitor) key it is for,
    empty for a record of the loop (which names its state by pseudonym, `to`)."""

    key: str
    event: Event


def state_of(item: Routed) -> str:
    """The state key (the pseudonym the records name a customer by), as the flow keys."""
    to = item.event.to
    return to if to is not None else state_key(item.key)


class Peer:
    """The cores and the run's counts: the callbacks of the Quix pipeline."""

    def __init__(self, expect: int) -> None:
        playbook = load_default_playbook()
        self.models = ModelSet(playbook)
        self.step = CustomerStep(
            playbook,
            self.models,
            None,
            record_inputs=True,
            seal=LoopSeal(deployment_secret()),
            pseudonym_of=state_key,  # the state key, which `to` names, as in the flow
        )
        self.decoder = EventDecoder()
        self.expect = expect
        self.consumed = 0  # input records taken (of --expect)
        self.bad = 0  # input the decoder refused (the flow's dead letters)
        self.refused = 0  # events the step refused (BadInput)
        self.routed = 0  # (event, state) pairs sent to the step
        self.stepped = 0  # ... and processed there
        self.looped = 0  # records sent round the loop
        self.returned = 0  # ... and read back
        self.outputs = 0
        self.started: float | None = None
        self.done = False
        self.on_done: Callable[[], None] = lambda: None

    def admit(self, raw: bytes | None) -> list[Routed]:
        """An input record, decoded and addressed; bad input is counted and dropped."""
        if self.consumed >= self.expect:
            return []  # past the events benchmarked
        if self.started is None:
            self.started = time.perf_counter()
        self.consumed += 1
        try:
            event = self.decoder.decode(raw)
        except BadInput:
            self.bad += 1
            self._check()
            return []
        return self._route(event)

    def admit_loop(self, raw: bytes) -> list[Routed]:
        """A record the step sent round (this run's own: it always decodes)."""
        self.returned += 1
        return self._route(self.decoder.decode(raw))

    def _route(self, event: Event) -> list[Routed]:
        """As `operators.replay.Replay._drain` keys an event."""
        if event.to is not None:
            routed = [Routed("", event)]
        else:
            routed = [Routed(customer_key(event), event)]
            if event.type == "identify":
                routed.append(Routed(visitor_key(event), event))
        self.routed += len(routed)
        return routed

    def on_event(
        self, item: Routed, _key: str, _timestamp: int, _headers: object, state: State[str, bytes]
    ) -> list[Out]:
        """One event through one customer's step, their context read from and written
        back to the state store."""
        self.stepped += 1
        snapshot = state.get_bytes(CONTEXT)
        before = from_snapshot(snapshot) if snapshot is not None else None
        try:
            after, outputs = self.step.on_event(item.key, before, item.event)
        except BadInput:  # refused, as the flow dead-letters it
            self.refused += 1
            self._check()
            return []
        if after is not None:  # (a tombstone too: the step needs it until the horizon)
            state.set_bytes(CONTEXT, to_snapshot(after))
        elif snapshot is not None:
            state.delete(CONTEXT)
        out: list[Out] = []
        for output in outputs:
            if isinstance(output, Example):
                self.models.learn(output)
            elif isinstance(output, Event):
                self.looped += 1
                out.append((True, encode(output)))
            elif isinstance(output, Tombstone):
                out.append((False, None))  # as the flow writes an erased customer's key
            elif not isinstance(output, CustomerKey | KeyDestroyed | InstanceName):
                out.append((False, encode(output)))
        self.outputs += sum(1 for loop, _ in out if not loop)
        self._check()
        return out

    def _check(self) -> None:
        """Stop once every input event and all it sent round have been through."""
        if (
            self.consumed >= self.expect
            and self.stepped >= self.routed
            and self.returned >= self.looped
        ):
            self.done = True
            self.on_done()


def _for_loop(out: Out) -> bool:
    return out[0]


def _for_output(out: Out) -> bool:
    return not out[0]


def _record(out: Out) -> bytes | None:
    return out[1]


def build(app: Application, peer: Peer, events_name: str, output_name: str, loop_name: str) -> None:
    """The pipeline: input and loop, keyed by customer, through the step, out or round."""
    events = app.topic(events_name, key_deserializer="bytes", value_deserializer="bytes")
    shape = events.broker_config  # the loop is co-partitioned with the input
    loop = app.topic(
        loop_name,
        key_serializer="str",
        value_serializer="bytes",
        key_deserializer="str",
        value_deserializer="bytes",
        config=TopicConfig(
            num_partitions=shape.num_partitions, replication_factor=shape.replication_factor
        ),
    )
    output = app.topic(output_name, key_serializer="str", value_serializer="bytes")
    routed = app.dataframe(events).apply(peer.admit, expand=True)
    routed = routed.concat(app.dataframe(loop).apply(peer.admit_loop, expand=True))
    keyed = routed.group_by(
        state_of,
        name="customer",
        key_serializer="str",
        key_deserializer="str",
        value_serializer=JSONSerializer(dumps=msgspec.json.Encoder().encode),
        value_deserializer=JSONDeserializer(loads=msgspec.json.Decoder(Routed).decode),
    )
    outputs = keyed.apply(peer.on_event, stateful=True, expand=True, metadata=True)
    # Round the loop keyed by the sender (group_by re-keys them by `to`); out by customer.
    outputs.filter(_for_loop).apply(_record).to_topic(loop)
    outputs.filter(_for_output).apply(_record).to_topic(output)


def _delete_internal_topics(bootstrap: str, group: str, loop_name: str) -> None:
    """This run's loop, repartition and changelog topics (Quix names its own after the
    consumer group): a benchmark run leaves nothing of its own behind on the broker."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        prefixes = (f"changelog__{group}--", f"repartition__{group}--")
        names = [n for n in admin.list_topics() if n == loop_name or n.startswith(prefixes)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        __doc__.splitlines()[0],
        "consumer group, new for each run (default: fresh)",
        "Quix state directory (default: a temporary one)",
        argv,
    )
    group: str = args.group or f"peers-quix-{uuid.uuid4().hex[:12]}"
    loop_name = f"{group}.loop"
    state_dir: str = args.state_dir or tempfile.mkdtemp(prefix="peers-quix-")
    try:
        peer = Peer(args.expect)
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
            consumer_poll_timeout=POLL_TIMEOUT,
        )
        peer.on_done = app.stop
        build(app, peer, args.events_topic, args.output_topic, loop_name)
        app.run(timeout=IDLE_TIMEOUT, collect=False)  # returns once flushed and committed
        ended = time.perf_counter()
    finally:
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
        _delete_internal_topics(args.bootstrap, group, loop_name)
    if not peer.done or peer.started is None:
        print(
            f"quix_app: stopped idle after {peer.consumed} of {args.expect} events",
            file=sys.stderr,
        )
        return 1
    seconds = ended - peer.started
    report(f"quixstreams {quixstreams.__version__}", peer.consumed, peer.outputs, seconds)
    print(
        f"quix_app: {peer.bad} bad input, {peer.refused} refused by the step, "
        f"{peer.looped} records round the loop",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
