"""The rounds of an embedded run: whose turn it is, and when examples may be learned."""

from flows.dataflow.rounds import Rounds


def test_the_partition_furthest_behind_in_event_time_takes_the_next_round():
    rounds = Rounds(["a", "b", "c"])
    assert not rounds.take_turn("b")  # nobody has handed anything over: the first listed
    assert rounds.take_turn("a")
    assert not rounds.take_turn("a")  # the turn is taken until the hand-over
    rounds.hand_over("a", 0, 100.0)
    assert rounds.take_turn("b")
    rounds.hand_over("b", 0, 50.0)
    assert not rounds.take_turn("b") and rounds.take_turn("c")
    rounds.hand_over("c", 0, 70.0)
    assert rounds.take_turn("b")  # 50 is furthest behind
    rounds.hand_over("b", 0, 120.0)
    assert rounds.take_turn("c")  # 70 < 100 < 120


def test_a_round_is_over_only_when_folded_written_and_learned():
    rounds = Rounds(["a"], feedback=("actions.",))
    assert rounds.take_turn("a")
    rounds.hand_over("a", 3, 10.0)
    assert not rounds.take_turn("a")  # three records in flight
    rounds.emitted(outputs=1, examples=2)  # folding them emits an action that comes back
    rounds.settled(3)
    assert not rounds.quiet()  # the action is not written yet, the examples not learned
    rounds.delivered(1)
    assert not rounds.quiet()
    rounds.arrived(2)
    assert rounds.may_learn()
    rounds.learned(2)
    assert rounds.quiet() and rounds.take_turn("a")


def test_examples_wait_while_any_record_of_the_round_is_still_deciding():
    rounds = Rounds(["a"], consumers=2)  # a challenger folds every record too
    assert rounds.take_turn("a")
    rounds.hand_over("a", 2, 10.0)
    rounds.emitted(outputs=0, examples=1)
    rounds.settled(2)  # the live step is done; the challenger is still deciding
    rounds.arrived(1)
    assert not rounds.may_learn()
    rounds.settled(2)
    assert rounds.may_learn()


def test_loop_events_are_read_back_before_the_next_round():
    rounds = Rounds(["a"])
    assert rounds.take_turn("a")
    rounds.hand_over("a", 1, 10.0)
    rounds.emitted(outputs=1, examples=0)  # a profile merge for the events topic
    rounds.settled(1)
    rounds.written(1, 10)
    assert rounds.quiet()  # the loopback partition may read it now ...
    assert not rounds.take_turn("a")  # ... and the input waits until it has
    rounds.read_back(1, 10)
    rounds.settled(1)
    assert rounds.take_turn("a")


def test_the_run_ends_when_every_input_is_done_and_the_last_round_is_over():
    rounds = Rounds(["a", "b"])
    rounds.primary_finished("a")
    assert not rounds.idle()
    rounds.primary_finished("b")
    assert rounds.idle()
    assert not rounds.may_learn()  # after the end, learners wait for their own end
