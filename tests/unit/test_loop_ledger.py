"""A Kafka run's ledger of its loop: exact on one process; in rounds, what a round
caused before the next begins."""

from confluent_kafka import Message

from flows.dataflow.ledger import LoopLedger


def test_a_process_alone_balances_its_own_counts_exactly():
    ledger = LoopLedger()
    ledger.read(3, 0, 3)
    ledger.settled(2)
    assert not ledger.even()
    ledger.settled(1)
    ledger.emitted(1, 0)
    assert not ledger.even()
    ledger.delivered(0, 3)  # at offset 3: not read back yet
    assert not ledger.even()
    ledger.read(1, 0, 4)
    ledger.settled(1)
    assert ledger.even()
    counts = ledger.counts()
    assert (counts.entered, counts.settled, counts.emitted, counts.resolved) == (4, 4, 1, 1)


def test_a_round_is_over_once_folded_delivered_and_learned():
    ledger = LoopLedger(rounds=True)
    ledger.start_round(b"L:1")
    ledger.read(2, 0, 2)
    ledger.emitted(1, 2)  # a loop event and two examples
    ledger.settled(2)
    assert not ledger.round_over()  # the loop event is on its way
    report = Message(topic="events", partition=0, offset=7, key=b"anon-1", value=b"{}")
    ledger.delivered(0, 7, report)
    assert not ledger.round_over() and not ledger.may_learn()  # the examples too
    ledger.arrived(2)
    assert ledger.may_learn() and not ledger.round_over()
    ledger.learned(2)
    assert ledger.round_over()
    assert not ledger.even()  # what the round wrote is still to be handed back
    assert ledger.returned() == [report] and ledger.returned() == []
    ledger.read_back(1)
    assert not ledger.round_over()  # the next round: the loop event is folding
    ledger.settled(1)
    assert ledger.even() and ledger.round_mark() == b"L:1"
