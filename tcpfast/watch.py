"""One poll after another: what is new, what closed, and which way each goes.

The watcher keeps the last poll's rows as its baseline, with what it knows of
each connection beside them (when it was first seen, its direction, whether
it was reported), and carries that over to the next poll through the key
match (``diff.keys.match``), all with vectorised operations.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from .diff import keys
from .enrich.direction import DEFAULT_EPHEMERAL_PORTS, directions
from .events import Poll, RowEvents, no_rows
from .schema import STATE_CODES
from .sources import Snapshot

_TIME_WAIT = STATE_CODES["TIME_WAIT"]


@dataclass
class _Baseline:
    """The rows the next poll is compared with, and what is known of each."""

    rows: np.ndarray
    first_seen: np.ndarray      # time.time() of the first poll that saw it; NaN: before the start
    direction: np.ndarray
    reported: np.ndarray        # reported as new (or present in a chosen state at the start)
    ghost: np.ndarray           # gone at the last poll, kept one poll to recognise a missed read

    def take(self, index: np.ndarray) -> _Baseline:
        return _Baseline(self.rows[index], self.first_seen[index], self.direction[index],
                         self.reported[index], self.ghost[index])

    @staticmethod
    def join(*parts: _Baseline) -> _Baseline:
        return _Baseline(*(np.concatenate([getattr(p, name) for p in parts])
                           for name in ("rows", "first_seen", "direction", "reported", "ghost")))


class Watcher:
    """Turns successive snapshots into new and closed connections.

    - New: a connection in a chosen state (``states``; by default every state
      but TIME_WAIT, which is what is left of a connection, not a new one)
      that was not reported before: absent from the last poll, present there
      with another socket inode (closed and reopened), or there in a state not
      chosen (SYN_RECV, then ESTABLISHED under ``--state established``).
    - Closed: a connection seen with a socket inode whose socket is gone: its
      key is absent, or listed only without an inode (TIME_WAIT after an
      active close; FIN_WAIT2 once its owner exited). Reported once, with how
      long it was seen open; only for connections that were reported.
    - A poll cut short (``snapshot.complete`` false) may lack rows of live
      connections: they stay in the baseline and none of them is closed; the
      next poll that lists a connection it did not see reports it.
    - A socket one poll misses and the next lists again (same key and inode:
      a read or dump is not atomic under churn) is not new.
    """

    def __init__(self, states: Collection[int] | None = None, *, skip_existing: bool = False,
                 ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL_PORTS) -> None:
        self._states = np.array(sorted(states), dtype=np.uint8) if states else None
        self._skip_existing = skip_existing
        self._ephemeral = ephemeral
        self._baseline: _Baseline | None = None

    def _chosen(self, rows: np.ndarray) -> np.ndarray:
        if self._states is None:
            return rows["state"] != _TIME_WAIT
        return np.isin(rows["state"], self._states)

    def update(self, snapshot: Snapshot, now: float) -> Poll:
        """This poll's events; on the first poll every current connection is new
        (none with ``skip_existing``)."""
        rows = snapshot.rows
        chosen = self._chosen(rows)
        if self._baseline is None:
            direction = directions(rows, ephemeral=self._ephemeral)
            self._baseline = _Baseline(rows, np.full(len(rows), math.nan), direction, chosen,
                                       np.zeros(len(rows), dtype=bool))
            new = np.zeros(len(rows), dtype=bool) if self._skip_existing else chosen
            return Poll(now, snapshot, True, RowEvents("new", rows[new], direction[new]))
        before = self._baseline
        index = keys.match(rows, before.rows)
        seen = index >= 0
        at = index[seen]
        # A ghost counts only as the very same socket: the same non-zero inode.
        same_ghost = (rows["inode"][seen] == before.rows["inode"][at]) & (rows["inode"][seen] != 0)
        seen[seen] = ~before.ghost[at] | same_ghost
        at = index[seen]
        current = _Baseline(rows, np.full(len(rows), now), np.empty(len(rows), np.uint8),
                            np.zeros(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool))
        current.first_seen[seen] = before.first_seen[at]
        current.direction[seen] = before.direction[at]
        current.direction[~seen] = directions(rows[~seen], listeners=rows,
                                              ephemeral=self._ephemeral)
        current.reported[seen] = before.reported[at]
        new = chosen & ~current.reported
        current.reported |= chosen

        listed = np.zeros(len(before.rows), dtype=bool)      # some row of this poll is it
        listed[at] = True
        alive = np.zeros(len(before.rows), dtype=bool)       # ... and still has a socket
        alive[index[seen & (rows["inode"] != 0)]] = True
        ended = ~alive & ~before.ghost & (before.rows["inode"] != 0)
        carried = np.zeros(len(before.rows), dtype=bool)
        if not snapshot.complete:   # what the read did not reach is still open, as far as we know
            carried = ~listed & ~before.ghost
            ended &= listed
        closed = ended & before.reported
        ghosts = before.take(ended)
        ghosts.ghost[:] = True
        self._baseline = _Baseline.join(current, before.take(carried), ghosts)
        return Poll(now, snapshot, False, RowEvents("new", rows[new], current.direction[new]),
                    RowEvents("closed", before.rows[closed], before.direction[closed],
                              now - before.first_seen[closed]))
