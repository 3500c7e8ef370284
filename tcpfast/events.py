"""The event model every stage shares: rows of one kind of event, and what was learnt of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .enrich.owners import Owner
from .schema import CONNECTION_DTYPE
from .sources import Snapshot

if TYPE_CHECKING:
    from .detect.coverage import Counted
    from .detect.scans import PortScan
    from .outputs.firewall import Block


#: Bits of ``RowEvents.unknown``: parts of a row the kernel did not give for that
#: event (a socket reset on close reaches its destroy event without its local
#: address and remote port); JSON prints them null, text ``*``.
UNKNOWN_LOCAL_ADDRESS, UNKNOWN_LOCAL_PORT = 0x01, 0x02
UNKNOWN_REMOTE_ADDRESS, UNKNOWN_REMOTE_PORT = 0x04, 0x08
UNKNOWN_UID = 0x10            # destroy events carry no uid: JSON null (text has none)


@dataclass(frozen=True)
class Holder:
    """Who holds a network namespace: a container, a Kubernetes pod (None: not known)."""

    container_id: str | None = None
    pod_uid: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None


_PER_ROW = ("rows", "direction", "duration", "owners", "times", "unknown", "info", "holder")


class Stopped(Exception):
    """A stop signal came while a poll was under way: the poll was given up between two
    of its steps (the read, the owner lookup, a batch of lines), after whole lines only.
    ``unwritten``: lines of the poll not written (0 when it stopped before printing)."""

    def __init__(self, unwritten: int = 0) -> None:
        super().__init__(f"{unwritten} line(s) not written")
        self.unwritten = unwritten


@dataclass(frozen=True)
class RowEvents:
    """Rows of one kind of event (``new``, ``closed``, ``new_and_closed``), with what was
    learnt of each: every column is per row, None where nothing of its kind is known."""

    event: str
    rows: np.ndarray
    direction: np.ndarray                      # enrich.direction codes
    duration: np.ndarray | None = None         # seconds seen open; NaN where unknown
    owners: list[Owner | None] | None = None   # holding process per row (None: not found); not looked up
    times: np.ndarray | None = None            # time.time() of each event; None: the poll's
    unknown: np.ndarray | None = None          # uint8 UNKNOWN_* bits per row; None: all known
    info: np.ndarray | None = None             # CLOSE_INFO_DTYPE per row (closed events)
    holder: np.ndarray | None = None           # int32 index into ``holders`` per row; -1: none
    holders: tuple[Holder, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> RowEvents:
        columns: dict[str, Any] = {name: None if getattr(self, name) is None
                                   else getattr(self, name)[part] for name in _PER_ROW}
        return RowEvents(self.event, holders=self.holders, **columns)

    def where(self, keep: np.ndarray) -> RowEvents:
        """The events whose ``keep`` (a boolean per row) is true."""
        if keep.all():
            return self
        index = np.flatnonzero(keep)
        columns: dict[str, Any] = {}
        for name in _PER_ROW:
            column = getattr(self, name)
            columns[name] = (None if column is None else [column[i] for i in index.tolist()]
                             if isinstance(column, list) else column[index])
        return RowEvents(self.event, holders=self.holders, **columns)


def no_rows(event: str) -> RowEvents:
    """An empty batch of ``event``."""
    return RowEvents(event, np.empty(0, CONNECTION_DTYPE), np.empty(0, np.uint8),
                     np.empty(0) if event in ("closed", "new_and_closed") else None)


@dataclass(frozen=True)
class Poll:
    """What one poll found, and what the later stages made of it."""

    time: float                                # time.time() of the poll
    snapshot: Snapshot
    first: bool
    new: RowEvents = field(default_factory=lambda: no_rows("new"))
    closed: RowEvents = field(default_factory=lambda: no_rows("closed"))
    #: Connections first seen by this poll, in any state (none on the first poll,
    #: whose connections are of unknown age): what port-scan detection counts.
    appeared: RowEvents = field(default_factory=lambda: no_rows("appeared"))
    scans: tuple[PortScan, ...] = ()
    blocks: tuple[Block, ...] = ()
    #: Opened and closed since the last poll (netlink's destroy events, TIME_WAIT rows of
    #: connections no poll saw open), at their close times.
    new_and_closed: RowEvents = field(default_factory=lambda: no_rows("new_and_closed"))
    #: Sockets this poll saw established since the last one (listed past the handshake
    #: for the first time, or heard of destroyed): what the kernel's counters count too.
    established: int = 0
    #: What the kernel's counters say was opened since the last poll, and missed (None:
    #: not counted: the first poll, or no counters).
    counted: Counted | None = None
    #: Times destroyed-socket events were dropped since the last poll.
    events_lost: int = 0
