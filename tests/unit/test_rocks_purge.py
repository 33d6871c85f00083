"""A purge leaves no file holding a forgotten value, even while other threads read."""

import os
import threading
import time
from pathlib import Path

import pytest
from rocksdict import Rdict, ReadOptions

from state import rocks_purge
from state.rocks_open import open_rocks
from state.rocks_purge import purge, searchable_options, stale_files
from tests.helpers import files_holding


def test_no_file_keeps_a_purged_value_while_another_thread_reads(tmp_path: Path) -> None:
    # A get that holds the version a compaction replaces leaves that compaction's inputs
    # on disk until a flush: the purge must flush them away, however the reads fall.
    db = open_rocks(tmp_path, searchable_options())
    for i in range(200):
        db[f"other-{i:03}".encode()] = b"someone else " * 20
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for i in range(0, 200, 7):
                db.get(f"other-{i:03}".encode())
            time.sleep(0)  # (the purge's thread gets its turn between passes)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for round_ in range(60):
            secret = os.urandom(32)
            name = f"ada-{round_}".encode()
            db[name] = secret
            db.flush()
            db.delete(name)
            purge(db, [(name, name + b"\x00")])
            assert not files_holding(tmp_path, secret), round_
            assert stale_files(db, tmp_path) == []
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert db.get(b"other-007") == b"someone else " * 20
    db.close()


def test_files_an_open_iterator_holds_go_when_it_closes_and_the_purge_does_not_wait_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rocks_purge, "_PATIENCE", 0.2)
    db = open_rocks(tmp_path, searchable_options())
    secret = os.urandom(32)
    db[b"ada"] = secret
    db[b"bob"] = b"someone else"
    db.flush()
    reading = db.iter(ReadOptions())  # (a scan of another thread, left open)
    reading.seek_to_first()
    db.delete(b"ada")
    purge(db, [(b"ada", b"ada\x00")])
    assert stale_files(db, tmp_path)  # (held by the scan, which still reads them)
    assert "outlived a purge" in caplog.text
    del reading
    assert stale_files(db, tmp_path) == []
    assert not files_holding(tmp_path, secret)
    db.close()


def test_a_store_with_nothing_stale_is_left_as_it_is(tmp_path: Path) -> None:
    db: Rdict = open_rocks(tmp_path, searchable_options())
    db[b"kept"] = b"value"
    db.flush()
    assert stale_files(db, tmp_path) == []
    purge(db, [(b"gone", b"gone\x00")])
    assert db.get(b"kept") == b"value"
    assert stale_files(db, tmp_path) == []
    db.close()
