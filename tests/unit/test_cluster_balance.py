"""A cluster's bounded run is done only when every process's counts, reported twice
with nothing changed, say that nothing is in flight anywhere."""

import pytest

from flows.runtime.balance import BalanceBook, BalanceReport, LoopCounts

PARTITIONS = (0, 1)
#: Process 0 read 10 records from both partitions and folded 6; process 1 folded the
#: other 4, and wrote a loop event to partition 1 that process 0 has read back.
READER = LoopCounts(entered=10, settled=6, read={0: 5, 1: 6}, at_end=(0, 1))
FOLDER = LoopCounts(settled=4, emitted=1, resolved=1, delivered={1: 6})


def _book(*reports: tuple[int, int, LoopCounts]) -> BalanceBook:
    """A book that read these reports (process, seen, counts), at offsets 10, 11..."""
    book = BalanceBook(2)
    for offset, (process, seen, counts) in enumerate(reports, start=10):
        book.receive(
            offset, BalanceReport(group="g", process=process, processes=2, seen=seen, counts=counts)
        )
    return book


def _two_rounds(reader: LoopCounts, folder: LoopCounts) -> BalanceBook:
    # The second round is counted after reading both reports of the first (at 10, 11).
    return _book((0, 0, reader), (1, 0, folder), (0, 12, reader), (1, 13, folder))


def test_the_cluster_is_done_when_two_rounds_agree_and_balance():
    assert _two_rounds(READER, FOLDER).done(PARTITIONS)


def test_one_round_is_not_enough():
    assert not _book((0, 0, READER), (1, 0, FOLDER)).done(PARTITIONS)


def test_a_round_counted_before_reading_the_others_earlier_reports_proves_nothing():
    # Process 0's second report was counted before it had read process 1's first (11).
    book = _book((0, 0, READER), (1, 0, FOLDER), (0, 11, READER), (1, 13, FOLDER))
    assert not book.done(PARTITIONS)


def test_counts_that_changed_start_the_rounds_again():
    moved = LoopCounts(entered=12, settled=8, read={0: 6, 1: 7}, at_end=(0, 1))
    rounds = [(0, 0, READER), (1, 0, FOLDER), (0, 12, READER), (1, 13, FOLDER), (0, 14, moved)]
    assert not _book(*rounds).done(PARTITIONS)
    assert _book(*rounds, (1, 15, FOLDER), (0, 16, moved)).done(PARTITIONS)


def test_a_process_not_heard_from_keeps_the_cluster_going():
    assert not _book((0, 0, READER), (0, 11, READER)).done(PARTITIONS)


@pytest.mark.parametrize(
    ("reader", "folder"),
    [
        # a record read here and folded nowhere yet
        (READER, LoopCounts(settled=3, emitted=1, resolved=1, delivered={1: 6})),
        # a loop event on its way
        (READER, LoopCounts(settled=4, emitted=2, resolved=1, delivered={1: 6})),
        # a loop event delivered and not read back
        (READER, LoopCounts(settled=4, emitted=1, resolved=1, delivered={1: 7})),
        # a partition nobody has read to its end
        (LoopCounts(entered=10, settled=6, read={0: 5, 1: 6}, at_end=(0,)), FOLDER),
    ],
    ids=["unfolded", "undelivered", "unread", "not-at-end"],
)
def test_anything_in_flight_keeps_the_cluster_going(reader, folder):
    assert not _two_rounds(reader, folder).done(PARTITIONS)
