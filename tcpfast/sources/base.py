"""What every source of rows is: one small protocol, and the snapshot one read gives."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .netlink_events import DestroyEvents

Warn = Callable[[str], None]
#: Asked between reads: true once the read must stop (a deadline passed, a stop signal).
StopReading = Callable[[], bool]


@dataclass(frozen=True)
class Snapshot:
    """One poll's rows, and what the reading had to skip, fold or cut short."""

    rows: np.ndarray
    malformed: int = 0
    duplicates: int = 0
    complete: bool = True     # False: the read was stopped, rows may be missing
    namespaces: int = 1       # network namespaces read
    unread: int = 0           # namespaces found that could not be read: their rows are missing


class Source(Protocol):
    """Where a poll's rows come from: a namespace's /proc tables, its sock_diag dump,
    many namespaces at once. A source may keep what it needs open between reads
    (a netlink socket); ``close`` releases it."""

    @property
    def kind(self) -> str:
        """What it reads through: "proc" or "netlink" (metrics say it)."""
        ...

    @property
    def where(self) -> str:
        """What it reads, for messages: ``/proc/net/tcp*``, ``the sock_diag dump``..."""
        ...

    def read(self, *, size_hint: int = 0, stop_reading: StopReading | None = None) -> Snapshot:
        """The TCP sockets now, each connection once. ``size_hint``: rows expected
        (the last read's); ``stop_reading()`` is asked between reads, and once it is
        true the snapshot ends there, not complete. OSError when the source fails."""
        ...

    def destroy_events(self, warn: Warn) -> DestroyEvents | None:
        """A receiver of the sockets destroyed between reads in what it reads, or
        None: the source has none, or could not open it (said on ``warn``)."""
        ...

    def opened(self) -> int | None:
        """How many sockets the kernel says were established in what it reads, since a
        moment of its own (a running total: differences between two calls count): the
        namespaces' TCP counters (tcpfast.sources.snmp). None where it reads no live
        namespace (recorded tables); OSError or ValueError when they cannot be read."""
        ...

    def close(self) -> None:
        ...


def stop_reading_at(deadline: float | None, cancelled: Callable[[], bool] | None = None
                    ) -> StopReading | None:
    """True past ``deadline`` (time.monotonic()) or once ``cancelled()``; None: never."""
    if deadline is None and cancelled is None:
        return None

    def stop_reading() -> bool:
        return ((deadline is not None and time.monotonic() > deadline)
                or (cancelled is not None and cancelled()))
    return stop_reading
