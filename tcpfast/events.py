"""The event model every stage shares: rows of one kind of event, and what was learnt of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .enrich.owners import Owner
from .schema import CONNECTION_DTYPE
from .sources import Snapshot

if TYPE_CHECKING:
    from .detect.scans import PortScan
    from .outputs.firewall import Block


class Stopped(Exception):
    """A stop signal came while a poll was under way: the poll was given up between two
    of its steps (the read, the owner lookup, a batch of lines), after whole lines only.
    ``unwritten``: lines of the poll not written (0 when it stopped before printing)."""

    def __init__(self, unwritten: int = 0) -> None:
        super().__init__(f"{unwritten} line(s) not written")
        self.unwritten = unwritten


@dataclass(frozen=True)
class RowEvents:
    """Rows of one kind of event (``new``, ``closed``), with what was learnt of each."""

    event: str
    rows: np.ndarray
    direction: np.ndarray                      # enrich.direction codes
    duration: np.ndarray | None = None         # seconds seen open; NaN where unknown
    owners: list[Owner | None] | None = None   # holding process per row (None: not found); not looked up
    times: np.ndarray | None = None            # time.time() of each event; None: the poll's

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> RowEvents:
        return RowEvents(self.event, self.rows[part], self.direction[part],
                         None if self.duration is None else self.duration[part],
                         None if self.owners is None else self.owners[part],
                         None if self.times is None else self.times[part])


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
    #: Opened and closed since the last poll (netlink's destroy events), at their close times.
    new_and_closed: RowEvents = field(default_factory=lambda: no_rows("new_and_closed"))
