"""The watermark: the least event time of the partitions still reading, minus the
allowed lateness; the wall clock only once every partition has caught up."""

import math
import time
import types

from flows.dataflow import clock as clock_module
from flows.dataflow.clock import EventClock

A, B = ("events", 0), ("events", 1)


def test_the_partition_furthest_behind_holds_the_watermark_less_the_lateness():
    clock = EventClock(lateness=60.0)
    clock.register(A)
    clock.register(B)
    clock.advance(1000.0, A)
    assert clock.watermark == float("-inf")  # B has read nothing yet
    clock.advance(700.0, B)
    assert clock.watermark == 640.0
    clock.caught_up(B)  # B has nothing more for now: it holds nobody back
    clock.advance(1100.0, A)
    assert clock.watermark == 1040.0
    clock.caught_up(B, at_end=False)
    clock.advance(800.0, B)
    assert clock.watermark == 1040.0  # never goes back


def test_a_service_follows_the_wall_clock_only_once_every_partition_has_caught_up():
    clock = EventClock(lateness=5.0, follows_wall=True)
    clock.register(A)
    clock.register(B)
    clock.advance(1000.0, A)
    clock.advance(1000.0, B)
    clock.caught_up(A)
    assert clock.watermark == 995.0
    clock.caught_up(B)
    assert abs(clock.watermark - (time.time() - 5.0)) < 1.0
    now = time.time()
    assert abs(clock.wake_at(now + 60.0) - (now + 65.0)) < 1.0  # exact, on the wall clock


def test_a_service_whose_readers_have_not_polled_lately_stops_following_the_wall_clock(
    monkeypatch,
):
    """Paused (stopped, a frozen machine) or busy, its readers know nothing of what was
    written meanwhile: on waking, a timer must not find the wall clock's time before a
    reader has looked (and asked each partition's end anew)."""
    monkeypatch.setattr(clock_module, "READER_GAP", 0.2)
    clock = EventClock(lateness=5.0, follows_wall=True)
    clock.register(A)
    clock.advance(1000.0, A)
    clock.caught_up(A)
    clock.polled([A], time.monotonic())
    assert abs(clock.watermark - (time.time() - 5.0)) < 1.0
    time.sleep(0.3)  # (no poll)
    assert clock.watermark == 1000.0  # where event time was, not where the wall clock is
    clock.polled([A], time.monotonic())
    assert abs(clock.watermark - (time.time() - 5.0)) < 1.0


def test_a_reader_that_has_not_polled_lately_holds_the_wall_clock_back_whoever_else_did(
    monkeypatch,
):
    """Two workers' readers: one wakes first from a pause and polls its partition. The
    other's word that its partition was at its end is from before the pause: until it has
    polled again, the watermark stays where event time was."""
    monkeypatch.setattr(clock_module, "READER_GAP", 0.2)
    clock = EventClock(lateness=5.0, follows_wall=True)
    for part in (A, B):
        clock.register(part)
        clock.advance(1000.0, part)
        clock.caught_up(part)
    clock.polled([A, B], time.monotonic())
    assert abs(clock.watermark - (time.time() - 5.0)) < 1.0
    time.sleep(0.3)  # (paused)
    clock.polled([A], time.monotonic())  # the first awake; B's reader has not polled yet
    assert clock.watermark == 1000.0
    clock.polled([B], time.monotonic())
    assert abs(clock.watermark - (time.time() - 5.0)) < 1.0


def test_what_a_reader_found_is_as_fresh_as_the_start_of_its_poll(monkeypatch):
    """A process frozen in the middle of a poll wakes with what that poll found before
    the freeze: told as of the poll's start, the clock does not take it for news."""
    monkeypatch.setattr(clock_module, "READER_GAP", 0.2)
    clock = EventClock(lateness=5.0, follows_wall=True)
    clock.register(A)
    clock.advance(1000.0, A)
    started = time.monotonic()
    time.sleep(0.3)  # (frozen mid-poll)
    clock.caught_up(A)
    clock.polled([A], started)
    assert clock.watermark == 1000.0


def test_a_process_that_reads_nothing_follows_the_stamps_of_the_records_it_gets():
    clock = EventClock()
    assert clock.watermark == float("-inf")
    clock.observe(500.0, 600.0)
    clock.observe(400.0, 550.0)  # an older stamp, from a slower worker: nothing goes back
    assert (clock.watermark, clock.latest, clock.at_end()) == (500.0, 600.0, 600.0)


def test_a_process_that_reads_nothing_takes_a_backlog_readers_silence_for_a_pause(monkeypatch):
    """Its reader paused or starved, a process that reads nothing hears nothing either:
    after a stamp from a backlog (event time behind the wall clock), a short silence is
    not the input's end, and its watermark stays on event time; after a live stamp it is
    (records come as they happen), and the wall clock leads. (The silence is counted on a
    monotonic clock moved by hand: no sleep, nothing for a busy machine to stretch.)"""
    silent = [0.0]
    clocks = types.SimpleNamespace(monotonic=lambda: silent[0], time=time.time)
    monkeypatch.setattr(clock_module, "time", clocks)
    clock = EventClock(lateness=5.0, follows_wall=True)
    clock.observe(1000.0, 1010.0, time.time())  # a backlog's record
    silent[0] += clock_module._QUIET + 0.5
    assert clock.watermark == 1000.0  # a pause, not the end
    silent[0] += clock_module._QUIET_BEHIND
    assert abs(clock.watermark - (time.time() - 5.0)) < 1.0  # silent that long: caught up
    live = EventClock(lateness=5.0, follows_wall=True)
    now = time.time()
    live.observe(now - 5.0, now, now)  # the reader followed the wall clock
    assert live.watermark == now - 5.0
    silent[0] += clock_module._QUIET + 0.5
    assert abs(live.watermark - (time.time() - 5.0)) < 1.0


def test_a_timer_is_asked_again_when_the_watermark_should_have_got_there():
    clock = EventClock()
    clock.register(A)
    clock.advance(100.0, A)
    now = time.time()
    assert clock.wake_at(50.0) <= time.time()  # due already: at once
    assert now < clock.wake_at(10_000.0) <= now + 1.5  # pace not known yet: soon


def test_freshness_is_the_wall_clock_minus_the_watermark_and_unknown_before_any_event():
    clock = EventClock()
    assert math.isnan(clock.freshness())
    an_hour_ago = time.time() - 3600
    clock.observe(an_hour_ago, an_hour_ago)
    assert 3600 <= clock.freshness() < 3660
