"""Event time: the watermark, which customers' stalls and abandonments fall due against.

The watermark follows the events, not the wall clock, so a replay of history, a
backlog caught up after downtime and a live feed give the same transitions. Each
input partition says how far it has got in event time and whether it has caught up
with its end; the watermark is the least of the partitions still reading, minus an
allowed lateness, and follows the wall clock only while every partition has caught
up (as Flink's idle sources do). It never goes back, and it is state like any
other: a stateful step keeps it and snapshots it with the input offsets, so a
resumed run starts where the interrupted one was.

Without registered partitions (an embedded run, whose rounds keep its partitions
together) the watermark is the latest event time read.
"""

import math
import threading
import time
from collections.abc import Hashable, Iterable

from bytewax.operators import StatefulBatchLogic

from flows.dataflow.stopping import StopRequest


class EventTime(float):
    """The latest event time (epoch seconds) one decoded batch read from one input
    partition (`part`; None: an input whose partitions the clock does not follow)."""

    part: Hashable | None = None

    @classmethod
    def of(cls, ts: float, part: Hashable | None) -> "EventTime":
        tick = cls(ts)
        tick.part = part
        return tick


#: A timer is asked again at least this often (wall seconds) while the input moves in
#: event time at an unknown pace, or faster than the wall clock (a backlog).
_MAX_WAIT = 300.0
_MIN_WAIT = 0.05
#: ... and this soon while the pace is not known yet (the first seconds of a run).
_UNKNOWN_PACE_WAIT = 1.0
#: How long (wall seconds) the pace of event time is measured over.
_PACE_WINDOW = 2.0
#: A process that reads no input takes it to be caught up after this long (wall
#: seconds) without a record, when the last one's stamp said the process that read it
#: followed the wall clock (a live input: records come as they happen) ...
_QUIET = 2.0
#: ... and after this long when the stamp said event time was behind (a backlog): a
#: reader paused or starved a few seconds sends nothing either, and that silence is not
#: the input's end (taken for it after 2 s, a starved reader let the other process's
#: timers fire months early in event time, before the records still to come).
_QUIET_BEHIND = 30.0
#: How close (seconds) a stamp's watermark is to its wall clock, less the lateness,
#: when the process that read the record followed the wall clock.
_LIVE_WITHIN = 5.0
#: A process whose readers have not polled for this long (wall seconds: paused, frozen,
#: or busy) knows nothing of what was written meanwhile: it is not caught up.
READER_GAP = 5.0


class EventClock:
    """The watermark, shared by a process's steps; and whether the input had already
    ended with nothing read since (a finished run resumed: its end is not re-emitted).

    `lateness`: how far (seconds) an event may arrive behind its partition's latest;
    `follows_wall`: a service, whose watermark follows the wall clock once caught up.
    """

    def __init__(
        self,
        *,
        lateness: float = 0.0,
        follows_wall: bool = False,
        stop: StopRequest | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._lateness = lateness
        self._follows_wall = follows_wall
        self._floor = float("-inf")  # never goes back
        self._latest = float("-inf")  # the latest event time read anywhere
        self._reached: dict[Hashable, float] = {}  # registered partitions' latest
        self._caught_up: set[Hashable] = set()
        self._resumed: dict[Hashable, float] = {}  # partitions' latest at the snapshot
        self._pace_at = (time.monotonic(), float("-inf"))
        self._pace = 0.0  # event seconds per wall second; 0: not measured yet
        self._heard = float("-inf")  # when a record's stamp last reached this process
        self._heard_live = False  # whether that stamp's reader followed the wall clock
        #: When each registered partition's reader last polled it (monotonic): with
        #: several workers, each reader's word is only as fresh as its own polls.
        self._polled: dict[Hashable, float] = {}
        #: The stop asked for by a signal: the input's end is then a stop, not an end.
        self.stop = stop if stop is not None else StopRequest()
        #: The run resumed from snapshots taken after its input ended, and has read
        #: nothing since (set from the watermark's state, cleared by the decode step).
        self.resumed_after_end = False

    # -- what the input says

    def register(self, part: Hashable) -> None:
        """An input partition of this process, which holds the watermark back until it
        has read something or caught up."""
        with self._lock:
            self._reached.setdefault(part, self._resumed.get(part, float("-inf")))
            self._polled.setdefault(part, time.monotonic())

    def advance(self, ts: float, part: Hashable | None = None) -> None:
        """Partition `part` (or the input as a whole) has read up to event time `ts`."""
        with self._lock:
            self._latest = max(self._latest, ts)
            if part is not None and part in self._reached:
                self._reached[part] = max(self._reached[part], ts)
            self._settle()

    def caught_up(self, part: Hashable, at_end: bool = True) -> None:
        """Partition `part` has read everything there is for now (or no longer has)."""
        with self._lock:
            if at_end:
                self._caught_up.add(part)
            else:
                self._caught_up.discard(part)
            self._settle()

    def _settle(self) -> None:
        reading = [t for p, t in self._reached.items() if p not in self._caught_up]
        mark = min(reading) - self._lateness if reading else self._latest
        self._floor = max(self._floor, mark)
        now = time.monotonic()
        at, then = self._pace_at
        if now - at >= _PACE_WINDOW:
            if then > float("-inf") and self._floor > then:
                self._pace = (self._floor - then) / (now - at)
            self._pace_at = (now, self._floor)

    def observe(self, mark: float, latest: float, read_at: float | None = None) -> None:
        """Where the decoding process's event time was (a record's stamp), and when (wall
        clock) it read the record: a process that reads no input follows the one that
        does, and takes its silence for the input's end sooner when it was live."""
        self._heard = time.monotonic()
        self._heard_live = read_at is not None and mark >= read_at - self._lateness - _LIVE_WITHIN
        if mark > self._floor or latest > self._latest:
            with self._lock:
                self._floor = max(self._floor, mark)
                self._latest = max(self._latest, latest)

    # -- what the steps ask

    @property
    def follows_wall(self) -> bool:
        """Whether this is a service's clock (its watermark follows the wall clock)."""
        return self._follows_wall

    @property
    def latest(self) -> float:
        """The latest event time read (here, or by the process that decoded)."""
        return self._latest

    def at_end(self) -> float:
        """The watermark once the input has ended: everything there was has been read."""
        return max(self._floor, self._latest)

    @property
    def watermark(self) -> float:
        if self._follows_wall and self._idle():
            return max(self._floor, time.time() - self._lateness)
        return self._floor

    def freshness(self) -> float:
        """Wall clock minus the watermark, in seconds (NaN before any event time is
        known): how far behind real time this process's view of event time is."""
        lag = time.time() - self.watermark
        return lag if math.isfinite(lag) else math.nan

    def polled(self, parts: Iterable[Hashable], at: float) -> None:
        """A reader of this process polled these partitions, starting at `at` (monotonic),
        and has told what it found: what it said of them is as fresh as that."""
        polled = self._polled
        for part in parts:
            polled[part] = at

    def _idle(self) -> bool:
        if self._reached:  # this process reads: its partitions say, each if lately
            if len(self._caught_up) != len(self._reached):
                return False
            since = time.monotonic() - READER_GAP
            polled = self._polled
            return all(polled.get(part, since) > since for part in self._reached)
        # A process that reads nothing: caught up when no record has reached it lately.
        quiet = time.monotonic() - self._heard
        return quiet > (_QUIET if self._heard_live else _QUIET_BEHIND)

    def wake_at(self, due: float) -> float:
        """When (wall clock, epoch seconds) to ask again about something due at event
        time `due`: at once if the watermark has passed it; else when it should have,
        at the pace event time is going (a timer asks again if it has not)."""
        mark = self.watermark
        now = time.time()
        if due <= mark:
            return now
        if self._follows_wall and self._idle():
            return now + (due - mark)
        pace = self._pace
        wait = (due - mark) / pace if pace > 0 else _UNKNOWN_PACE_WAIT
        return now + min(max(wait, _MIN_WAIT), _MAX_WAIT)

    def restore(self, latest: float, reached: dict[Hashable, float]) -> None:
        """Where a resumed run's input had got at the snapshot: the latest event time,
        and each partition's (a partition registered later starts from its own)."""
        with self._lock:
            self._latest = max(self._latest, latest)
            self._resumed = dict(reached)
            for part, ts in reached.items():
                if part in self._reached:
                    self._reached[part] = max(self._reached[part], ts)
            mark = min(reached.values()) - self._lateness if reached else latest
            self._floor = max(self._floor, mark)


#: The one key of the watermark step.
WATERMARK_KEY = "watermark"

#: What the watermark step keeps: the latest event time read, whether the input had
#: ended, and each input partition's latest event time.
WatermarkState = tuple[float, bool, dict[Hashable, float]]


class WatermarkLogic(StatefulBatchLogic[EventTime, None, WatermarkState]):
    """Keeps the watermark as recoverable state; a resumed run starts the clock there.

    It also keeps whether the input has ended: a run resumed after its end, with no
    new input, must not emit its end-of-input outputs (the map's open journeys) twice.
    """

    def __init__(self, clock: EventClock, resume_state: tuple[object, ...] | None) -> None:
        self._clock = clock
        self._latest = float("-inf")
        self._ended = False
        self._reached: dict[Hashable, float] = {}
        if resume_state is not None:
            latest, ended, *rest = resume_state  # (a snapshot of before: no partitions)
            assert isinstance(latest, float) and isinstance(ended, bool)
            self._latest, self._ended = latest, ended
            if rest and isinstance(rest[0], dict):
                self._reached = dict(rest[0])
            clock.restore(self._latest, self._reached)
        clock.resumed_after_end = self._ended

    def on_batch(self, values: list[EventTime]) -> tuple[Iterable[None], bool]:
        reached = self._reached
        for tick in values:
            if tick > self._latest:
                self._latest = float(tick)
            part = tick.part
            if part is not None and tick > reached.get(part, float("-inf")):
                reached[part] = float(tick)
        self._ended = False
        return [], False

    def on_eof(self) -> tuple[Iterable[None], bool]:
        self._ended = not self._clock.stop.requested  # a stop is not the input's end
        return [], False

    def snapshot(self) -> WatermarkState:
        return self._latest, self._ended, dict(self._reached)
