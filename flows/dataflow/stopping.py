"""A clean stop: SIGTERM (Kubernetes, systemd, Docker) and Ctrl-C end the input, not
the process.

A signal only sets a flag. Each input partition ends at its next batch; the flow
then finishes what it holds, flushes its sinks, takes its last snapshot when
recovery is on, and returns, so the caller prints its summary and exits 0. A second
signal is the operator insisting: it stops the process at once. SIGUSR1 writes where
every thread is to stderr, and the process goes on.
"""

import faulthandler
import logging
import signal
import sys
import threading
from types import FrameType

logger = logging.getLogger(__name__)


class StopRequest:
    """Whether a stop was asked for, and by what."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def on_signals(self) -> None:
        """Turn SIGTERM and SIGINT into this request (from the main thread only, as
        Python's signal handlers are); SIGUSR1 as `stacks_on_sigusr1` says."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        stacks_on_sigusr1()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.request(name)
        logger.warning("%s: stopping after the batch in hand (again to stop at once)", name)


def stacks_on_sigusr1() -> None:
    """SIGUSR1: every thread's stack on the process's stderr (its file descriptor, not a
    stream a caller put in its place), written at once by the interpreter, even while a
    thread is inside a client library's call where no Python handler runs; the process
    goes on."""
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
