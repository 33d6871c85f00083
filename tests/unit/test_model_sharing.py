"""Models shared by every process: the readers–writer lock, a replica's strict number
order, and a learner step on Kafka that numbers each example once across a crash."""

import pickle
import sys
import threading
import time

from flows.dataflow.learner import PUBLISHED_PER_MESSAGE, NumberingLogic, resume_ceilings
from flows.dataflow.replica import InOrder
from operators.models import (
    INTENT,
    NEXT_STEP,
    PROPENSITY,
    FlowNextStep,
    ModelSet,
    ReadersWriterLock,
)
from schemas.learning import Example, LearnedExamples
from tests.helpers import default_playbook

#: How long a thread that must not get in is given to try.
REFUSED_FOR = 0.2


def step(i: int) -> Example:
    return Example(NEXT_STEP, f"n{i}", "abc"[i % 3], float(i), prefix=("a",))


def test_two_readers_hold_the_lock_together_and_a_writer_waits_for_both():
    lock = ReadersWriterLock()
    both_in = threading.Barrier(3, timeout=5)  # two readers and this thread
    leave = threading.Event()
    order: list[str] = []

    def reader(name: str) -> None:
        with lock.read():
            both_in.wait()  # broken (an error) unless the two are inside at once
            leave.wait(5)
            order.append(f"{name} out")

    def writer() -> None:
        with lock.write():
            order.append("writer in")

    readers = [threading.Thread(target=reader, args=(f"r{i}",)) for i in (1, 2)]
    for thread in readers:
        thread.start()
    both_in.wait()
    writing = threading.Thread(target=writer)
    writing.start()
    time.sleep(REFUSED_FOR)
    assert order == []  # the writer waits while they read
    leave.set()
    writing.join(5)
    for thread in readers:
        thread.join(5)
    assert sorted(order[:2]) == ["r1 out", "r2 out"] and order[2] == "writer in"


def test_a_writer_excludes_readers_and_goes_before_readers_that_come_after_it():
    lock = ReadersWriterLock()
    events: list[str] = []
    first_in, release_first, writer_in, release_writer = (threading.Event() for _ in range(4))

    def first_reader() -> None:
        with lock.read():
            first_in.set()
            release_first.wait(5)
            events.append("first reader out")

    def writer() -> None:
        with lock.write():
            events.append("writer in")
            writer_in.set()
            release_writer.wait(5)
            events.append("writer out")

    def late_reader() -> None:
        with lock.read():
            events.append("late reader in")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    first_in.wait(5)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    time.sleep(REFUSED_FOR)  # the writer is waiting for the first reader now
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    time.sleep(REFUSED_FOR)
    assert events == []  # the late reader waits behind the waiting writer
    release_first.set()
    assert writer_in.wait(5)
    time.sleep(REFUSED_FOR)
    assert events == ["first reader out", "writer in"]  # no reader while it writes
    release_writer.set()
    for thread in threads:
        thread.join(5)
    assert events == ["first reader out", "writer in", "writer out", "late reader in"]


def test_a_replica_learns_each_number_once_in_order_and_waits_at_a_gap():
    stream = [step(i) for i in range(1, 10)]
    straight = ModelSet(default_playbook())
    for example in stream:
        straight.learn(example)

    replica = InOrder(ModelSet(default_playbook()))
    a, b, c = (LearnedExamples(first, stream[first - 1 : first + 2]) for first in (1, 4, 7))
    model = replica.models.models[NEXT_STEP]
    assert replica.offer(c, 3.0) == []  # 7-9 before 1-6: it waits
    assert replica.offer(a, 1.0) == [(NEXT_STEP, 1.0)]
    assert model.record.learned == 3  # the gap at 4 is never skipped
    assert replica.offer(a, 1.0) == []  # delivered twice: skipped
    assert replica.offer(b, 2.0) == [(NEXT_STEP, 2.0), (NEXT_STEP, 3.0)]  # and 7-9 that waited
    assert replica.offer(LearnedExamples(5, stream[4:6]), 4.0) == []
    assert replica.duplicates == 5
    assert not replica.waiting[NEXT_STEP]
    assert pickle.dumps(model) == pickle.dumps(straight.models[NEXT_STEP])
    assert replica.models.version().endswith("next_step@9")


def test_what_waits_at_a_gap_is_read_whole_while_the_learner_offers_more():
    """The replica's follower says what waits at a gap while this process's learner
    offers batches behind it: it reads under the lock (a Python loop over the dicts the
    learner fills once stopped the follower on "dictionary changed size")."""
    replica = InOrder(ModelSet(default_playbook()))
    offered = 2000
    failures: list[BaseException] = []
    seen: list[int] = []

    def learner() -> None:  # example 1 never comes: everything waits behind it
        for first in range(2, offered + 2):
            replica.offer(LearnedExamples(first, [step(first)]), float(first))

    def follower() -> None:
        try:
            while not done.is_set():
                seen.append(replica.waiting_now().get(NEXT_STEP, 0))
        except BaseException as exc:
            failures.append(exc)

    done = threading.Event()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        reading = threading.Thread(target=follower)
        reading.start()
        learner()
        done.set()
        reading.join(5)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[0]
    assert seen == sorted(seen) and seen[-1] <= offered  # each read a whole moment's
    assert replica.waiting_now() == {NEXT_STEP: offered}
    assert replica.models.models[NEXT_STEP].record.learned == 0


class Log:
    """The example log as a learner reads it when it starts: what earlier runs published."""

    def __init__(self, published: list[LearnedExamples], *, holding: bool = False) -> None:
        self.published = published
        #: Whether the replica holds the models back (a process resumed from snapshots).
        self.holding = holding
        self.asked: list[tuple[str, int]] = []
        #: The ceilings the learner gave this process's replica, one per batch.
        self.ceilings: list[int | None] = []

    def published_after(self, model: str, count: int) -> dict[int, str]:
        self.asked.append((model, count))
        return {
            number: example.example_id
            for batch in self.published
            for number, example in enumerate(batch.examples, start=batch.first)
            if example.model == model and number > count
        }

    def learned_here(self, model: str, batches: list[LearnedExamples], ceiling: int | None) -> None:
        self.published += batches  # (this process's replica would learn them now)
        self.ceilings.append(ceiling)

    def versions(self) -> dict[str, int]:
        return {INTENT: 7}

    def holds(self, model: str) -> bool:
        return self.holding


def numbered(messages: object) -> list[tuple[int, str]]:
    assert isinstance(messages, list)
    return [
        (number, example.example_id)
        for batch in messages
        for number, example in enumerate(batch.examples, start=batch.first)
    ]


def test_a_resumed_learner_publishes_nothing_the_log_holds_and_numbers_on_after_it():
    first_run = NumberingLogic(Log([]), None)
    out, _ = first_run.on_batch([step(i) for i in (2, 1, 3)])
    assert numbered(out) == [(1, "n1"), (2, "n2"), (3, "n3")]  # by (time, id)
    snapshot = first_run.snapshot()
    out, _ = first_run.on_batch([step(i) for i in (4, 5)])  # published, then the crash
    log = Log([LearnedExamples(1, [step(1), step(2), step(3)]), *out])

    resumed = NumberingLogic(log, snapshot)
    # The replay emits 6 (new) first, then 4 and 5 again: only 6 is published, as 6.
    out, _ = resumed.on_batch([step(6)])
    assert log.asked == [(NEXT_STEP, 3)]
    assert numbered(out) == [(6, "n6")]
    crashed_again = resumed.snapshot()
    out, _ = resumed.on_batch([step(i) for i in (4, 7, 5)])
    assert numbered(out) == [(7, "n7")]

    # Crashed again before 4 and 5 came back: the snapshot still knows them.
    again = NumberingLogic(Log([]), crashed_again)
    assert numbered(again.on_batch([step(i) for i in (4, 5, 7)])[0]) == [(7, "n7")]


def test_a_learner_fills_a_number_the_log_lacks_before_it_numbers_on():
    # 4-5 were lost with the crash, 6 was delivered: 4 and 5 go to the next examples.
    log = Log([LearnedExamples(6, [Example(INTENT, "i6", "pay", 6.0)])])
    logic = NumberingLogic(log, pickle.dumps((INTENT, 3, {}, [])))
    out, _ = logic.on_batch([Example(INTENT, f"i{i}", "pay", float(i)) for i in (7, 8, 9)])
    assert numbered(out) == [(4, "i7"), (5, "i8"), (7, "i9")]
    assert [batch.first for batch in out] == [4, 7]  # a batch holds consecutive numbers


def test_a_fresh_learner_over_an_earlier_runs_log_drops_what_it_learned():
    earlier = [LearnedExamples(1, [step(i) for i in range(1, 4)])]
    logic = NumberingLogic(Log(earlier), None)  # no snapshot: the same input again
    out, _ = logic.on_batch([step(i) for i in range(1, 6)])
    assert numbered(out) == [(4, "n4"), (5, "n5")]
    assert resume_ceilings([logic.snapshot()])[NEXT_STEP] == 5  # its replica held nothing


def test_a_learner_publishes_large_batches_in_messages_of_bounded_size():
    logic = NumberingLogic(Log([]), None)
    out, _ = logic.on_batch([step(i) for i in range(PUBLISHED_PER_MESSAGE + 10)])
    assert isinstance(out, list)
    assert [len(batch.examples) for batch in out] == [PUBLISHED_PER_MESSAGE, 10]
    assert [batch.first for batch in out] == [1, PUBLISHED_PER_MESSAGE + 1]


def test_a_held_replica_learns_past_its_snapshot_only_as_the_replay_brings_each_again():
    stream = [step(i) for i in range(1, 10)]
    replica = InOrder(ModelSet(default_playbook()), {NEXT_STEP: 4, "no such model": 1})
    model = replica.models.models[NEXT_STEP]
    assert replica.offer(LearnedExamples(1, stream[:6]), 1.0) == [(NEXT_STEP, 1.0)]
    assert model.record.learned == 4  # 5-6 held: the resumed run had not learned them
    assert replica.held() == 2
    assert replica.hold(NEXT_STEP, 5) == [(NEXT_STEP, 1.0)]
    assert model.record.learned == 5
    assert replica.hold(NEXT_STEP, 3) == []  # a ceiling never goes down
    assert replica.offer(LearnedExamples(7, stream[6:9]), 2.0) == []
    assert replica.hold(NEXT_STEP, None) == [(NEXT_STEP, 1.0), (NEXT_STEP, 2.0)]
    assert model.record.learned == 9 and replica.held() == 0
    assert replica.hold(NEXT_STEP, 2) == []  # held no more: stays so


def test_a_held_model_is_released_when_the_replay_brings_nothing_of_it_back_for_a_while():
    replica = InOrder(ModelSet(default_playbook()), {NEXT_STEP: 0, INTENT: 0})
    replica.offer(LearnedExamples(1, [step(1)]), 1.0)
    assert replica.release_all(idle=60.0) == []
    replica._raised[NEXT_STEP] -= 100  # (as if 100 s had passed since its last raise)
    replica.hold(INTENT, 0)  # the intent learner is still bringing examples back
    assert replica.release_all(idle=60.0) == [(NEXT_STEP, 1.0)]
    assert replica.holds(INTENT) and not replica.holds(NEXT_STEP)


def test_a_resumed_learner_raises_its_replicas_ceiling_as_the_replay_brings_examples_again():
    first_run = NumberingLogic(Log([]), None)
    first_run.on_batch([step(i) for i in (1, 2, 3)])
    snapshot = first_run.snapshot()
    assert resume_ceilings([snapshot]) == {NEXT_STEP: 3, INTENT: 7}
    out, _ = first_run.on_batch([step(i) for i in (4, 5, 6)])  # published, then the crash
    log = Log([LearnedExamples(1, [step(1), step(2), step(3)]), *out], holding=True)

    resumed = NumberingLogic(log, snapshot)
    resumed.on_batch([step(4)])
    assert log.ceilings == [4]  # 5 and 6 stay held
    mid_replay = resumed.snapshot()
    assert resume_ceilings([mid_replay])[NEXT_STEP] == 4
    resumed.on_batch([step(6)])
    assert log.ceilings == [4, 4]  # 6 waits for 5
    resumed.on_batch([step(5)])
    assert log.ceilings[-1] is None

    # Crashed again mid-replay, and the replay goes past the crash before 5 and 6 come:
    # what was not brought again is released at once.
    again = Log(log.published, holding=True)
    second = NumberingLogic(again, mid_replay)
    out, _ = second.on_batch([step(7)])
    assert numbered(out) == [(7, "n7")] and again.ceilings == [None]


def test_a_replica_refuses_what_no_learner_step_writes_and_goes_on_in_number_order():
    """The example log is an input: whatever a message holds, the replica goes on. An
    example not of its model's shape is numbered (version N stays the log's first N)
    and not learned; a batch numbered far beyond the log does not wait for ever."""
    bad = [
        Example(NEXT_STEP, "x1", "a", float("nan"), prefix=("a",)),
        Example(INTENT, "x2", "pay", 1.0),  # another model's, in this model's batch
        Example(NEXT_STEP, "x3", "a", 1.0, {"f": float("inf")}, prefix=("a",)),
        Example(NEXT_STEP, "x4", "", 1.0, prefix=("a",)),
        Example(NEXT_STEP, "x5", "a" * 10_000, 1.0, prefix=("a",)),
    ]
    good = [step(i) for i in range(1, 4)]
    replica = InOrder(ModelSet(default_playbook()))
    replica.offer(LearnedExamples(1, [good[0], *bad, *good[1:]]), 1.0)
    model = replica.models.models[NEXT_STEP]
    assert (model.record.learned, model.record.refused) == (8, 5)
    straight = ModelSet(default_playbook())
    for example in good:
        straight.learn(example)
    assert isinstance(model, FlowNextStep)
    learned_straight = straight.models[NEXT_STEP]
    assert isinstance(learned_straight, FlowNextStep)
    assert model.predict(("a",)) == learned_straight.predict(("a",))
    assert pickle.dumps(model.ngram) == pickle.dumps(learned_straight.ngram)

    propensity = [
        Example(PROPENSITY, "offer|1", "1", 1.0),  # no features: its posterior cannot learn
        Example(PROPENSITY, "offer|2", "maybe", 1.0, {"bias": 1.0}),
        Example(PROPENSITY, "offer|3", "1", 1.0, {"bias": 1e300}),
        Example(PROPENSITY, "offer|4", "1", 1.0, {"bias": 1.0}),
    ]
    replica.offer(LearnedExamples(1, propensity), 2.0)
    record = replica.models.models[PROPENSITY].record
    assert (record.learned, record.refused) == (4, 3)
    assert replica.offer(LearnedExamples(10**30, [step(9)]), 3.0) == []
    assert replica.beyond == 1 and not replica.waiting[NEXT_STEP]


class Round:
    """A replay's round as a learner sees it: whether it has finished deciding."""

    def __init__(self) -> None:
        self.deciding = True
        self.arrivals = self.learnt = 0

    def arrived(self, n: int) -> None:
        self.arrivals += n

    def learned(self, n: int) -> None:
        self.learnt += n

    def may_learn(self) -> bool:
        return not self.deciding


def test_a_learner_in_rounds_numbers_a_rounds_examples_once_it_has_finished_deciding():
    now = Round()
    logic = NumberingLogic(Log([]), None, now)
    out, _ = logic.on_batch([step(2)])
    assert numbered(out) == [] and logic.notify_at() is not None  # the round still decides
    out, _ = logic.on_batch([step(1)])
    assert numbered(out) == [] and now.arrivals == 2
    snapshot = logic.snapshot()  # (between: what waits is in it)
    now.deciding = False
    out, _ = logic.on_notify()
    assert numbered(out) == [(1, "n1"), (2, "n2")] and now.learnt == 2  # by (time, id)
    assert logic.notify_at() is None

    # Resumed from the snapshot: what waited is numbered and given to the replica before
    # the first round, and published with the next output.
    log = Log([])
    resumed = NumberingLogic(log, snapshot, Round())
    assert numbered(log.published) == [(1, "n1"), (2, "n2")] and resumed.notify_at()
    assert numbered(resumed.on_notify()[0]) == [(1, "n1"), (2, "n2")]
    assert resumed.on_notify()[0] == [] and resumed.notify_at() is None
