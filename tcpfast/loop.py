"""The cadence: polls on a monotonic schedule until a stop signal, or until nobody reads."""

from __future__ import annotations

import math
import os
import select
import signal
import stat
import time
from collections.abc import Callable

MAX_WAIT_MS = 2**31 - 1
"""poll()'s timeout is a C int of milliseconds (about 24.8 days): longer waits are chunked."""
MIN_INTERVAL = 0.001
"""Seconds: the wait's resolution (poll() counts milliseconds)."""
MAX_INTERVAL = MAX_WAIT_MS / 1000
"""Seconds between polls at most: one wait, one poll() (a longer interval is a unit mistake)."""


class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop; the wait between polls ends at once.

    The handler only sets a flag (and remembers the first signal, ``signal``);
    Python's wakeup fd makes the pending ``poll()`` return. A poll under way
    looks at ``requested`` between its steps and gives up (``events.Stopped``),
    after whole lines only. When the output is a pipe, the wait also watches
    it: once its reader has gone (``tcpfast | head -1``), the loop stops then,
    not at its next write.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, output_fd: int | None = None) -> None:
        self.requested = False
        self.signal: int | None = None      # the first stop signal received, if any
        self.output_gone = False
        self._output_fd = output_fd if output_fd is not None and _is_pipe(output_fd) else None

    def __enter__(self) -> StopSignals:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._old_handlers = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is None:
            self.signal = signum
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the loop should stop."""
        if self.requested or seconds <= 0:
            return self.requested
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        if self._output_fd is not None:
            poller.register(self._output_fd, 0)        # errors only: the reader has gone
        deadline = time.monotonic() + seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, events in poller.poll(min(math.ceil(left * 1000), MAX_WAIT_MS)):
                if fd == self._read_fd:
                    try:
                        os.read(self._read_fd, 512)
                    except BlockingIOError:
                        pass
                elif events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    self.output_gone = self.requested = True
        return self.requested


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def run_every(interval: float, poll: Callable[[], None], stop: StopSignals,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Call ``poll`` at ``start + k * interval`` on a monotonic clock until stopped.

    A poll that overruns skips the ticks it missed instead of bursting to
    catch up, and a slow poll never shifts the later ones.
    """
    start = clock()
    while True:
        poll()
        now = clock()
        next_tick = start + (math.floor((now - start) / interval) + 1) * interval
        if stop.wait(next_tick - now):
            return
