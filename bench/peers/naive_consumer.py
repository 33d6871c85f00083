"""A naive hand-written consumer: the price of one rule and nothing else, beside which
`make bench` sets what Wayfinder's state, journeys, models, consent and policies cost.
A reference, not a target.

The rule is the built-in playbook's `dealer_test_drive`, its simplest event-triggered
action whose condition the event itself meets: a `configurator_used` event (it also
enters the `car_purchase` journey the action asks for) passes a test-drive lead to the
dealer on the `partner` channel. (`accessories_upsell` asks less, one touchpoint, but
the simulator never sends it.) No cooldown, consent, value tiers or journeys: each event
is decoded with msgspec and, if it matches, one small action record is produced with
kafka-python.

    .venv/bin/python -m bench.peers.naive_consumer --bootstrap 127.0.0.1:9092 \\
        --events-topic T --output-topic O --expect N
"""

import sys
import time
import uuid
from datetime import UTC, datetime

import kafka
import msgspec
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from bench.peers import arguments, report
from operators.identity import customer_key
from schemas.codec import BadInput, EventDecoder

#: The rule: an event of this type sends this action on this channel.
TRIGGER = "configurator_used"
ACTION = "dealer_test_drive"
CHANNEL = "partner"
#: Milliseconds without a record after which a run short of --expect events gives up.
IDLE_TIMEOUT_MS = 60_000


class NaiveAction(msgspec.Struct):
    """What the rule sends: who, what, on which channel, and why (the trigger)."""

    customer: str
    action: str
    channel: str
    trigger_event_id: str
    created_at: datetime


def _ensure_topic(bootstrap: str, name: str, like: str) -> None:
    """The output topic, made like the input if it is not there (as Quix makes its own):
    brokers that do not create topics on first use would otherwise refuse the output."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        if name not in admin.list_topics():
            shape = admin.describe_topics([like])[0]
            replicas = len(shape["partitions"][0]["replica_nodes"])
            admin.create_topics([NewTopic(name, len(shape["partitions"]), replicas)])
    except TopicAlreadyExistsError:
        pass  # made meanwhile
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    args = arguments(
        __doc__.splitlines()[0],
        "consumer group (default: a fresh one)",
        "ignored: this consumer keeps no state",
        argv,
    )
    _ensure_topic(args.bootstrap, args.output_topic, args.events_topic)
    consumer = KafkaConsumer(
        args.events_topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group or f"peers-naive-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=IDLE_TIMEOUT_MS,
    )
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    decoder = EventDecoder()
    encoder = msgspec.json.Encoder()
    consumed = produced = bad = 0
    started: float | None = None
    try:
        for message in consumer:
            if started is None:
                started = time.perf_counter()
            consumed += 1
            try:
                event = decoder.decode(message.value)
            except BadInput:
                bad += 1
            else:
                if event.type == TRIGGER:
                    key = customer_key(event)
                    action = NaiveAction(key, ACTION, CHANNEL, event.event_id, datetime.now(UTC))
                    producer.send(args.output_topic, encoder.encode(action), key.encode())
                    produced += 1
            if consumed >= args.expect:
                break
        producer.flush()
        ended = time.perf_counter()
    finally:
        producer.close()
        consumer.close()
    if started is None or consumed < args.expect:
        print(f"naive_consumer: {consumed} of {args.expect} events in the topic", file=sys.stderr)
        return 1
    seconds = ended - started
    report(f"kafka-python {kafka.__version__} (naive, one rule)", consumed, produced, seconds)
    print(f"naive_consumer: {bad} bad input", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
