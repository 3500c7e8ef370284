"""Every network namespace of a procfs, found again at each read, as one source.

Each read asks the namespace finder (``discovery.NamespaceFinder``) which
namespaces the procfs's processes are in now, reads each one with a source of
its own (kept from read to read while the namespace lives), stamps its rows
with the namespace's identifier, and returns them as one snapshot: a
namespace that appears is read from the next read on (its connections are new
to the watcher), one that is gone is left out (its connections are closed).

How each namespace is read: through its sock_diag dump where tcpfast may
enter namespaces (CAP_SYS_ADMIN: root), about ten times cheaper for a
namespace with few sockets; otherwise through its /proc/PID/net tables, which
any user may read (said once). A namespace that cannot be read this time (its
process exited, moved, or refused) makes the snapshot incomplete: what it held
is kept as it was until a read reaches it, or a scan finds it gone.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from ..filters.kernel import KernelFilter
from ..schema import CONNECTION_DTYPE
from .base import Snapshot, Source, StopReading, Warn
from .discovery import Namespace, NamespaceFinder
from .netlink_events import DestroyEvents, open_destroy_events
from .proc import ProcTables

CAP_SYS_ADMIN = 21
#: Other processes of a namespace tried when the one it was to be read through is gone.
RETRIES = 3


def may_enter_namespaces(status_path: str = "/proc/self/status") -> bool:
    """Whether this process has CAP_SYS_ADMIN (setns into another network namespace)."""
    try:
        with open(status_path) as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


class AllNamespaces:
    """The TCP sockets of every network namespace of ``procfs``'s processes.

    ``netlink``: read through sock_diag (None: where this process may enter
    namespaces), each dump filtered by ``kernel``; ``warn`` says once how it reads, and what it cannot see
    (processes hidden from it: hidepid). ``namespaces``: those of the last read,
    by identifier.
    """

    def __init__(self, procfs: str = "/proc", *, warn: Warn, netlink: bool | None = None,
                 families: tuple[int, ...] = (4, 6), finder: NamespaceFinder | None = None,
                 kernel: KernelFilter | None = None) -> None:
        self.procfs = procfs
        self._kernel = kernel
        self._warn = warn
        self._netlink = may_enter_namespaces() if netlink is None else netlink
        self._families = families
        self._finder = finder or NamespaceFinder(procfs)
        self._readers: dict[int, Source] = {}          # by the namespace's serial
        self._sizes: dict[int, int] = {}
        self._events: DestroyEvents | None = None
        self._opened = 0                               # established, summed over namespaces
        self._counted: dict[int, int] = {}             # by serial: its counters' last reading
        self._counting = False                         # opened() was called before
        self._said_refused = False
        self._said_fallback = False
        self.namespaces: dict[int, Namespace] = {}
        if not self._netlink:
            warn(f"watching every network namespace of {procfs} through its /proc tables "
                 "(through netlink, about ten times cheaper, needs CAP_SYS_ADMIN)")

    @property
    def kind(self) -> str:
        return "netlink" if self._netlink else "proc"

    @property
    def where(self) -> str:
        return f"every network namespace of {self.procfs} ({len(self.namespaces)} at the last read)"

    def read(self, *, size_hint: int = 0, stop_reading: StopReading | None = None) -> Snapshot:
        scan = self._finder.scan()
        if scan.refused and not self._said_refused:
            self._warn(f"{scan.refused} process(es) of {self.procfs} cannot be looked at (a "
                       "procfs mounted with hidepid?): a namespace only they are in is not watched")
            self._said_refused = True
        found = {namespace.serial: namespace for namespace in scan.namespaces.values()}
        for serial in [serial for serial in self._readers if serial not in found]:
            self._drop(serial)
        parts: list[np.ndarray] = []
        malformed = duplicates = unread = 0
        complete = True
        for serial, namespace in found.items():
            if stop_reading is not None and stop_reading():
                complete = False
                break
            snapshot = self._read_one(namespace, stop_reading)
            if snapshot is None:              # gone, moved or refused since the scan
                unread += 1
                continue
            self._sizes[serial] = len(snapshot.rows)
            parts.append(snapshot.rows)
            malformed += snapshot.malformed
            duplicates += snapshot.duplicates
            complete &= snapshot.complete
        self.namespaces = {namespace.netns: namespace for namespace in found.values()}
        self._follow_events(found.values())
        rows = np.concatenate(parts) if parts else np.empty(0, dtype=CONNECTION_DTYPE)
        return Snapshot(rows, malformed, duplicates, complete, namespaces=len(found) - unread,
                        unread=unread)

    def destroy_events(self, warn: Warn) -> DestroyEvents | None:
        """One receiver for every namespace, following them read by read (netlink only)."""
        if not self._netlink or self._events is not None:
            return self._events
        self._events = open_destroy_events(None, warn)
        if self._events is not None:
            self._follow_events(self._current())
        return self._events

    def opened(self) -> int | None:
        """The namespaces' counters summed, each from its first reading on; a namespace
        that appeared since the last call counts whole (its counters started with it)."""
        counted: dict[int, int] = {}
        for serial, reader in self._readers.items():
            try:
                value = reader.opened()
            except (OSError, ValueError):          # gone since its read: counted next time
                value = None
            if value is None:
                if serial in self._counted:
                    counted[serial] = self._counted[serial]
                continue
            counted[serial] = value
            before = self._counted.get(serial, None if self._counting else value)
            self._opened += value - (before or 0)
        self._counted, self._counting = counted, True
        return self._opened

    def close(self) -> None:
        for serial in list(self._readers):
            self._drop(serial)

    def _current(self) -> Iterable[Namespace]:
        return self.namespaces.values()

    def _read_one(self, namespace: Namespace, stop_reading: StopReading | None) -> Snapshot | None:
        """The namespace's rows, through its reader or, when that fails (its process
        exited or moved since the scan), through another of its processes; None if
        none of them gives them."""
        pids = [namespace.pid, *(pid for pid in namespace.pids if pid != namespace.pid)]
        for pid in pids[:1 + RETRIES]:
            if pid != namespace.pid:
                namespace = replace(namespace, pid=pid, proc_root=f"{self.procfs}/{pid}")
            try:
                return self._reader(namespace).read(size_hint=self._sizes.get(namespace.serial, 0),
                                                    stop_reading=stop_reading)
            except OSError:
                self._drop(namespace.serial)
        return None

    def _reader(self, namespace: Namespace) -> Source:
        """The namespace's reader, made anew when it read the tables of a process that
        is no longer the one to read them through (it exited or moved: discovery chose
        another)."""
        reader = self._readers.get(namespace.serial)
        if reader is not None:
            if not isinstance(reader, ProcTables) or reader.proc_root == namespace.proc_root:
                return reader
            self._drop(namespace.serial)
        reader = None
        if self._netlink and namespace.openable:
            from .netlink import NetlinkSource  # netlink's imports only when it is used
            try:
                reader = NetlinkSource(namespace.netns_path, families=self._families,
                                       netns=namespace.netns, kernel=self._kernel,
                                       inode=namespace.netns if namespace.netns_is_inode else None)
            except OSError as error:
                if error.errno != errno.EPERM:
                    raise
                if not self._said_fallback:
                    self._warn(f"{error.strerror}: reading such namespaces through their "
                               "/proc tables")
                    self._said_fallback = True
        if reader is None:
            reader = ProcTables(namespace.proc_root, families=self._families,
                                netns=namespace.netns, table_key=namespace.key)
        self._readers[namespace.serial] = reader
        return reader

    def _drop(self, serial: int) -> None:
        reader = self._readers.pop(serial, None)
        self._sizes.pop(serial, None)
        if reader is not None:
            reader.close()

    def _follow_events(self, namespaces: Iterable[Namespace]) -> None:
        """Destroy events of every namespace read, and of no other."""
        if self._events is None:
            return
        wanted = {namespace.netns: namespace for namespace in namespaces if namespace.openable}
        heard = self._events.namespaces
        for netns in heard - wanted.keys():
            self._events.forget(netns)
        for netns in wanted.keys() - heard:
            namespace = wanted[netns]
            try:
                self._events.watch(netns, namespace.netns_path,
                                   namespace.netns if namespace.netns_is_inode else None)
            except OSError:
                continue                      # gone since the scan; the next read tries again
