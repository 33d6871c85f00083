"""The cold tier's contract, run over both stores (memory and RocksDB), as quix-streams
runs one suite over its stores; then what only a store on disk can promise."""

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.customer_store import CustomerStore, MemoryCustomerStore, Version
from state.rocks_customer_store import (
    _EPOCH,
    RocksCustomerStore,
    _encode,
    _order,
    store_options,
)
from state.rocks_open import open_rocks
from tests.helpers import files_holding


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CustomerStore]:
    made: CustomerStore = (
        MemoryCustomerStore()
        if request.param == "memory"
        else RocksCustomerStore(tmp_path / "cold")
    )
    yield made
    made.close()


def test_a_customer_put_cold_is_taken_back_once(store: CustomerStore) -> None:
    store.put("a", b"context of a", epoch=1, due=None)
    assert store.get("a") == b"context of a"
    assert len(store) == 1
    assert store.take("a", epoch=2) == b"context of a"
    assert store.take("a", epoch=2) is None
    assert store.get("a") is None
    assert len(store) == 0


def test_a_customer_never_put_is_not_there(store: CustomerStore) -> None:
    assert store.get("nobody") is None
    assert store.take("nobody", epoch=1) is None
    store.gone("nobody", epoch=1)
    assert len(store) == 0


def test_a_later_put_replaces_the_context(store: CustomerStore) -> None:
    store.put("a", b"first", epoch=1, due=None)
    store.take("a", epoch=2)
    store.put("a", b"second", epoch=3, due=None)
    assert store.get("a") == b"second"
    assert len(store) == 1


def test_due_lists_cold_deadlines_in_time_order_up_to_the_limit(store: CustomerStore) -> None:
    store.put("late", b"l", epoch=1, due=300.0)
    store.put("early", b"e", epoch=1, due=-50.5)
    store.put("middle", b"m", epoch=1, due=100.25)
    store.put("never", b"n", epoch=1, due=None)
    assert store.due(300.0, limit=10) == [(-50.5, "early"), (100.25, "middle"), (300.0, "late")]
    assert store.due(299.9, limit=10) == [(-50.5, "early"), (100.25, "middle")]
    assert store.due(1e9, limit=2) == [(-50.5, "early"), (100.25, "middle")]
    assert store.due(1e9, limit=10) == store.due(1e9, limit=10)  # asking changes nothing


def test_a_customer_woken_or_put_again_has_only_their_latest_deadline(
    store: CustomerStore,
) -> None:
    store.put("a", b"a", epoch=1, due=10.0)
    store.put("b", b"b", epoch=1, due=20.0)
    store.take("a", epoch=2)
    store.put("b", b"b2", epoch=2, due=40.0)
    assert store.due(100.0, limit=10) == [(40.0, "b")]
    store.put("b", b"b3", epoch=2, due=30.0)  # the same epoch's later change replaces it
    assert store.due(100.0, limit=10) == [(30.0, "b")]


def test_a_deadline_is_due_whatever_was_looked_for_before(store: CustomerStore) -> None:
    """Looks that found nothing due do not hide a deadline put, or brought back by a
    resume, after them."""
    assert store.due(1e9, limit=10) == []
    store.put("a", b"a", epoch=1, due=50.0)
    assert store.due(10.0, limit=10) == []
    store.put("b", b"b", epoch=1, due=5.0)
    assert store.due(10.0, limit=10) == [(5.0, "b")]
    store.take("b", epoch=3)
    store.take("a", epoch=3)
    store.flush()
    assert store.due(1e9, limit=10) == []
    store.resume(2)  # (the takes undone: both cold again, with their deadlines)
    assert store.due(10.0, limit=10) == [(5.0, "b")]
    assert store.due(60.0, limit=10) == [(5.0, "b"), (50.0, "a")]


def test_cold_keys_come_in_key_order_a_page_at_a_time(store: CustomerStore) -> None:
    for key in ("b", "ab", "a", "c", "abc"):
        store.put(key, key.encode(), epoch=1, due=None)
    store.take("c", epoch=2)
    assert store.cold_keys(after=None, limit=10) == ["a", "ab", "abc", "b"]
    assert store.cold_keys(after=None, limit=2) == ["a", "ab"]
    assert store.cold_keys(after="ab", limit=2) == ["abc", "b"]
    assert store.cold_keys(after="b", limit=2) == []


def test_a_deadline_must_be_a_time(store: CustomerStore) -> None:
    with pytest.raises(ValueError, match="finite"):
        store.put("a", b"a", epoch=1, due=float("nan"))


def test_a_resume_forgets_every_change_made_at_or_after_its_epoch(store: CustomerStore) -> None:
    store.put("a", b"a at 1", epoch=1, due=15.0)
    store.take("a", epoch=2)
    store.put("a", b"a at 3", epoch=3, due=35.0)
    store.put("b", b"b at 3", epoch=3, due=None)
    store.put("c", b"c at 1", epoch=1, due=None)
    store.gone("c", epoch=3)
    assert store.resume(3) == 3
    assert store.get("a") is None  # woken at 2: the flow's snapshots hold them
    assert store.get("b") is None
    assert store.get("c") == b"c at 1"
    assert len(store) == 1
    assert store.resume(2) == 1
    assert store.get("a") == b"a at 1"
    assert store.due(100.0, limit=10) == [(15.0, "a")]
    assert len(store) == 2


def test_what_is_durable_is_cleaned_up_without_changing_any_answer(
    store: CustomerStore,
) -> None:
    store.put("a", b"a at 1", epoch=1, due=None)
    store.take("a", epoch=2)
    store.put("a", b"a at 3", epoch=3, due=None)
    store.durable(2)  # a resume may start at 2: the put at 1 must stay
    store.resume(2)
    assert store.get("a") == b"a at 1"


def test_a_durable_wake_leaves_nothing_a_resume_could_bring_back(store: CustomerStore) -> None:
    store.put("a", b"a at 1", epoch=1, due=None)
    store.take("a", epoch=2)
    store.put("a", b"a at 4", epoch=4, due=None)
    store.durable(3)
    store.resume(3)  # from 3 on, the flow's snapshots hold the customer woken at 2
    assert store.get("a") is None
    assert len(store) == 0


def test_an_epochs_later_change_replaces_its_earlier_one(store: CustomerStore) -> None:
    store.put("a", b"a", epoch=5, due=50.0)
    store.take("a", epoch=5)
    store.durable(6)
    store.resume(6)
    assert store.get("a") is None
    assert store.due(1e9, limit=10) == []
    assert len(store) == 0


#: One step of a run of the store: (operation, customer, argument).
_Op = tuple[str, str, float | None]

_ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "put",
                "take",
                "gone",
                "next_epoch",
                "durable",
                "resume",
                "flush",
                "look",
                "read_ahead",
            ]
        ),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.floats(-100, 100, allow_nan=False)),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_any_run_of_changes_durables_and_resumes_answers_as_the_plain_log_of_changes(
    ops: list[_Op], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The oracle keeps every change (no clean-up) and forgets those a resume undoes;
    a customer's answer is their latest change. Both stores answer as it does, whatever
    was cleaned up as durable (a resume never goes back before what is durable),
    whatever looks for due deadlines found before (the store on disk answers a look
    before its soonest deadline from memory), and whatever was read ahead of takes and
    changed since."""
    stores: list[CustomerStore] = [
        MemoryCustomerStore(),
        RocksCustomerStore(tmp_path_factory.mktemp("cold") / "store"),
    ]
    log: list[tuple[int, str, str, bytes, float | None]] = []  # epoch, key, change, state, due
    epoch, durable = 1, 0
    for serial, (op, key, value) in enumerate(ops):
        if op == "next_epoch":
            epoch += 1
        elif op == "durable":
            durable = max(durable, epoch)  # everything before the current epoch
            for s in stores:
                s.durable(durable)
        elif op == "resume":
            back = max(durable, epoch - 1, 1)
            log = [c for c in log if c[0] < back]
            rocks = stores[1]
            assert isinstance(rocks, RocksCustomerStore)
            assert rocks.cold_at(back) == len(_cold(log))  # (counted before, unchanged)
            for s in stores:
                s.resume(back)
            epoch = back
        elif op == "put":
            state = f"{key} #{serial}".encode()
            log.append((epoch, key, "put", state, value))
            for s in stores:
                s.put(key, state, epoch=epoch, due=value)
        elif op == "take":
            latest = _latest(log, key)
            cold = latest is not None and latest[2] == "put"
            if cold:
                log.append((epoch, key, "woke", b"", None))
            for s in stores:
                assert s.take(key, epoch=epoch) == (latest[3] if cold and latest else None)
        elif op == "flush":
            for s in stores:
                s.flush()
        elif op == "look":  # (for due deadlines until a time: the watermark's)
            until = 0.0 if value is None else value
            due = sorted((d, k) for k, d in _cold(log).items() if d is not None and d <= until)
            for s in stores:
                assert s.due(until, limit=10) == due
        elif op == "read_ahead":  # (one customer, or all three with a deadline given)
            keys = [key] if value is None else ["a", "b", "c", key]
            for s in stores:
                assert s.read_ahead(keys) == len(_cold(log).keys() & set(keys))
        elif op == "gone":
            if _latest(log, key) is not None:
                log.append((epoch, key, "gone", b"", None))
            for s in stores:
                s.gone(key, epoch=epoch)
        for s in stores:
            _answers_as(s, log)
    for s in stores:
        s.close()


def _latest(
    log: list[tuple[int, str, str, bytes, float | None]], key: str
) -> tuple[int, str, str, bytes, float | None] | None:
    mine = [c for c in log if c[1] == key]
    return mine[-1] if mine else None


def _cold(log: list[tuple[int, str, str, bytes, float | None]]) -> dict[str, float | None]:
    """The customers cold after these changes, with their deadlines."""
    latest = (_latest(log, key) for key in ("a", "b", "c"))
    return {c[1]: c[4] for c in latest if c is not None and c[2] == "put"}


def _answers_as(store: CustomerStore, log: list[tuple[int, str, str, bytes, float | None]]) -> None:
    cold = _cold(log)
    for key in ("a", "b", "c"):
        latest = _latest(log, key)
        assert store.get(key) == (latest[3] if key in cold and latest else None), key
    assert len(store) == len(cold)
    assert store.cold_keys(after=None, limit=10) == sorted(cold)
    due = sorted((d, k) for k, d in cold.items() if d is not None)
    assert store.due(1e9, limit=10) == due


# What only the store on disk promises.


def test_a_reopened_store_holds_what_it_held(tmp_path: Path) -> None:
    path = tmp_path / "cold"
    store = RocksCustomerStore(path)
    store.put("a", b"a at 1", epoch=1, due=12.0)
    store.take("a", epoch=2)
    store.put("b", b"b at 2", epoch=2, due=None)
    store.close()
    again = RocksCustomerStore(path)
    assert len(again) == 1
    assert again.get("b") == b"b at 2"
    again.resume(2)  # a resume after the restart still goes back
    assert again.get("a") == b"a at 1"
    assert again.due(100.0, limit=5) == [(12.0, "a")]
    assert len(again) == 1
    again.close()


def test_a_store_is_counted_read_only_beside_the_process_that_has_it_open(
    tmp_path: Path,
) -> None:
    """The processes of a cluster that resumes count the tiers another shape kept, all
    at once: a count takes no lock and writes nothing, and answers as a resume would."""
    path = tmp_path / "cold"
    writer = RocksCustomerStore(path)
    writer.put("a", b"a at 1", epoch=1, due=None)
    writer.put("b", b"b at 1", epoch=1, due=None)
    writer.flush()
    writer.take("a", epoch=3)
    writer.flush()
    counters = [RocksCustomerStore(path, read_only=True) for _ in range(2)]
    assert [c.cold_at(3) for c in counters] == [2, 2]  # (a resume from 3 undoes the take)
    assert [c.cold_at(4) for c in counters] == [1, 1]
    for counter in counters:
        counter.close()
    assert len(writer) == 1 and writer.get("b") == b"b at 1"
    writer.close()


def test_a_change_made_while_customers_are_read_ahead_is_what_their_take_finds(
    tmp_path: Path,
) -> None:
    """Another worker reads customers ahead while their own worker changes them: a take
    answers the latest change, never a version read before it."""
    store = RocksCustomerStore(tmp_path / "cold")
    done = threading.Event()

    def read_ahead() -> None:
        while not done.is_set():
            store.read_ahead(["a", "b"])

    reader = threading.Thread(target=read_ahead)
    reader.start()
    try:
        for i in range(3000):
            store.put("a", f"a{i}".encode(), epoch=1 + i // 100, due=None)
            store.put("b", f"b{i}".encode(), epoch=1 + i // 100, due=float(i))
            assert store.take("a", epoch=1 + i // 100) == f"a{i}".encode()
            if i % 7 == 0:
                store.flush()
            assert store.take("b", epoch=1 + i // 100) == f"b{i}".encode()
            if i % 300 == 0:
                store.durable(i // 100)
    finally:
        done.set()
        reader.join()
    assert (store.get("a"), store.get("b"), len(store)) == (None, None, 0)
    store.close()


def test_a_take_is_written_at_the_next_flush_and_answered_before_it(tmp_path: Path) -> None:
    """A process that dies before the epoch's end (no flush) leaves its takes unwritten,
    as a resume to that epoch would undo them; one flushed keeps them."""
    path = tmp_path / "cold"
    store = RocksCustomerStore(path)
    store.put("a", b"a at 1", epoch=1, due=12.0)
    store.put("b", b"b at 1", epoch=1, due=None)
    assert store.take("a", epoch=2) == b"a at 1"
    assert (store.get("a"), len(store), store.take("a", epoch=2)) == (None, 1, None)
    del store  # (killed: RocksDB closed without a word from us)
    again = RocksCustomerStore(path)
    assert (again.get("a"), len(again)) == (b"a at 1", 2)
    assert again.take("a", epoch=2) == b"a at 1"
    assert again.take("b", epoch=2) == b"b at 1"
    assert again.flush() == 2
    assert again.flush() == 0
    del again
    last = RocksCustomerStore(path)
    assert (last.get("a"), last.get("b"), len(last), last.due(100.0, limit=5)) == (
        None,
        None,
        0,
        [],
    )
    last.close()


def test_a_store_of_the_layout_before_is_converted_when_opened(tmp_path: Path) -> None:
    """Contexts were entries of their own (`v` key NUL epoch) beside 17-byte heads: a
    store written so (a resume after an upgrade) answers as it did, older versions too."""
    path = tmp_path / "cold"
    db = open_rocks(path, store_options())
    e = _EPOCH.pack
    head = {1: _encode(Version(1, "put", b"", 12.0)), 2: _encode(Version(2, "woke"))}
    db[b"ca"] = _encode(Version(3, "put", b"", 30.0))  # a: put at 1, taken at 2, put at 3
    db[b"oa\x00" + e(1)], db[b"oa\x00" + e(2)] = head[1], head[2]
    db[b"va\x00" + e(1)], db[b"va\x00" + e(3)] = b"a at 1", b"a at 3"
    db[b"cb"], db[b"vb\x00" + e(1)] = head[1], b"b at 1"  # b: put at 1
    db[b"d" + _order(30.0) + b"a"] = db[b"d" + _order(12.0) + b"b"] = b""
    for epoch, name in [(1, b"a"), (2, b"a"), (3, b"a"), (1, b"b")]:
        db[b"j" + e(epoch) + name] = b""
    db[b"n"] = e(2)
    db.close()
    store = RocksCustomerStore(path)
    assert (store.get("a"), store.get("b"), len(store)) == (b"a at 3", b"b at 1", 2)
    assert store.due(100.0, limit=5) == [(12.0, "b"), (30.0, "a")]
    store.resume(2)
    assert (store.get("a"), store.due(100.0, limit=5)) == (b"a at 1", [(12.0, "a"), (12.0, "b")])
    store.close()
    again = RocksCustomerStore(path)  # (converted once: opened again as it is)
    assert again.take("a", epoch=2) == b"a at 1"
    assert again._db.get(b"f") == b"2"
    again.close()


def test_a_reopened_store_keeps_its_cache_and_bloom_filters(tmp_path: Path) -> None:
    """A resume reopens the store: it must run with the options it was made with, not
    with what RocksDB's options file can hold (no cache of ours, no filters)."""
    path = tmp_path / "cold"
    for _ in range(2):
        store = RocksCustomerStore(path, cache_bytes=24 << 20)
        store.put("a", b"a", epoch=1, due=None)
        assert store._db.property_int_value("rocksdb.block-cache-capacity") == 24 << 20
        store.close()
        written = max(path.glob("OPTIONS-*"), key=lambda f: int(f.name.split("-")[1]))
        in_use = written.read_text()  # (RocksDB writes the options in use at each open)
        assert "filter_policy=bloomfilter" in in_use
        assert "CompactOnDeletionCollector" in in_use


def test_a_durable_erasure_leaves_no_byte_of_the_customer_in_any_file(tmp_path: Path) -> None:
    path = tmp_path / "cold"
    store = RocksCustomerStore(path, compression=False)  # (a search of the files is exact)
    secret = os.urandom(48)  # a context of theirs, as the files would hold it
    for i in range(200):  # neighbours, in the same files
        store.put(f"other-{i:03}", b"someone else " * 20, epoch=1, due=float(i))
    store.put("ada", b"ada:" + secret, epoch=1, due=50.0)
    store.take("ada", epoch=2)
    store.put("ada", b"ada again:" + secret, epoch=3, due=70.0)
    store._db.flush()  # (on disk before the erasure, as a long run would have it)
    assert files_holding(path, secret)
    store.gone("ada", epoch=4)
    store.durable(4)  # the erasure is not durable yet: a resume may need the versions
    store.resume(4)
    assert store.get("ada") == b"ada again:" + secret
    store.gone("ada", epoch=4)
    store.durable(5)
    assert store.get("ada") is None
    assert "ada" not in [k for _, k in store.due(1e9, limit=1000)]
    assert files_holding(path, secret) == []
    assert store.get("other-007") == b"someone else " * 20
    store.close()


def test_an_erased_customer_kept_as_a_tombstone_in_the_same_epoch_is_purged_too(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cold"
    store = RocksCustomerStore(path, compression=False)
    secret = os.urandom(48)
    store.put("ada", b"ada:" + secret, epoch=1, due=None)
    store.take("ada", epoch=2)
    store._db.flush()
    store.gone("ada", epoch=3)
    store.put("ada", b"a tombstone", epoch=3, due=None)  # (erased, then idle)
    store.durable(4)
    assert store.get("ada") == b"a tombstone"
    assert files_holding(path, secret) == []
    store.close()


def test_its_own_figures_are_exported(tmp_path: Path) -> None:
    store = RocksCustomerStore(tmp_path / "cold", cache_bytes=8 << 20)
    for i in range(500):
        store.put(f"k{i}", bytes(100), epoch=1, due=None)
    store._db.flush()
    store.get("k1")
    stats = store.stats()
    assert stats.estimated_keys >= 500
    assert stats.sst_bytes > 0
    assert 0 < stats.block_cache_bytes <= 8 << 20
    assert stats.pending_compaction_bytes >= 0
    store.close()
