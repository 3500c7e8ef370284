"""Every network namespace of a procfs, found again at each poll from the inode of each process's net/tcp.

Why this way: ``/proc/PID/net/tcp`` is the table of PID's network namespace,
and its inode number (``st_ino``) belongs to that namespace's own /proc/net
tree: the same for every process of one namespace, different between
namespaces, and readable by any user (no ptrace rights needed, unlike
``/proc/PID/ns/net``). So a stat() per process groups the processes of a
procfs by namespace, unprivileged.

What a namespace is called (``Namespace.netns``):

- the namespace's own inode number, the N of ``net:[N]`` (what ``lsns``,
  ``ip netns identify`` and ``ls -l /proc/PID/ns/net`` show), where tcpfast may
  open ``/proc/PID/ns/net`` of one of its processes (root; or a process of
  tcpfast's own user); then ``netns_is_inode`` is True and the namespace can
  be entered (``setns``, root) through ``netns_path``;
- otherwise the inode number of its ``net/tcp`` table: an identifier as stable
  as the namespace (it lives as long as the namespace does), never equal to a
  live namespace's own inode number (the kernel draws both from one pool of
  numbers), but not the one ``lsns`` prints; ``netns_is_inode`` is False.

The choice is made when a namespace is first seen and kept for its life, so
a namespace's ``netns`` never changes while it lives. The kernel hands out
both kinds of number again once their namespace is gone, and a new namespace
may get the numbers of one that just ended (a restarted container): so a
namespace found under a known table inode but with none of the processes
seen in it at the previous scan is taken as a new namespace, with a new
``serial`` (the finder's own number for each namespace it sees: what state
kept per namespace should be keyed by).

Its representative (``Namespace.pid``, whose tables are read and whose
``ns/net`` is entered): the lowest pid whose ``ns/net`` tcpfast may open, else
the lowest pid; kept from scan to scan while it stays in the namespace.

What a scan costs: the stat() takes the kernel ~5-8 µs a process (it builds
a new dentry for the table each time), so a scan does not repeat it for every
process. A process changes namespace only by calling setns() or unshare()
itself, which the tools that do it (container runtimes, ``ip netns exec``,
``unshare``, ``nsenter``) do right after fork. So each scan stats: processes it
has not seen (a pid, or a pid whose ``/proc/PID`` is another directory: a
reused pid), processes seen in fewer than ``SETTLED`` scans, every namespace's
representative (so a namespace whose representative left, exited or became a
zombie is checked whole in that scan), and one in ``recheck_every`` of the
other processes, in turn. A long-lived process that moves to another
namespace is found there within ``recheck_every`` scans; ``recheck_every=1``
stats every process at every scan.

Between a scan and the reading of a namespace, its representative may exit
and its pid go to another process, or the process may move: what was opened
can be checked. A namespace file opened for setns is this namespace when its
``fstat().st_ino`` is ``netns`` (where ``netns_is_inode``). Tables opened
tcp6 first, then tcp, are this namespace's when tcp's ``fstat()`` gives
``key`` (a process moves one way: had tcp6 been another namespace's, so
would tcp). An opened table or namespace file stays bound to the namespace it
was opened in.

What is not found: a namespace no process is in (kept alive only by a bind
mount such as ``ip netns add``'s, or by an open file), and one only a
non-leader thread of a process has entered (``/proc/PID/net`` follows the
thread-group leader). A process whose leader thread has exited while other
threads run is found through one of those threads (``PROCFS/PID/task/TID``).
Zombies have no namespace, and processes that exit during a scan are not lost
(their namespace, if it lives on, has other processes): both are counted in
``NamespaceScan.exited``. Processes listed but not readable (a procfs mounted
with ``hidepid=1``) are counted in ``NamespaceScan.refused``: a namespace only
they are in is missing, and the caller should say so (with ``hidepid=2`` they
are not even listed).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

NamespaceKey = tuple[int, int]
"""(st_dev, st_ino) of a namespace's ``net/tcp`` table as the procfs shows it."""

RECHECK_EVERY = 8
"""A settled process's namespace is stat'ed again at one scan in this many."""
SETTLED = 3
"""Scans in a row that found a process in the same namespace before it is settled."""
PROBES_PER_NAMESPACE = 64
"""Processes tried (ascending pids) for one whose ``ns/net`` may be opened, when a
namespace is first seen or loses its representative: bounds that work when none can be."""

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_TABLE = "net/tcp"


@dataclass(frozen=True)
class Namespace:
    """One network namespace, as a scan found it."""

    key: NamespaceKey
    serial: int
    """This finder's number for the namespace, given when it first sees it and kept for
    the namespace's life: a new namespace under a reused ``key`` (and, without the
    rights to read its own inode, the same ``netns``) gets a new one."""
    netns: int
    """The namespace's identifier: see the module's docstring."""
    netns_is_inode: bool
    """True: ``netns`` is the namespace's own inode number; False: its table's."""
    pid: int
    """The representative process (a pid of the procfs's pid namespace)."""
    pids: tuple[int, ...]
    """Every process found in it, ascending."""
    proc_root: str
    """``PROCFS/PID`` (``PROCFS/PID/task/TID`` when PID's leader thread has exited): its
    tables are ``proc_root/net/tcp`` and ``tcp6``."""
    openable: bool
    """Whether this finder could open ``netns_path`` (and found it to be this namespace):
    False, entering it is bound to fail."""

    @property
    def netns_path(self) -> str:
        """The namespace file to enter it by (``setns``): ``proc_root/ns/net``."""
        return f"{self.proc_root}/ns/net"


@dataclass(frozen=True)
class NamespaceScan:
    """What one scan found: each namespace once, and what it could not look at."""

    namespaces: dict[NamespaceKey, Namespace]
    """Ascending by representative pid."""
    processes: int
    """Processes listed in the procfs."""
    checked: int
    """Processes whose namespace this scan stat'ed (the others were known)."""
    exited: int = 0
    """Zombies, and processes that exited during the scan: they hold no namespace."""
    refused: int = 0
    """Processes whose tables could not be looked at: a namespace only they are in is missing."""


def key_of(proc_root: str) -> NamespaceKey:
    """The key of the namespace whose tables ``proc_root/net/tcp`` are (``/proc``, ``/proc/1``)."""
    status = os.stat(os.path.join(proc_root, _TABLE))
    return status.st_dev, status.st_ino


_EXITED: NamespaceKey = (-1, 0)
_REFUSED: NamespaceKey = (-1, 1)


class _Process:
    """What is known of one process: its namespace, and since how many scans."""

    __slots__ = ("ident", "key", "pid", "tid", "times")

    def __init__(self, pid: int, ident: int) -> None:
        self.pid = pid
        self.ident = ident              # inode of /proc/PID: another one means another process
        self.key: NamespaceKey = _EXITED
        self.tid = 0                    # the thread its namespace was read through (0: the leader)
        self.times = 0                  # scans in a row that found it in ``key``


class NamespaceFinder:
    """Finds the network namespaces of ``procfs``'s processes, again at each :meth:`scan`.

    Keep one instance for the life of a watch: it remembers each process's
    namespace and each namespace's identifier and representative, so a scan
    stats few processes and both stay put from scan to scan.
    """

    def __init__(self, procfs: str = "/proc", *, recheck_every: int = RECHECK_EVERY,
                 probes: int = PROBES_PER_NAMESPACE) -> None:
        if recheck_every < 1:
            raise ValueError(f"recheck_every must be at least 1, not {recheck_every}")
        self.procfs = os.path.normpath(procfs)
        self.recheck_every = recheck_every
        self._probes = probes
        self._euid = os.geteuid()
        self._processes: dict[str, _Process] = {}        # by the name of /proc/PID
        self._known: dict[NamespaceKey, Namespace] = {}
        self._scans = 0
        self._serials = 0

    def scan(self) -> NamespaceScan:
        """Every namespace a process of the procfs is in now.

        Raises OSError when the procfs itself cannot be listed.
        """
        procfs = os.open(self.procfs, _DIRECTORY)
        try:
            with os.scandir(procfs) as entries:
                listed = [(entry.name, entry.inode()) for entry in entries if entry.name.isdigit()]
            members, checked = self._update(procfs, listed)
            exited = len(members.pop(_EXITED, ()))
            refused = len(members.pop(_REFUSED, ()))
            found = {key: self._namespace(procfs, key, tuple(sorted(pids)))
                     for key, pids in members.items()}
        finally:
            os.close(procfs)
        self._known = dict(sorted(found.items(), key=lambda item: item[1].pid))
        self._scans += 1
        return NamespaceScan(dict(self._known), len(listed), checked, exited, refused)

    def _update(self, procfs: int, listed: list[tuple[str, int]]
                ) -> tuple[dict[NamespaceKey, list[int]], int]:
        """Bring each listed process's namespace up to date: the pids of each namespace
        (and of _EXITED, _REFUSED), and how many processes were stat'ed."""
        previous = self._processes
        representatives = {namespace.pid for namespace in self._known.values()}
        every, turn = self.recheck_every, self._scans % self.recheck_every
        current: dict[str, _Process] = {}
        members: dict[NamespaceKey, list[int]] = {}
        checked: set[int] = set()
        for name, ident in listed:
            process = previous.get(name)
            if process is None or process.ident != ident:
                process = _Process(int(name), ident)
                self._check(procfs, process)
                checked.add(process.pid)
            elif process.times < SETTLED or process.pid in representatives or process.pid % every == turn:
                self._check(procfs, process)
                checked.add(process.pid)
            current[name] = process
            pids = members.get(process.key)
            if pids is None:
                members[process.key] = [process.pid]
            else:
                pids.append(process.pid)
        self._processes = current
        # A namespace whose representative left it, or is gone: check it whole now.
        regroup = False
        for namespace in self._known.values():
            process = current.get(str(namespace.pid))
            if process is not None and process.key == namespace.key:
                continue
            for pid in namespace.pids:
                process = current.get(str(pid))
                if process is not None and pid not in checked:
                    self._check(procfs, process)
                    checked.add(pid)
                    regroup = True
        if regroup:
            members = {}
            for process in current.values():
                members.setdefault(process.key, []).append(process.pid)
        return members, len(checked)

    def _check(self, procfs: int, process: _Process) -> None:
        """Stat the process's table: which namespace it is in now."""
        pid, tid = process.pid, 0
        try:
            status = os.stat(f"{pid}/{_TABLE}", dir_fd=procfs)
        except FileNotFoundError:
            # Exited, a zombie, or a leader thread that exited before its threads.
            found = _through_a_thread(procfs, pid)
            if found is None:
                key = _EXITED
            else:
                tid, status = found
                key = status.st_dev, status.st_ino
        except OSError as error:
            key = _EXITED if error.errno == errno.ESRCH else _REFUSED
        else:
            key = status.st_dev, status.st_ino
        if key == process.key and tid == process.tid:
            process.times += 1
        else:
            process.key, process.tid, process.times = key, tid, 1

    def _namespace(self, procfs: int, key: NamespaceKey, members: tuple[int, ...]) -> Namespace:
        """``key``'s namespace: the one known under that key if any of its processes is
        still in it, else a new one (named, numbered, and its representative chosen afresh)."""
        known = self._known.get(key)
        if known is not None and not set(known.pids).isdisjoint(members):
            if known.pid in members and known.proc_root == self._root_of(known.pid):
                return replace(known, pids=members)
            # Its representative left: the next one that opens, as this namespace.
            wanted = known.netns if known.netns_is_inode else None
            pid = next((pid for pid, inode in self._openable(procfs, members)
                        if wanted is None or inode == wanted), None)
            return replace(known, pid=members[0] if pid is None else pid, pids=members,
                           proc_root=self._root_of(members[0] if pid is None else pid),
                           openable=pid is not None)
        self._serials += 1
        for pid, inode in self._openable(procfs, members):
            return Namespace(key=key, serial=self._serials, netns=inode, netns_is_inode=True, pid=pid,
                             pids=members, proc_root=self._root_of(pid), openable=True)
        return Namespace(key=key, serial=self._serials, netns=key[1], netns_is_inode=False,
                         pid=members[0], pids=members, proc_root=self._root_of(members[0]),
                         openable=False)

    def _openable(self, procfs: int, members: tuple[int, ...]) -> Iterator[tuple[int, int]]:
        """(pid, namespace inode) of members whose ``ns/net`` may be opened, ascending.

        Opening it takes ptrace read rights: without root only processes of our
        own user qualify (``/proc/PID`` is owned by the process's user), so
        only those are tried.
        """
        tried = 0
        for pid in members:
            if tried >= self._probes:
                return
            path = self._relative_root(pid)
            try:
                if self._euid != 0 and os.stat(path, dir_fd=procfs).st_uid != self._euid:
                    continue
                tried += 1
                inode = os.stat(f"{path}/ns/net", dir_fd=procfs).st_ino
            except OSError:
                continue
            yield pid, inode

    def _root_of(self, pid: int) -> str:
        return f"{self.procfs}/{self._relative_root(pid)}"

    def _relative_root(self, pid: int) -> str:
        process = self._processes.get(str(pid))
        tid = process.tid if process is not None else 0
        return f"{pid}/task/{tid}" if tid else str(pid)


def _through_a_thread(procfs: int, pid: int) -> tuple[int, os.stat_result] | None:
    """(tid, stat of its table) of a live thread of ``pid`` other than the leader, if any."""
    try:
        tids = sorted(int(name) for name in _list(procfs, f"{pid}/task") if name.isdigit())
    except OSError:
        return None
    for tid in tids:
        if tid == pid:
            continue
        try:
            return tid, os.stat(f"{pid}/task/{tid}/{_TABLE}", dir_fd=procfs)
        except OSError:
            continue
    return None


def _list(directory: int, path: str) -> list[str]:
    """The names in ``path``, relative to the directory fd ``directory``."""
    fd = os.open(path, _DIRECTORY, dir_fd=directory)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)
