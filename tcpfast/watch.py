"""One poll after another: what is new, what closed, and which way each goes.

The watcher keeps the last poll's rows as its baseline, with what it knows of
each connection beside them (when it was first seen, its direction, whether
it was reported, its owner), and carries that over to the next poll through
the key match (``diff.keys.match``), all with vectorised operations.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .diff import keys
from .enrich.direction import DEFAULT_EPHEMERAL_PORTS, directions
from .enrich.owners import Owner
from .events import (
    UNKNOWN_LOCAL_ADDRESS,
    UNKNOWN_REMOTE_PORT,
    UNKNOWN_UID,
    Poll,
    RowEvents,
)
from .schema import (
    CLOSE_INFO_DTYPE,
    CONNECTION_DTYPE,
    KNOWN_MIN_RTT,
    STATE_CODES,
    TIMEWAIT_TIMER,
    concatenate_rows,
    take_rows,
)
from .sources import Snapshot

if TYPE_CHECKING:
    from .sources.netlink_events import Destroyed

_ESTABLISHED = STATE_CODES["ESTABLISHED"]


def _state_table(codes: Iterable[int]) -> np.ndarray:
    """A table of 256 bools, one per state code: true for the states ``codes``."""
    table = np.zeros(256, dtype=bool)
    table[list(codes)] = True
    return table


# A row's kind: its state, whether its timer is the timewait timer and whether it has
# an inode, in 16 bits (_kinds). Read from the 80-byte rows once a poll, it answers
# every question the watcher asks of a row by a lookup in a table of 1024 bools: a
# pass over one field of 10^6 rows reads all 80 MB of them (and np.isin makes
# temporaries of several bytes a row), a lookup reads 2 MB.
_WITH_TIMEWAIT_TIMER, _WITH_INODE = 1 << 8, 1 << 9
_KIND = np.arange(1 << 10)


def _by_kind(states: np.ndarray) -> np.ndarray:
    """A table by state code (256 bools) as a table by kind."""
    return states[_KIND & 0xFF]


def _in_states(*names: str) -> np.ndarray:
    return _by_kind(_state_table(STATE_CODES[name] for name in names))


_ON_TIMEWAIT_TIMER = (_KIND & _WITH_TIMEWAIT_TIMER) != 0
_HANDSHAKE = _in_states("SYN_SENT", "SYN_RECV")
#: A request socket (SYN_RECV) is known by its key alone: the kernel clones the socket
#: from it when the handshake ends, and a dump that names the request (gives it its
#: cookie) after the clone gives the two different cookies.
_REQUEST = _in_states("SYN_RECV")
#: States of a socket that has not been established yet (the kernel's counters count the rest).
_NOT_YET_OPEN = _in_states("LISTEN", "SYN_SENT", "SYN_RECV")
#: What is left of a closed connection: TIME_WAIT, and FIN_WAIT2 as a timewait entry's
#: substate (an orphan whose peer has not closed yet), told from a full FIN_WAIT2
#: socket by the timewait timer (3, in /proc and in sock_diag alike).
_TIMEWAIT = _in_states("TIME_WAIT") | (_in_states("FIN_WAIT2") & _ON_TIMEWAIT_TIMER)
#: A live socket or handshake: one with an inode, or without one in a state a socket
#: may still be in, accepted by the kernel and waiting in a listener's queue (no
#: process has it yet), or a pending handshake. Without an inode in any other state,
#: what is listed is what is left of a closed one (TIME_WAIT, a FIN_WAIT2 minisocket,
#: an orphan its process closed).
_HOLDING = ((_KIND & _WITH_INODE) != 0) | _in_states("ESTABLISHED", "CLOSE_WAIT", "SYN_RECV")
#: ... or an orphan: a socket its process closed, still a full socket in the kernel,
#: whose destroy event comes when it goes. A timewait entry is not one: the socket was
#: destroyed when it was made.
_HOLDING_OR_ORPHAN = _HOLDING | (_in_states("FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK")
                                 & ~_ON_TIMEWAIT_TIMER)


class _AwaitingEvents:
    """The cookies of sockets that left the table before their destroy event came, for
    LATE_EVENT_SECONDS: an event that comes later is one of theirs (a connection a poll
    listed, closed already), not a connection no poll saw."""

    def __init__(self) -> None:
        self._cookies = np.empty(0, dtype=np.uint64)
        self._since = np.empty(0)

    def add(self, cookies: np.ndarray, now: float) -> None:
        cookies = cookies[cookies != 0]
        if len(cookies):
            self._cookies = np.concatenate([self._cookies, cookies])[-LATE_EVENT_SOCKETS:]
            self._since = np.concatenate([self._since, np.full(len(cookies), now)]
                                         )[-LATE_EVENT_SOCKETS:]

    def take(self, cookies: np.ndarray, now: float) -> np.ndarray:
        """Which of ``cookies`` are remembered; they are forgotten then (an event is heard
        once), and so is every one remembered longer than LATE_EVENT_SECONDS."""
        keep = self._since >= now - LATE_EVENT_SECONDS
        found = np.isin(cookies, self._cookies[keep]) & (cookies != 0)
        if found.any():
            keep &= ~np.isin(self._cookies, cookies[found])
        if not keep.all():
            self._cookies, self._since = self._cookies[keep], self._since[keep]
        return found


def _kinds(rows: np.ndarray) -> np.ndarray:
    """Each row's kind (see above): three passes over the rows, once a poll."""
    kind = rows["state"].astype(np.uint16)
    kind |= (rows["timer"] == TIMEWAIT_TIMER).astype(np.uint16) << 8
    kind |= (rows["inode"] != 0).astype(np.uint16) << 9
    return kind


#: A socket's min RTT before any segment was acknowledged: a connect never answered.
_NO_RTT = 0xFFFFFFFF
#: Polls a destroyed socket's info waits for the closed event of the row it was.
WAITING_POLLS = 2
#: How long a socket that left the table before its destroy event came is remembered, and
#: how many such sockets at most (the oldest are forgotten first): a socket reset by its
#: peer leaves the table at once, but is destroyed (its event sent) when its process
#: closes it, which may be polls later.
LATE_EVENT_SECONDS = 60.0
LATE_EVENT_SOCKETS = 1 << 18


#: Rows a step of a poll works on at once where it needs several 8-byte temporaries a row:
#: a poll of 10^6 rows holds chunks of them, not whole copies.
_CHUNK_ROWS = 1 << 16

_COLUMNS = ("first_seen", "direction", "reported")
_NO_OWNER = -1
#: Owners held at least, before the table of owners is compacted to those still in use.
_OWNERS_BEFORE_COMPACTING = 1024


@dataclass
class _Known:
    """Rows of connections, and what is known of each, as contiguous columns."""

    rows: np.ndarray
    kind: np.ndarray            # _kinds(rows)
    first_seen: np.ndarray      # time.time() of the first poll that saw it; NaN: before the start
    direction: np.ndarray
    reported: np.ndarray        # reported as new (or present in a chosen state at the start)
    #: Index into the watcher's owners, found when it was new; -1: none. None until an
    #: owner is named (without --process: 4 bytes a row not held, twice during a poll).
    owner: np.ndarray | None = None

    def take(self, which: np.ndarray) -> _Known:
        return _Known(take_rows(self.rows, which), self.kind[which], self.first_seen[which],
                      self.direction[which], self.reported[which],
                      None if self.owner is None else self.owner[which])

    @staticmethod
    def join(*parts: _Known) -> _Known:
        owner = None
        if any(part.owner is not None for part in parts):
            owner = np.concatenate([part.owners() for part in parts])
        first_seen, direction, reported = (np.concatenate([getattr(part, name) for part in parts])
                                           for name in _COLUMNS)
        return _Known(concatenate_rows([part.rows for part in parts]),
                      np.concatenate([part.kind for part in parts]), first_seen, direction,
                      reported, owner)

    def owners(self) -> np.ndarray:
        """The owner column, made (no row with an owner) if there was none."""
        if self.owner is None:
            self.owner = np.full(len(self.rows), _NO_OWNER, dtype=np.int32)
        return self.owner


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
      but what is left of a connection, not a new one: a timewait entry, TIME_WAIT
      or FIN_WAIT2 with the timewait timer)
      that was not reported before: absent from the last poll, present there
      with another socket inode (closed and reopened), or there in a state not
      chosen (SYN_RECV, then ESTABLISHED under ``--state established``).
    - Closed: a connection seen with a socket inode whose socket is gone: its
      key is absent, or listed only without an inode (TIME_WAIT after an active
      close; FIN_WAIT2 once its owner exited). Reported once, with how long it
      was seen open; only for connections that were reported. With destroy events
      (``destroyed``), an orphan (FIN_WAIT1, FIN_WAIT2, CLOSING or LAST_ACK without
      an inode and not a timewait entry: its process closed it, the kernel has not
      yet) is still open: it closes when it goes, with what its destroy event said.
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
        self._states = _by_kind(_state_table(states)) if states else None
        self._skip_existing = skip_existing
        self._ephemeral = ephemeral
        self._known: _Known | None = None
        self._vanished: _Known | None = None      # gone at the last poll
        self._owners: _Owners | None = None       # None: no owner was ever named
        self._new_at = np.empty(0, dtype=np.int64)  # where the last update's new rows are known
        # Connections opened and closed between polls are reported where ESTABLISHED is
        # chosen (the path of a connection seen only at its end is not known).
        self._short_lived_chosen = self._states is None or bool(self._states[_ESTABLISHED])
        self._waiting: dict[int, tuple[np.void, int]] = {}   # cookie -> (info, poll heard)
        self._polls = 0
        #: The destroyed sockets the last poll reported that no row was: a read after it
        #: may still list one's TIME_WAIT row (the read before the event missed it).
        self._heard_last = np.empty(0, dtype=CONNECTION_DTYPE)
        self._awaiting = _AwaitingEvents()   # gone from the table, their events not yet come

    def _chosen(self, kind: np.ndarray) -> np.ndarray:
        return ~_TIMEWAIT[kind] if self._states is None else self._states[kind]

    def update(self, snapshot: Snapshot, now: float, destroyed: Destroyed | None = None) -> Poll:
        """This poll's events; on the first poll every current connection is new
        (none with ``skip_existing``). ``destroyed``: the sockets the kernel destroyed
        since the last poll's (netlink's destroy events, drained after this read)."""
        rows = snapshot.rows
        kind = _kinds(rows)
        chosen = self._chosen(kind)
        if self._known is None or self._vanished is None:
            direction = directions(rows, ephemeral=self._ephemeral)
            self._known = _Known(rows, kind, np.full(len(rows), math.nan), direction, chosen)
            self._vanished = self._known.take(np.zeros(len(rows), dtype=bool))
            new = np.zeros(len(rows), dtype=bool) if self._skip_existing else chosen
            self._new_at = np.flatnonzero(new)
            return Poll(now, snapshot, True, RowEvents("new", take_rows(rows, new), direction[new]))
        before = self._known
        index = _identity(rows, before.rows, kind, before.kind)
        seen = index >= 0
        # What is known of each row: gathered from the row it matched (most of them) ...
        if len(before.rows):
            # Gathered through index itself: its -1s take the last row's values, which
            # every unseen row has replaced below (no 8-byte-a-row copy of index).
            current = _Known(rows, kind, before.first_seen[index], before.direction[index],
                             before.reported[index] & seen)
            if before.owner is not None:
                current.owner = before.owner[index]
                current.owner[~seen] = _NO_OWNER
        else:
            current = _Known(rows, kind, np.empty(len(rows)), np.empty(len(rows), np.uint8),
                             np.zeros(len(rows), dtype=bool))
        unseen = np.flatnonzero(~seen)
        if len(unseen):             # ... or from a missed read, or found now
            current.first_seen[unseen] = now
            back = self._back_from_a_missed_read(rows[unseen])
            found = back >= 0
            for name in _COLUMNS:
                getattr(current, name)[unseen[found]] = getattr(self._vanished, name)[back[found]]
            if self._vanished.owner is not None:
                current.owners()[unseen[found]] = self._vanished.owner[back[found]]
            fresh = unseen[~found]
            current.direction[fresh] = directions(take_rows(rows, fresh), listeners=rows,
                                                  ephemeral=self._ephemeral)
        else:
            fresh = unseen
        # A TIME_WAIT row of a connection no poll saw open: opened and closed since the
        # last poll: new_and_closed (where connections are chosen), never new.
        late = np.zeros(len(rows), dtype=bool)
        if self._short_lived_chosen:
            late[fresh[_TIMEWAIT[kind[fresh]]]] = True
            current.reported[late] = True
        new = chosen & ~current.reported
        current.reported |= chosen
        self._new_at = np.flatnonzero(new)        # current's rows come first in what is known
        # Sockets past the handshake for the first time: what the kernel's counters count.
        past = ~_NOT_YET_OPEN[kind]
        opened = np.zeros(len(rows), dtype=bool)
        if len(before.rows):                      # through index's -1s, as above
            opened = _HANDSHAKE[before.kind][index] & seen
        opened[fresh] = True
        established = int((opened & past).sum())

        # With destroy events an orphan still holds its socket: it is closed when it goes
        # (its destroy event has what it carried), not when its process let it go.
        holds_a_socket = _HOLDING if destroyed is None else _HOLDING_OR_ORPHAN
        holding = holds_a_socket[kind]
        listed = _pointed_at(len(before.rows), index)           # some row of this poll is it
        alive = _pointed_at(len(before.rows), index, holding)   # ... and still has a socket
        ended = ~alive & holds_a_socket[before.kind]
        if snapshot.complete and not snapshot.unread:
            self._known = current
        else:           # what the read did not reach is still open, as far as we know
            ended &= listed
            self._known = _Known.join(current, before.take(~listed))
        closed = ended & before.reported
        vanished_before, self._vanished = self._vanished, before.take(ended)
        owners = None                             # not looked up
        if self._owners is not None:
            owners = self._owners.named(before.owners()[closed])
            self._owners.compact(self._known.owners(), self._vanished.owners())
        info = None
        if destroyed is None:
            short_lived = _late_events(rows, late, current.direction, now)
        else:
            info, short_lived, heard = self._judge_destroyed(
                destroyed, rows, kind, holding, late, current.direction, ended, closed,
                before, vanished_before, now)
            established += heard
        return Poll(now, snapshot, False, RowEvents("new", take_rows(rows, new), current.direction[new]),
                    RowEvents("closed", take_rows(before.rows, closed), before.direction[closed],
                              now - before.first_seen[closed], owners, info=info),
                    RowEvents("appeared", take_rows(rows, fresh), current.direction[fresh]),
                    new_and_closed=short_lived, established=established)

    def _judge_destroyed(self, destroyed: Destroyed, rows: np.ndarray, kind: np.ndarray,
                         holding: np.ndarray,
                         late: np.ndarray, direction: np.ndarray, ended: np.ndarray,
                         closed: np.ndarray, before: _Known, vanished: _Known, now: float
                         ) -> tuple[np.ndarray, RowEvents, int]:
        """What the sockets destroyed since the last poll say: the close info of this poll's
        closed connections (``closed``: which of ``before`` closed), the connections no
        poll saw (new_and_closed: destroyed sockets no row is, and TIME_WAIT rows no
        destroyed socket is), and how many destroyed sockets no row counted as
        established (no poll listed them, or the last one listed them in their handshake).

        Each destroyed socket is the first of: a row of this read that still has its
        socket (destroyed since the read: its info waits for the next poll's closed
        event); a TIME_WAIT row found now (``late``: reported as the destroyed socket,
        with what it carried); a TIME_WAIT row an earlier poll listed (its event came
        after that poll: under load the kernel sends them from a work queue; nothing
        more); a row of the last poll (closed now: its info goes with
        the closed event); a socket an earlier poll found gone (``ended`` and not heard
        of then: its event came late; nothing more); or a connection no poll listed
        (new_and_closed, if it was ever established).
        """
        gone, times, carried = destroyed
        at_before = keys.same_socket(gone, before.rows, by_key=_REQUEST[before.kind])
        at_now = _one_socket_a_row(gone, times, rows,
                                   keys.same_socket(gone, rows,
                                                    by_key=_TIMEWAIT[kind] | _REQUEST[kind]),
                                   _same_cookie(gone, before.rows, at_before))
        at_vanished = keys.same_socket(gone, vanished.rows)
        awaited = self._awaiting.take(gone["cookie"], now)
        heard_before = np.zeros(len(before.rows), dtype=bool)
        heard_before[at_before[at_before >= 0]] = True
        unheard_gone = before.rows["cookie"][ended & ~heard_before]
        if self._waiting:       # heard of while still listed, at an earlier poll: no more comes
            unheard_gone = unheard_gone[~np.isin(unheard_gone, list(self._waiting))]
        self._awaiting.add(unheard_gone, now)
        now_alive = at_now >= 0
        now_alive[now_alive] = holding[at_now[now_alive]]
        now_late = (at_now >= 0) & ~now_alive
        now_late[now_late] = late[at_now[now_late]]
        self._polls += 1
        for cookie, record in zip(gone["cookie"][now_alive].tolist(), carried[now_alive]):
            self._waiting[cookie] = (record, self._polls)
        # The close info of the connections closed now, where their socket was heard of.
        closed_at = np.flatnonzero(closed)                # before's rows closed now, in order
        info = np.zeros(len(closed_at), dtype=CLOSE_INFO_DTYPE)
        paired = ~now_alive & ~now_late & (at_before >= 0)
        paired[paired] = closed[at_before[paired]]
        info[np.searchsorted(closed_at, at_before[paired])] = carried[paired]
        if self._waiting and len(info):
            cookies = before.rows["cookie"][closed]
            for at in np.flatnonzero(np.isin(cookies, list(self._waiting))).tolist():
                record, _ = self._waiting.pop(int(cookies[at]))
                if not info[at]["known"]:
                    info[at] = record
        self._forget_waiting()
        # Opened and closed since the last poll, and no poll listed them.
        was_established = _was_established(gone, carried)
        unheard = (at_now < 0) & (at_before < 0) & (at_vanished < 0) & ~awaited
        unheard &= was_established & self._short_lived_chosen
        # Listed in its handshake by the last poll, established and gone since: no row
        # counted it (the closed event is the diff's).
        handshake = (at_now < 0) & (at_before >= 0) & was_established
        handshake[handshake] = _HANDSHAKE[before.kind[at_before[handshake]]]
        absorbed = np.zeros(len(rows), dtype=bool)
        absorbed[at_now[now_late]] = True
        # A TIME_WAIT row found now of a socket the last poll heard of and reported (the
        # read of that poll began before the close): that connection, reported already.
        candidates = np.flatnonzero(late & ~absorbed)
        found = keys.same_socket(rows[candidates], self._heard_last,
                                 by_key=np.ones(len(self._heard_last), dtype=bool)) >= 0
        again = np.zeros(len(rows), dtype=bool)
        again[candidates[found]] = True
        absorbed |= again
        self._heard_last = gone[unheard]
        short = now_late | unheard
        heard = RowEvents("new_and_closed", gone[short],
                          directions(gone[short], listeners=rows, ephemeral=self._ephemeral),
                          np.full(int(short.sum()), math.nan), times=times[short],
                          unknown=_cut_by_the_kernel(gone[short]), info=carried[short])
        listed_only = _late_events(rows, late & ~absorbed, direction, now)
        # The rows found again were counted as opened by this poll, and by the last.
        return (info, _join(heard, listed_only),
                int(unheard.sum()) + int(handshake.sum()) - int(again.sum()))

    def _forget_waiting(self) -> None:
        """Info waiting for a closed event that never came (its connection was not reported)."""
        for cookie in [cookie for cookie, (_, poll) in self._waiting.items()
                       if poll < self._polls - WAITING_POLLS]:
            del self._waiting[cookie]

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
        self._known.owners()[new_at] = self._owners.indexes(owners)

    def _back_from_a_missed_read(self, rows: np.ndarray) -> np.ndarray:
        """For each row, the index of the vanished row that is the very same
        socket (the same key and the same non-zero inode), or -1."""
        assert self._vanished is not None
        if not len(self._vanished.rows):
            return np.full(len(rows), -1, dtype=np.int64)
        index = keys.match(rows, self._vanished.rows)
        inode = rows["inode"]
        same = (index >= 0) & (inode != 0) & (inode == self._vanished.rows["inode"][index])
        return np.where(same, index, -1)


def _identity(rows: np.ndarray, baseline: np.ndarray, kind: np.ndarray,
              baseline_kind: np.ndarray) -> np.ndarray:
    """For each row, the baseline row that is the same connection, or -1: the key match,
    where the cookies agree (a socket reusing a key is another one) or the baseline row is
    a request socket's, and never from a TIME_WAIT row into a socket (a connect may reuse
    the ports of a TIME_WAIT entry)."""
    index = keys.match(rows, baseline)
    left, entered, request = _TIMEWAIT[baseline_kind], ~_TIMEWAIT[kind], _REQUEST[baseline_kind]
    for start in range(0, len(rows), _CHUNK_ROWS):        # temporaries of a chunk's size
        part = slice(start, start + _CHUNK_ROWS)
        seen = np.flatnonzero(index[part] >= 0) + start
        at = index[seen]
        mine, theirs = rows["cookie"][seen], baseline["cookie"][at]
        other = (mine != 0) & (theirs != 0) & (mine != theirs) & ~request[at]
        other |= left[at] & entered[seen]
        index[seen[other]] = -1
    return index.astype(np.int32)     # held through the update: 4 bytes a row, not 8


def _pointed_at(size: int, index: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Which of ``size`` rows an entry of ``index`` (-1: none) points to, of the entries
    ``where`` marks (all if None): a chunk at a time, never an 8-byte-a-row copy of index."""
    pointed = np.zeros(size, dtype=bool)
    for start in range(0, len(index), _CHUNK_ROWS):
        part = index[start:start + _CHUNK_ROWS]
        points = part >= 0
        if where is not None:
            points &= where[start:start + _CHUNK_ROWS]
        pointed[part[points]] = True
    return pointed


def _same_cookie(needles: np.ndarray, haystack: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Which needles were found (``at``) with their very cookie, not by key alone."""
    found = at >= 0
    mine = needles["cookie"]
    same = found & (mine != 0)
    same[same] = haystack["cookie"][at[same]] == mine[same]
    return same


def _one_socket_a_row(gone: np.ndarray, times: np.ndarray, rows: np.ndarray, at: np.ndarray,
                      known_elsewhere: np.ndarray) -> np.ndarray:
    """``at`` (each destroyed socket's row now) with the matches by key alone, to a
    TIME_WAIT row whose cookie is another, kept only where they can be right: not for a
    socket found by its very cookie among the last poll's rows, nor to a row another
    socket is by its cookie, and for one socket a row
    (the last destroyed of that key: a key that came back, a reset client's port reused
    at once, left the TIME_WAIT entry of its latest socket)."""
    exact = _same_cookie(gone, rows, at)
    by_key = (at >= 0) & ~exact
    drop = by_key & known_elsewhere
    drop[by_key] |= np.isin(at[by_key], at[exact])          # that row is another's, by cookie
    candidates = np.flatnonzero(by_key & ~drop)
    if len(candidates) > 1:
        order = candidates[np.lexsort((times[candidates], at[candidates]))]
        last_of_row = np.append(at[order][1:] != at[order][:-1], True)
        drop[order[~last_of_row]] = True
    return np.where(drop, -1, at)


def _was_established(rows: np.ndarray, info: np.ndarray) -> np.ndarray:
    """Which destroyed sockets had been established: their min RTT says a segment was
    acknowledged (a refused or unanswered connect has none); without that, a peer."""
    known = (info["known"] & KNOWN_MIN_RTT) != 0
    return np.where(known, info["min_rtt_us"] != _NO_RTT, rows["remote_port"] != 0)


def _cut_by_the_kernel(rows: np.ndarray) -> np.ndarray:
    """UNKNOWN_* bits of destroyed sockets' rows: a socket reset on close lost its local
    address and remote port before its event was sent; no event carries a uid."""
    unknown = np.full(len(rows), UNKNOWN_UID, dtype=np.uint8)
    unknown[(rows["remote_port"] == 0)] |= UNKNOWN_REMOTE_PORT
    unknown[~rows["local_addr"].any(axis=1)] |= UNKNOWN_LOCAL_ADDRESS
    return unknown


def _late_events(rows: np.ndarray, late: np.ndarray, direction: np.ndarray,
                 now: float) -> RowEvents:
    """TIME_WAIT rows of connections no poll saw open, as new_and_closed at this poll."""
    return RowEvents("new_and_closed", rows[late], direction[late],
                     np.full(int(late.sum()), math.nan), times=np.full(int(late.sum()), now))


def _join(first: RowEvents, second: RowEvents) -> RowEvents:
    """Two batches of new_and_closed as one; columns one lacks are filled as unknown."""
    if not len(second):
        return first
    if not len(first):
        return second

    def column(name: str, empty: np.ndarray) -> np.ndarray | None:
        parts = [getattr(part, name) for part in (first, second)]
        if all(part is None for part in parts):
            return None
        return np.concatenate([empty[:len(events)] if part is None else part
                               for part, events in zip(parts, (first, second))])
    size = len(first) + len(second)
    return RowEvents("new_and_closed", np.concatenate([first.rows, second.rows]),
                     np.concatenate([first.direction, second.direction]),
                     np.concatenate([first.duration, second.duration]),
                     times=column("times", np.zeros(size)),
                     unknown=column("unknown", np.zeros(size, dtype=np.uint8)),
                     info=column("info", np.zeros(size, dtype=CLOSE_INFO_DTYPE)))
