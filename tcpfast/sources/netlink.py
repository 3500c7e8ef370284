"""A namespace's sockets through its sock_diag dump, as a source.

One NETLINK_SOCK_DIAG socket, made in the namespace (ours, or another entered
once), is kept open and reused for every dump. It fails loudly (OSError): the
fallback to /proc is :class:`tcpfast.sources.fallback.FallbackSource`'s job.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from ..diff import keys
from ..filters.kernel import KernelFilter
from ..filters.states import kernel_state_mask
from ..schema import STATE_CODES
from .base import Snapshot, StopReading, Warn
from .netlink_events import DestroyEvents, open_destroy_events
from .snmp import SnmpCounters
from .sockdiag import TCPDIAG_GETSOCK, SockDiag

LISTEN = STATE_CODES["LISTEN"]
#: A dump of listening sockets alone: what directions need when a filter leaves them out.
LISTENERS = KernelFilter(kernel_state_mask({LISTEN}), b"", ("states",), ())


class NetlinkSource:
    """Dumps the TCP sockets of the namespace ``netns_path`` (a ``/var/run/netns/NAME`` or
    ``/proc/PID/ns/net`` file; None: ours) through sock_diag.

    ``kernel`` (a filter's state mask and bytecode; None: every socket /proc lists)
    is evaluated by the kernel during the dump; when it leaves listeners out, a
    second dump of the LISTEN sockets alone (the kernel walks only its listening
    hash for it) adds them, since directions are decided from them. ``request``
    is TCPDIAG_GETSOCK (one walk for both families) or SOCK_DIAG_BY_FAMILY.
    Rows are stamped with ``netns`` (the namespace's identifier; None: its inode
    number; 0: none); ``inode``: the namespace file must be that namespace.
    OSError when the namespace cannot be entered or the socket made.
    """

    kind = "netlink"

    def __init__(self, netns_path: str | None = None, *, request: int = TCPDIAG_GETSOCK,
                 kernel: KernelFilter | None = None, families: tuple[int, ...] = (4, 6),
                 netns: int | None = None, inode: int | None = None) -> None:
        self.netns_path = netns_path
        if netns is None:
            netns = os.stat(netns_path or "/proc/self/ns/net").st_ino
        self.netns = netns
        self._kernel = kernel
        self._listeners = (kernel is not None
                           and (bool(kernel.bytecode) or not kernel.state_mask >> LISTEN & 1))
        self._families = families
        self._diag = SockDiag(netns_path, request, netns=netns, inode=inode)
        self._counters: SnmpCounters | None = None

    @property
    def where(self) -> str:
        return "the sock_diag dump" + (f" of {self.netns_path}" if self.netns_path else "")

    def read(self, *, size_hint: int = 0, stop_reading: StopReading | None = None) -> Snapshot:
        snapshot = self._diag.dump(self._kernel, size_hint=size_hint, families=self._families,
                                   stop_reading=stop_reading)
        if not self._listeners:
            return snapshot
        listeners = self._diag.dump(LISTENERS, families=self._families, stop_reading=stop_reading)
        rows, duplicates = keys.unique(np.concatenate([snapshot.rows, listeners.rows]),
                                       in_place=True)
        return replace(snapshot, rows=rows, malformed=snapshot.malformed + listeners.malformed,
                       duplicates=snapshot.duplicates + duplicates,
                       complete=snapshot.complete and listeners.complete)

    def destroy_events(self, warn: Warn) -> DestroyEvents | None:
        return open_destroy_events(self.netns_path, warn, netns=self.netns)

    def opened(self) -> int | None:
        if self._counters is None:
            self._counters = SnmpCounters(netns_path=self.netns_path)
        return self._counters.read().opened

    def close(self) -> None:
        self._diag.close()
        if self._counters is not None:
            self._counters.close()
            self._counters = None

    def __enter__(self) -> NetlinkSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
