"""What the lab's simulated customers send: the vocabulary a playbook is checked against."""

from functools import cache

import msgspec

from flows.lab.simulator import SimulationConfig, simulate
from flows.lab.world import EFFECTS
from schemas.event import Event
from schemas.vocabulary import Vocabulary
from state.context import VALUE_TIERS


@cache
def vocabulary() -> Vocabulary:
    """Event types, value tiers and event properties of the simulator's traffic, of the
    simulated customers' reactions to actions, and the value tiers of the contract.

    A sample is enough: 200 customers over two days already send every type there is.
    """
    decoder = msgspec.json.Decoder(Event)
    config = SimulationConfig(customers=200, hours=48, bad_input_share=0.0)
    sent = Vocabulary.from_events(decoder.decode(raw) for _ts, raw in simulate(config))
    reactions = Vocabulary(
        event_types=frozenset({"action_outcome", *(kind for kind, _ch, _tp in EFFECTS.values())}),
        value_tiers=frozenset(VALUE_TIERS),
    )
    return sent | reactions
