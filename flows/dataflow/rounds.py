"""The rounds of an embedded run, which make it the same on any number of workers.

An embedded run reads back some of what it writes (the events topic's loop, and
with the lab's closed loop the actions its simulated customers react to), and
its models learn from what it decides. Left to the scheduler, how far each
worker had got when a model learned or a loop event came back would decide the
outputs. Instead the run goes in rounds, kept here.
"""

import threading


class Rounds:
    """The rounds of an embedded run: what is in flight, and whose turn it is.

    A round is one batch of one input partition (or the loop events of the round
    before), with everything it causes: folding, the outputs that come back as
    input, and the learning of the examples it teaches. The next round starts
    only when this one has settled, and the input partition furthest behind in
    event time goes next (ties: the first listed), so the rounds, and everything
    decided in them, are the same on any number of workers and after a resume.
    Examples are learned when every record of their round has been folded and
    every example has reached its learner, never while the round is deciding.
    """

    def __init__(
        self, primary_parts: list[str], feedback: tuple[str, ...] = (), consumers: int = 1
    ) -> None:
        """`feedback`: prefixes of output topics the primary input reads back;
        `consumers`: customer steps that fold every record (a challenger is a second)."""
        self.feedback = feedback
        self.consumers = consumers
        self._lock = threading.Lock()
        self._order = {part: i for i, part in enumerate(primary_parts)}
        self._reached = dict.fromkeys(primary_parts, float("-inf"))
        self._records = 0  # handed to the customer steps, not yet folded (per consumer)
        self._outputs = 0  # emitted to come back as input, not yet written
        self._emitted = self._arrived = self._learned = 0  # examples, since the start
        # Byte offsets in the events topic's file: written up to, and read back up to.
        # Offsets, not counts: both are restored from the snapshots on a resume, so
        # loop events written before a crash and not yet read still hold the input.
        self._loop_written = 0
        self._loop_read = 0
        self._ended = False
        self._turn: str | None = None  # the partition handing over right now

    # -- records

    def started(self, n: int) -> None:
        """`n` records entered the flow (read from an input, or split in two)."""
        if n:
            with self._lock:
                self._records += n * self.consumers

    def settled(self, n: int, *, all_consumers: bool = False) -> None:
        """`n` records were folded by one customer step (or, `all_consumers`, left the
        flow before reaching any: dead letters)."""
        if n:
            with self._lock:
                self._records -= n * (self.consumers if all_consumers else 1)

    # -- outputs that come back

    def fed_back(self, topic: str) -> bool:
        """Whether the primary input reads this output topic back."""
        return topic.startswith(self.feedback) if self.feedback else False

    def emitted(self, outputs: int, examples: int) -> None:
        """A customer step emitted outputs that come back as input, and examples."""
        if outputs or examples:
            with self._lock:
                self._outputs += outputs
                self._emitted += examples

    def written(self, n: int, end: int) -> None:
        """`n` loop events reached the loop file, which now ends at byte `end` (they leave
        the flow until read back)."""
        with self._lock:
            self._outputs -= n
            self._loop_written = end

    def delivered(self, n: int) -> None:
        """`n` outputs that the input reads back reached their topic file."""
        if n:
            with self._lock:
                self._outputs -= n

    def read_back(self, n: int, offset: int) -> None:
        """`n` loop events were read back, up to byte `offset` of the loop file."""
        with self._lock:
            self._loop_read = offset
            self._records += n * self.consumers

    # -- examples

    def arrived(self, n: int) -> None:
        """`n` examples reached their learner."""
        with self._lock:
            self._arrived += n

    def learned(self, n: int) -> None:
        with self._lock:
            self._learned += n

    def may_learn(self) -> bool:
        """Every record handed over is folded and every example has reached its
        learner: nothing of this round decides any more. After the input's end, the
        learners wait for their own end (the last wakes may still be deciding)."""
        with self._lock:
            return not self._ended and self._records <= 0 and self._arrived >= self._emitted

    # -- rounds

    def _round_over(self) -> bool:
        return self._records <= 0 and self._outputs <= 0 and self._learned >= self._emitted

    def _loop_behind(self) -> bool:
        return self._loop_read < self._loop_written

    def quiet(self) -> bool:
        """The round is over: everything it caused is written and learned."""
        with self._lock:
            return self._round_over()

    def take_turn(self, part: str) -> bool:
        """Take the turn for `part` if the round is over, the loop file is read to its
        end, and `part` is furthest behind; nobody else hands over until `hand_over`."""
        with self._lock:
            if self._turn is not None or not self._round_over() or self._loop_behind():
                return False
            reached = self._reached
            if part != min(reached, key=lambda p: (reached[p], self._order[p])):
                return False
            self._turn = part
            return True

    def hand_over(self, part: str, records: int, event_time: float) -> None:
        """`part`, holding the turn, hands over `records`, having got to `event_time`."""
        with self._lock:
            self._reached[part] = event_time
            self._records += records * self.consumers
            self._turn = None

    def reached(self, part: str, event_time: float) -> None:
        """How far in event time `part` got before this run (a resumed partition)."""
        with self._lock:
            self._reached[part] = event_time

    def primary_finished(self, part: str) -> None:
        with self._lock:
            self._reached.pop(part, None)
            if self._turn == part:
                self._turn = None

    def idle(self) -> bool:
        """Nothing more can reach the loop file: inputs done, the last round over."""
        with self._lock:
            done = not self._reached and self._round_over() and not self._loop_behind()
            if done:
                self._ended = True
            return done
