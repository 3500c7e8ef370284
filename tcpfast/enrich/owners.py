"""Which process holds a socket: a targeted, time-budgeted search of /proc/PID/fd.

The kernel's socket tables carry no pid: the only way from a socket's inode to
its process is to read fd links (``/proc/PID/fd/N`` -> ``socket:[INODE]``), a
few µs of kernel time each. A full walk of a busy host (~600 processes, ~10^5
fds) costs 0.3-0.5 s however few sockets are new, so OwnerFinder keeps what it
read between lookups and reads only where a new socket can be, in this order:

1. holders it already knows (a socket seen in an fd table before it connected),
   one readlink each;
2. processes whose fd table changed since it was last read: new pids, and pids
   whose open-fd count (``st_size`` of /proc/PID/fd, kernel 6.2+) differs from
   what was listed (before 6.2 the size is 0, and only new pids count as
   changed), read only at fd numbers not read before, ascending pids from
   where the previous lookup ran out of time; first of all, fds that held
   sockets which just vanished (``vanished``): the next open() reuses a closed
   fd's number and leaves the count unchanged;
3. what is left of the budget re-reads whole fd tables in rotation, resumed by
   the next lookup where this one stopped, which finds sockets behind reused
   fd numbers that no hint pointed at.

Every step stops as soon as every wanted socket is found, the whole lookup once
its time budget is spent or its caller cancels it (a stop signal). Every answer
is a link read during this lookup, so it is never stale: a process that exited,
an fd closed, a process this user may not read (EACCES: that pid is skipped at
its first refusal) leave the socket without owner, never with a wrong one, and
never raise.

A lookup cut short leaves a place to resume, so that lookups asked again for the
same sockets always get further, whatever the host holds: steps 2 and 3 resume
where it stopped, fd numbers listed but not read are read without listing their
table again, and a listing, once begun, is finished (it cannot be resumed: cut,
it would be thrown away, and a table longer to list than one budget would never
be read; 8,000 fds list in ~15 ms on a 2-core host).

A socket held by several processes (a listener inherited across fork, an fd
passed over a UNIX socket) is attributed to the first holder the search finds.
Known holders and changed processes are visited in ascending pid order, so after
a fork (parent and child both changed) that is the parent: the lower pid, unless
pids wrapped or the previous lookup ran out of time between the two. A socket
only the rotation finds goes to the first holder it reaches.
Processes this user may not read are left to the rotation (one refused open each).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

SOCKET_LINK_PREFIX = "socket:["
CLOCK_EVERY = 64
"""Names listed (fds, pids) between two looks at the clock: listing costs ~1 µs a name."""
DEFAULT_BUDGET = 0.2
"""Seconds per lookup: ~10,000 new sockets' owners on a busy 2-core host, 2% of a 10 s interval."""
PROCESS_DIRS_PROBED = 16
"""Processes whose fd count is tried when ``self`` is not in the procfs (another pid namespace)."""
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Owner(NamedTuple):
    """The process found holding a socket, and its command name (``/proc/PID/comm``)."""

    pid: int
    comm: str


def procfs_of(proc_root: str) -> str:
    """The procfs that lists the processes using the tables under ``proc_root``.

    tcpfast reads ``PROC_ROOT/net/tcp``: ``/proc`` for its own network namespace,
    ``/proc/1`` (or ``/proc/1/task/1``) for pid 1's; the processes are in ``/proc``.
    """
    path = os.path.normpath(proc_root)
    while True:
        name = os.path.basename(path)
        in_a_process = name == "task" and os.path.basename(os.path.dirname(path)).isdigit()
        if not (name.isdigit() or name in ("self", "thread-self") or in_a_process):
            return path
        path = os.path.dirname(path)


def fd_counts_supported(procfs: str = "/proc") -> bool:
    """Whether ``st_size`` of ``/proc/PID/fd`` is the open-fd count (Linux 6.2+; 0 before).

    Any process has fds open, so one non-zero size settles it; ``self`` is tried
    first, and when this process is not in that procfs, a few others.
    """
    try:
        with os.scandir(procfs) as entries:
            pids = [entry.name for entry in entries if entry.name.isdigit()]
    except OSError:
        return False
    candidates = ["self", *pids[:PROCESS_DIRS_PROBED]]
    for name in candidates:
        try:
            if os.stat(os.path.join(procfs, name, "fd")).st_size > 0:
                return True
        except OSError:
            continue
    return False


class _Table:
    """What was last read of one process's fd table."""

    __slots__ = ("ident", "links", "listed", "refused", "unread")

    def __init__(self, ident: int) -> None:
        self.ident = ident                  # inode of /proc/PID: a new one means another process
        self.links: dict[int, int] = {}     # fd -> socket inode read there (0: not a socket)
        self.unread: set[int] = set()       # fd numbers listed but not read since
        self.listed = False
        self.refused = False                # not readable at the last try: left to the rotation

    def listed_size(self) -> int:
        return len(self.links) + len(self.unread)


class _Lookup:
    """One ``find()``: what is still wanted, what was found, and when to stop."""

    def __init__(self, wanted: set[int], deadline: float, clock: Callable[[], float],
                 cancelled: Callable[[], bool] | None = None) -> None:
        self.wanted = wanted
        self.found: dict[int, Owner] = {}
        self.deadline = deadline
        self.clock = clock
        self.cancelled = cancelled or _never
        self.owners: dict[int, Owner | None] = {}

    def out_of_time(self) -> bool:
        """Out of budget, or cancelled: looked at wherever the clock is."""
        return self.clock() >= self.deadline or self.cancelled()

    def over(self) -> bool:
        return not self.wanted or self.out_of_time()

    def claim(self, inode: int, pid: int, process_dir: int) -> None:
        """``pid`` holds ``inode``: its owner, named as ``/proc/PID/comm`` says now.

        The name is read once per pid and lookup, through the same directory fd
        as the link (so from the same process, even if the pid is reused); a
        process gone before its name could be read owns nothing.
        """
        if pid not in self.owners:
            comm = _read_comm(process_dir)
            self.owners[pid] = None if comm is None else Owner(pid, comm)
        owner = self.owners[pid]
        if owner is not None:
            self.wanted.discard(inode)
            self.found[inode] = owner


class _Refused(Exception):
    """The process cannot be read (gone, or not ours to read): skip it for this lookup."""


class OwnerFinder:
    """Maps socket inodes to the processes holding them, at a cost that grows with what is new.

    Keep one instance for the life of the watch: it remembers the fd tables it
    read, so each lookup reads only what changed. ``budget`` bounds every
    lookup's time (seconds); sockets not found within it have no owner. The
    first lookup that has anything to find starts with nothing remembered, so
    it amounts to a full walk: ``first_budget`` (default: ``budget``) bounds it.
    """

    def __init__(self, procfs: str = "/proc", budget: float = DEFAULT_BUDGET, *,
                 first_budget: float | None = None, use_fd_counts: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.procfs = procfs
        self.budget = budget
        self._first_budget = budget if first_budget is None else first_budget
        self.uses_fd_counts = fd_counts_supported(procfs) if use_fd_counts is None else use_fd_counts
        self._clock = clock
        self._tables: dict[int, _Table] = {}
        self._holders: dict[int, int] = {}   # socket inode -> (pid << 32 | fd) where it was read
        self._cursor = (0, -1)               # (pid, fd) where the rotation resumes; -1: list first
        self._changed_from = 0               # pid where reading changed processes resumes

    def find(self, inodes: Iterable[int], vanished: Iterable[int] = (),
             budget: float | None = None,
             cancelled: Callable[[], bool] | None = None) -> dict[int, Owner]:
        """The owner of each socket inode that could be found within the budget.

        ``vanished``: inodes of sockets gone since the previous lookup (their fd
        numbers are read first). Inode 0 (TIME_WAIT, not yet accepted) has no owner.
        ``budget`` overrides this lookup's (seconds). ``cancelled`` is asked as
        often as the clock, and every 64 names of a listing (which the deadline
        does not cut): once it says so, the lookup ends with what it found; what
        it read stays remembered.
        """
        wanted = {int(inode) for inode in inodes}
        wanted.discard(0)
        if not wanted:
            return {}
        if budget is None:
            budget, self._first_budget = self._first_budget, self.budget
        lookup = _Lookup(wanted, self._clock() + budget, self._clock, cancelled)
        try:
            procfs = os.open(self.procfs, _DIRECTORY)
        except OSError:
            return {}
        try:
            self._check_known_holders(procfs, lookup)
            if not lookup.over():
                pids = self._refresh(procfs, lookup)
                if pids is not None:
                    self._read_changed(procfs, lookup, pids, {int(inode) for inode in vanished})
                    self._rotate(procfs, lookup, pids)
        finally:
            os.close(procfs)
        return lookup.found

    def owners_of(self, rows: np.ndarray, vanished: np.ndarray | None = None,
                  budget: float | None = None,
                  cancelled: Callable[[], bool] | None = None) -> list[Owner | None]:
        """The owner of each row (CONNECTION_DTYPE), in row order; None where not found.

        ``vanished``: rows of the sockets gone since the previous poll, if known.
        """
        inodes = rows["inode"].tolist()
        gone = vanished["inode"].tolist() if vanished is not None else ()
        found = self.find(inodes, gone, budget, cancelled)
        return [found.get(inode) for inode in inodes]

    def cached_pids(self) -> set[int]:
        """Pids whose fd tables are remembered: a process is forgotten at the first lookup after it exits."""
        return set(self._tables)

    # Step 1: holders read before, each checked with one readlink.

    def _check_known_holders(self, procfs: int, lookup: _Lookup) -> None:
        by_pid: dict[int, list[tuple[int, int]]] = {}
        for inode in lookup.wanted & self._holders.keys():
            pid, fd = divmod(self._holders[inode], 1 << 32)
            by_pid.setdefault(pid, []).append((fd, inode))
        for pid in sorted(by_pid):
            try:
                with _process_dirs(procfs, pid) as (process_dir, fd_dir):
                    for fd, inode in sorted(by_pid[pid]):
                        if lookup.out_of_time():
                            return
                        if _read_link(fd_dir, fd) == inode:
                            lookup.claim(inode, pid, process_dir)
                        else:
                            del self._holders[inode]
            except _Refused:
                continue

    # Step 2: processes whose fd table changed, and fds of vanished sockets.

    def _refresh(self, procfs: int, lookup: _Lookup) -> list[int] | None:
        """List the processes, forget those gone, and return their pids ascending.

        None when the time ran out first. Reading a process directory's inode
        comes with the listing; a pid reused by another process has another.
        The listing is finished once begun, past the deadline too (~1 µs a
        process: cut, every lookup would start it again); only a cancel cuts it.
        """
        current: dict[int, int] = {}
        try:
            with os.scandir(procfs) as entries:
                for index, entry in enumerate(entries):
                    if index % CLOCK_EVERY == 0 and lookup.cancelled():
                        return None
                    if entry.name.isdigit():
                        current[int(entry.name)] = entry.inode()
        except OSError:
            return None
        for pid in [pid for pid, table in self._tables.items() if current.get(pid) != table.ident]:
            self._forget(pid)
        for pid, ident in current.items():
            if pid not in self._tables:
                self._tables[pid] = _Table(ident)
        return None if lookup.out_of_time() else sorted(current)

    def _forget(self, pid: int) -> None:
        table = self._tables.pop(pid)
        for fd, inode in table.links.items():
            if inode and self._holders.get(inode) == pid << 32 | fd:
                del self._holders[inode]

    def _changed(self, procfs: int, pid: int, table: _Table) -> bool:
        """Whether ``table`` has fd numbers not read yet: not listed, listed but not all
        read, or (with fd counts) an open-fd count other than what was listed."""
        if table.refused:
            return False
        if not table.listed or table.unread:
            return True
        if not self.uses_fd_counts:
            return False
        try:
            return os.stat(f"{pid}/fd", dir_fd=procfs).st_size != table.listed_size()
        except OSError:
            return False

    def _read_changed(self, procfs: int, lookup: _Lookup, pids: list[int], vanished: set[int]) -> None:
        """Hinted fds first, then what changed, in ascending pids from where the last
        lookup that ran out of time stopped (a process whose table changes at every
        lookup cannot hold the search at the lowest pids for ever)."""
        hints: dict[int, list[int]] = {}
        for inode in vanished & self._holders.keys():
            pid, fd = divmod(self._holders[inode], 1 << 32)
            hints.setdefault(pid, []).append(fd)
        start = bisect.bisect_left(pids, self._changed_from)
        for index, pid in enumerate(pids[start:] + pids[:start]):
            table = self._tables[pid]
            changed = self._changed(procfs, pid, table)
            if not changed and pid not in hints:
                if index % CLOCK_EVERY == 0 and lookup.out_of_time():
                    self._changed_from = pid
                    return
                continue
            if lookup.over():
                self._changed_from = pid if lookup.wanted else 0
                return
            try:
                with _process_dirs(procfs, pid) as (process_dir, fd_dir):
                    self._read_fds(lookup, pid, table, process_dir, fd_dir, sorted(hints.get(pid, ())))
                    if changed:
                        # What a listing left unread first; a cancel cuts a listing short.
                        if not table.unread and not self._list(lookup, pid, table, fd_dir):
                            self._changed_from = pid
                            return
                        self._read_fds(lookup, pid, table, process_dir, fd_dir, sorted(table.unread))
            except _Refused:
                table.refused = True
        self._changed_from = 0

    # Step 3: whole fd tables in rotation, resumed by the next lookup.

    def _rotate(self, procfs: int, lookup: _Lookup, pids: list[int]) -> None:
        start_pid, start_fd = self._cursor
        first = next((index for index, pid in enumerate(pids) if pid >= start_pid), 0)
        if first < len(pids) and pids[first] != start_pid:
            start_fd = -1
        for pid in pids[first:] + pids[:first]:
            if lookup.over():
                return
            self._cursor = (pid, start_fd)
            table = self._tables[pid]
            try:
                with _process_dirs(procfs, pid) as (process_dir, fd_dir):
                    listed = start_fd >= 0 and table.listed    # resumed mid-table
                    if not (listed or self._list(lookup, pid, table, fd_dir)):
                        return
                    table.refused = False
                    fds = sorted(fd for fd in (*table.links, *table.unread) if fd >= start_fd)
                    stopped = self._read_fds(lookup, pid, table, process_dir, fd_dir, fds)
            except _Refused:
                table.refused = True
                stopped = None
            if stopped is not None:
                self._cursor = (pid, stopped)
                return
            start_fd = -1
            self._cursor = (pid + 1, -1)

    # Reading one process.

    def _list(self, lookup: _Lookup, pid: int, table: _Table, fd_dir: int) -> bool:
        """Bring ``table``'s fd numbers up to date: a whole listing, even past the deadline;
        False (table unchanged) when the lookup is cancelled."""
        numbers = set()
        try:
            with os.scandir(fd_dir) as entries:
                for index, entry in enumerate(entries):
                    if index % CLOCK_EVERY == 0 and lookup.cancelled():
                        return False
                    numbers.add(int(entry.name))
        except OSError:            # exited since its directory was opened
            raise _Refused from None
        for fd in table.links.keys() - numbers:
            self._drop(pid, table, fd)
        table.unread = (table.unread & numbers) | (numbers - table.links.keys())
        table.listed = True
        return True

    def _read_fds(self, lookup: _Lookup, pid: int, table: _Table, process_dir: int, fd_dir: int,
                  fds: list[int]) -> int | None:
        """Read the links of ``fds`` in order; the fd it stopped at (done or out of time), else None.

        The loop runs once per fd of a busy process, so it is written out flat.
        """
        wanted, clock, deadline = lookup.wanted, lookup.clock, lookup.deadline
        cancelled = lookup.cancelled
        links, unread, holders = table.links, table.unread, self._holders
        at_pid = pid << 32
        for fd in fds:
            if not wanted or clock() >= deadline or cancelled():
                return fd
            inode = _read_link(fd_dir, fd)
            if inode is None:          # closed since it was listed
                self._drop(pid, table, fd)
                continue
            old = links.get(fd)
            if old != inode:
                if old and holders.get(old) == at_pid | fd:
                    del holders[old]
                links[fd] = inode
                if inode:
                    held = holders.get(inode)
                    if held is None or held >= at_pid:     # the lowest pid seen holding it
                        holders[inode] = at_pid | fd
            unread.discard(fd)
            if inode in wanted:
                lookup.claim(inode, pid, process_dir)
        return None

    def _drop(self, pid: int, table: _Table, fd: int) -> None:
        """``fd`` of ``pid`` is closed."""
        inode = table.links.pop(fd, 0)
        table.unread.discard(fd)
        if inode and self._holders.get(inode) == pid << 32 | fd:
            del self._holders[inode]


def _never() -> bool:
    return False


@contextmanager
def _process_dirs(procfs: int, pid: int) -> Iterator[tuple[int, int]]:
    """Directory fds of ``/proc/PID`` and its ``fd/``: both stay bound to that one process."""
    try:
        process_dir = os.open(str(pid), _DIRECTORY, dir_fd=procfs)
    except OSError:
        raise _Refused from None
    try:
        try:
            fd_dir = os.open("fd", _DIRECTORY, dir_fd=process_dir)
        except OSError:
            raise _Refused from None
        try:
            yield process_dir, fd_dir
        finally:
            os.close(fd_dir)
    finally:
        os.close(process_dir)


def _read_link(fd_dir: int, fd: int) -> int | None:
    """The socket inode ``fd`` points at, 0 if not a socket, None if the fd is closed.

    Raises _Refused when the process may not be read (EACCES), or is gone.
    """
    try:
        target = os.readlink(str(fd), dir_fd=fd_dir)
    except FileNotFoundError:
        return None
    except OSError:
        raise _Refused from None
    if target.startswith(SOCKET_LINK_PREFIX) and target.endswith("]"):
        return int(target[len(SOCKET_LINK_PREFIX):-1])
    return 0


def _read_comm(process_dir: int) -> str | None:
    try:
        fd = os.open("comm", os.O_RDONLY | os.O_CLOEXEC, dir_fd=process_dir)
    except OSError:
        return None
    try:
        name = os.read(fd, 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    return name.rstrip(b"\n").decode("utf-8", "replace")
