"""The polling loop: keep the cadence, diff each poll against the last, hand on what is new."""

from __future__ import annotations

import math
import os
import select
import signal
import time
from collections.abc import Callable, Collection

import numpy as np

from .diff.changes import new_connections
from .sources import Snapshot


class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop; the wait between polls ends at once.

    The signal handler only sets a flag; Python's wakeup fd makes the pending
    ``select()`` return, so a stop never cuts a poll's output in half.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False

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
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was asked for."""
        if not self.requested and seconds > 0:
            ready, _, _ = select.select([self._read_fd], [], [], seconds)
            if ready:
                try:
                    os.read(self._read_fd, 512)
                except BlockingIOError:
                    pass
        return self.requested


class Watcher:
    """Turns successive snapshots into the rows that are new in each.

    Rows are kept to the chosen states before the diff, so a connection that
    enters a chosen state (SYN_RECV, then ESTABLISHED) is reported when it does.
    """

    def __init__(self, states: Collection[int] | None = None) -> None:
        self._states = np.array(sorted(states), dtype=np.uint8) if states else None
        self._previous: np.ndarray | None = None

    def update(self, snapshot: Snapshot) -> np.ndarray:
        """The new rows of this snapshot; on the first, every row.

        A snapshot cut short (its read hit the deadline) may lack rows that
        are still open: what it did not see stays in the baseline, so the next
        complete poll does not report those again.
        """
        rows = snapshot.rows
        if self._states is not None:
            rows = rows[np.isin(rows["state"], self._states)]
        if self._previous is None:
            new = rows
        else:
            new = new_connections(self._previous, rows)
        if snapshot.complete or self._previous is None:
            self._previous = rows
        else:
            self._previous = np.concatenate([self._previous, new])
        return new


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
