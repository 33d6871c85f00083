"""What Wayfinder publishes names customers and visitors by pseudonym, never by id; the
key vault learns each pseudonym's id from the first record that names it."""

import re

from flows.lab.simulator import SimulationConfig, simulate
from flows.runtime.settings import state_key
from operators.customer_step import CustomerStep
from operators.identity import customer_key
from schemas.codec import encode, good_events
from schemas.event import Event
from schemas.learning import Example
from state.context import from_snapshot, to_snapshot
from state.key_vault import CustomerKey, InstanceName
from tests.helpers import Harness, default_playbook, stuck_transfer


def test_no_published_record_of_a_simulated_day_carries_an_id_it_was_given():
    events = list(good_events(raw for _ts, raw in simulate(SimulationConfig(customers=60))))
    ids = {i for e in events for i in (e.customer_id, e.anonymous_id) if i is not None}
    assert len(ids) > 60  # customers and their devices
    transfers = {str(e.properties["transfer_id"]) for e in events if "transfer_id" in e.properties}
    assert transfers
    ids |= transfers
    run = Harness().run(events, until_minutes=None)
    vault = CustomerKey | InstanceName
    published = [o for o in run.replay.outputs if not isinstance(o, Event | Example | vault)]
    assert len(published) > 1000
    named = re.compile(b"|".join(re.escape(i.encode()) for i in sorted(ids, key=len)[::-1]))
    carrying = [encode(o)[:200] for o in published if named.search(encode(o))]
    assert carrying == []
    # They name them by pseudonym: every customer named is one of the input's keys.
    pseudonyms = {state_key(customer_key(e)) for e in events}
    assert {o.customer for o in published if hasattr(o, "customer")} <= pseudonyms | {""}


def test_the_first_record_naming_a_customer_gives_the_vault_their_key_and_id():
    step = CustomerStep(default_playbook())  # (no decision inputs: the key is for the vault)
    ctx, given, named = None, [], []
    for event in stuck_transfer(transfer="tx-77"):
        ctx, outputs = step.on_event("cust-1", ctx, event)
        given += [o for o in outputs if isinstance(o, CustomerKey)]
        named += [o for o in outputs if isinstance(o, InstanceName)]
    assert ctx is not None and ctx.secret
    assert given == [CustomerKey("cust-1", ctx.secret)]  # once, for the vault's entry
    assert ctx.pseudonym == step.pseudonym_of("cust-1") != "cust-1"
    # The transfer, named by token in the journey's transitions and the action's content,
    # is given to the vault when its journey is entered.
    assert named == [InstanceName("cust-1", "tx-77")]


def test_a_context_of_an_older_release_is_named_and_its_key_given_again():
    """An older release's snapshot has no pseudonym, and its vault entry no id."""
    step = CustomerStep(default_playbook())
    first, *rest = stuck_transfer()
    ctx, _ = step.on_event("cust-1", None, first)
    assert ctx is not None and ctx.secret
    ctx.pseudonym = ""
    old = from_snapshot(to_snapshot(ctx))
    after, outputs = step.on_event("cust-1", old, rest[0])
    assert after is not None and after.pseudonym == step.pseudonym_of("cust-1")
    assert CustomerKey("cust-1", ctx.secret) in outputs
    _again, outputs = step.on_event("cust-1", after, rest[1])
    assert not any(isinstance(o, CustomerKey) for o in outputs)  # once is enough
