"""One poll after another: what is new, what closed, and which way each goes.

The watcher keeps the last poll's rows as its baseline, with what it knows of
each connection beside them (when it was first seen, its direction, whether
it was reported, its owner), and carries that over to the next poll through
the key match (``diff.keys.match``), all with vectorised operations.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from .diff import keys
from .enrich.direction import DEFAULT_EPHEMERAL_PORTS, directions
from .enrich.owners import Owner
from .events import Poll, RowEvents, no_rows
from .schema import STATE_CODES
from .sources import Snapshot

_TIME_WAIT = STATE_CODES["TIME_WAIT"]


_COLUMNS = ("rows", "inode", "first_seen", "direction", "reported", "owner")
_NO_OWNER = -1
#: Owners held at least, before the table of owners is compacted to those still in use.
_OWNERS_BEFORE_COMPACTING = 1024


@dataclass
class _Known:
    """Rows of connections, and what is known of each, as contiguous columns."""

    rows: np.ndarray
    inode: np.ndarray           # rows["inode"], contiguous: read several times a poll
    first_seen: np.ndarray      # time.time() of the first poll that saw it; NaN: before the start
    direction: np.ndarray
    reported: np.ndarray        # reported as new (or present in a chosen state at the start)
    owner: np.ndarray           # index into the watcher's owners, found when it was new; -1: none

    def take(self, which: np.ndarray) -> _Known:
        return _Known(*(getattr(self, name)[which] for name in _COLUMNS))

    @staticmethod
    def join(*parts: _Known) -> _Known:
        return _Known(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in _COLUMNS))


class _Owners:
    """Owners of the connections the watcher knows, each held once; a connection holds
    its owner's index. Compacted to the owners still in use whenever it has doubled,
    so its size follows the connections known, not every process ever seen."""

    def __init__(self) -> None:
        self.owners: list[Owner] = []
        self._index: dict[Owner, int] = {}
        self._compact_above = _OWNERS_BEFORE_COMPACTING

    def indexes(self, owners: Sequence[Owner | None]) -> np.ndarray:
        """Each owner's index (added if new), -1 for None: one step per new connection."""
        index = self._index
        for owner in set(owners) - index.keys() - {None}:
            assert owner is not None
            index[owner] = len(self.owners)
            self.owners.append(owner)
        return np.array([_NO_OWNER if owner is None else index[owner] for owner in owners],
                        dtype=np.int32)

    def named(self, indexes: np.ndarray) -> list[Owner | None]:
        return [None if at < 0 else self.owners[at] for at in indexes.tolist()]

    def compact(self, *columns: np.ndarray) -> None:
        """Forget the owners none of ``columns`` (index arrays, renumbered in place) holds."""
        if len(self.owners) <= self._compact_above:
            return
        used = np.unique(np.concatenate([column[column >= 0] for column in columns]))
        for column in columns:
            holds = column >= 0
            column[holds] = np.searchsorted(used, column[holds])
        self.owners = [self.owners[at] for at in used.tolist()]
        self._index = {owner: at for at, owner in enumerate(self.owners)}
        self._compact_above = max(_OWNERS_BEFORE_COMPACTING, 2 * len(self.owners))


class Watcher:
    """Turns successive snapshots into new and closed connections.

    - New: a connection in a chosen state (``states``; by default every state
      but TIME_WAIT, which is what is left of a connection, not a new one)
      that was not reported before: absent from the last poll, present there
      with another socket inode (closed and reopened), or there in a state not
      chosen (SYN_RECV, then ESTABLISHED under ``--state established``).
    - Closed: a connection seen with a socket inode whose socket is gone: its
      key is absent, or listed only without an inode (TIME_WAIT after an active
      close; FIN_WAIT2 once its owner exited). Reported once, with how long it
      was seen open; only for connections that were reported.
    - A poll cut short (``snapshot.complete`` false) may lack rows of live
      connections: they stay in the baseline and none of them is closed; the
      next poll that lists a connection it did not see reports it.
    - A socket one poll misses and the next lists again (the same key and the
      same inode: a read or a dump is not atomic under churn) is not new: what
      vanished is kept for one more poll to recognise it.
    - Owners named for a poll's new connections (:meth:`name_owners`, after the
      update) are remembered with them: their closed events carry them.
    """

    def __init__(self, states: Collection[int] | None = None, *, skip_existing: bool = False,
                 ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL_PORTS) -> None:
        self._states = np.array(sorted(states), dtype=np.uint8) if states else None
        self._skip_existing = skip_existing
        self._ephemeral = ephemeral
        self._known: _Known | None = None
        self._vanished: _Known | None = None      # gone at the last poll
        self._owners: _Owners | None = None       # None: no owner was ever named
        self._new_at = np.empty(0, dtype=np.int64)  # where the last update's new rows are known

    def _chosen(self, rows: np.ndarray) -> np.ndarray:
        if self._states is None:
            return rows["state"] != _TIME_WAIT
        return np.isin(rows["state"], self._states)

    def update(self, snapshot: Snapshot, now: float) -> Poll:
        """This poll's events; on the first poll every current connection is new
        (none with ``skip_existing``)."""
        rows = snapshot.rows
        inode = np.ascontiguousarray(rows["inode"])
        chosen = self._chosen(rows)
        if self._known is None or self._vanished is None:
            direction = directions(rows, ephemeral=self._ephemeral)
            self._known = _Known(rows, inode, np.full(len(rows), math.nan), direction, chosen,
                                 np.full(len(rows), _NO_OWNER, dtype=np.int32))
            self._vanished = self._known.take(np.zeros(len(rows), dtype=bool))
            new = np.zeros(len(rows), dtype=bool) if self._skip_existing else chosen
            self._new_at = np.flatnonzero(new)
            return Poll(now, snapshot, True, RowEvents("new", rows[new], direction[new]))
        before = self._known
        index = keys.match(rows, before.rows)
        seen = index >= 0
        # What is known of each row: gathered from the row it matched (most of them) ...
        if len(before.rows):
            gather = np.where(seen, index, 0)
            current = _Known(rows, inode, before.first_seen[gather], before.direction[gather],
                             before.reported[gather] & seen,
                             np.where(seen, before.owner[gather], _NO_OWNER).astype(np.int32))
        else:
            current = _Known(rows, inode, np.empty(len(rows)), np.empty(len(rows), np.uint8),
                             np.zeros(len(rows), dtype=bool),
                             np.full(len(rows), _NO_OWNER, dtype=np.int32))
        unseen = np.flatnonzero(~seen)
        if len(unseen):             # ... or from a missed read, or found now
            current.first_seen[unseen] = now
            back = self._back_from_a_missed_read(rows[unseen], inode[unseen])
            found = back >= 0
            for name in ("first_seen", "direction", "reported", "owner"):
                getattr(current, name)[unseen[found]] = getattr(self._vanished, name)[back[found]]
            fresh = unseen[~found]
            current.direction[fresh] = directions(rows[fresh], listeners=rows,
                                                  ephemeral=self._ephemeral)
        else:
            fresh = unseen
        new = chosen & ~current.reported
        current.reported |= chosen
        self._new_at = np.flatnonzero(new)        # current's rows come first in what is known

        listed = np.zeros(len(before.rows), dtype=bool)      # some row of this poll is it
        listed[index[seen]] = True
        alive = np.zeros(len(before.rows), dtype=bool)       # ... and still has a socket
        alive[index[seen & (inode != 0)]] = True
        ended = ~alive & (before.inode != 0)
        if snapshot.complete and not snapshot.unread:
            self._known = current
        else:           # what the read did not reach is still open, as far as we know
            ended &= listed
            self._known = _Known.join(current, before.take(~listed))
        closed = ended & before.reported
        self._vanished = before.take(ended)
        owners = None                             # not looked up
        if self._owners is not None:
            owners = self._owners.named(before.owner[closed])
            self._owners.compact(self._known.owner, self._vanished.owner)
        return Poll(now, snapshot, False, RowEvents("new", rows[new], current.direction[new]),
                    RowEvents("closed", before.rows[closed], before.direction[closed],
                              now - before.first_seen[closed], owners),
                    RowEvents("appeared", rows[fresh], current.direction[fresh]))

    @property
    def owners_held(self) -> int:
        """Owners remembered now: bounded by the connections known, not by all ever seen."""
        return 0 if self._owners is None else len(self._owners.owners)

    def name_owners(self, owners: Sequence[Owner | None], kept: np.ndarray | None = None) -> None:
        """The owners found for the last update's new rows, in their order (None: not
        found): remembered with each connection, for its closed event. ``kept``: which
        of the new rows they are for (a selection reported only those), if not all."""
        new_at = self._new_at if kept is None else self._new_at[kept]
        if len(owners) != len(new_at):
            raise ValueError(f"{len(owners)} owners for {len(new_at)} new rows")
        if self._owners is None:
            self._owners = _Owners()
        assert self._known is not None
        self._known.owner[new_at] = self._owners.indexes(owners)

    def opened_and_closed(self, destroyed: np.ndarray, times: np.ndarray,
                          listeners: np.ndarray) -> RowEvents:
        """Of sockets destroyed since the last poll (netlink's destroy events, drained
        before this poll's read), the connections no poll listed: ``new_and_closed``,
        at the times they closed. Call it before :meth:`update`.

        Those a poll listed are left to the diff (its ``closed``); so are
        listeners and sockets that never had a peer, or lost it (SO_LINGER 0),
        with remote port 0; and none when the chosen states leave out
        ESTABLISHED (a destroyed socket's state is CLOSE, its path unknown).
        """
        chosen = self._states is None or STATE_CODES["ESTABLISHED"] in self._states
        if self._known is None or not chosen or not len(destroyed):
            return no_rows("new_and_closed")
        unseen = (destroyed["remote_port"] != 0) & ~keys.matched(destroyed, self._known.rows)
        rows, when = destroyed[unseen], times[unseen]
        return RowEvents("new_and_closed", rows,
                         directions(rows, listeners=listeners, ephemeral=self._ephemeral),
                         np.full(len(rows), math.nan), times=when)

    def _back_from_a_missed_read(self, rows: np.ndarray, inode: np.ndarray) -> np.ndarray:
        """For each row, the index of the vanished row that is the very same
        socket (the same key and the same non-zero inode), or -1."""
        assert self._vanished is not None
        if not len(self._vanished.rows):
            return np.full(len(rows), -1, dtype=np.int64)
        index = keys.match(rows, self._vanished.rows)
        same = (index >= 0) & (inode != 0) & (inode == self._vanished.inode[index])
        return np.where(same, index, -1)
