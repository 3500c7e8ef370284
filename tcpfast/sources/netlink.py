"""A namespace's sockets through its sock_diag dump, as a source.

One NETLINK_SOCK_DIAG socket, made in the namespace (ours, or another entered
once), is kept open and reused for every dump. It fails loudly (OSError): the
fallback to /proc is :class:`tcpfast.sources.fallback.FallbackSource`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from .base import Snapshot, StopReading, Warn
from .netlink_events import DestroyEvents, open_destroy_events
from .sockdiag import TCPDIAG_GETSOCK, SockDiag


class NetlinkSource:
    """Dumps the TCP sockets of the namespace ``netns_path`` (a ``/var/run/netns/NAME`` or
    ``/proc/PID/ns/net`` file; None: ours) through sock_diag.

    ``states`` (kernel state codes; None: every state /proc lists) is pushed into
    the kernel's dump filter; ``request`` is TCPDIAG_GETSOCK (one walk for both
    families) or SOCK_DIAG_BY_FAMILY. Rows are stamped with ``netns`` (the
    namespace's identifier; None: its inode number; 0: none); ``inode``: the
    namespace file must be that namespace. OSError when the namespace cannot be entered or the socket made.
    """

    kind = "netlink"

    def __init__(self, netns_path: str | None = None, *, request: int = TCPDIAG_GETSOCK,
                 states: Collection[int] | None = None, families: tuple[int, ...] = (4, 6),
                 netns: int | None = None, inode: int | None = None) -> None:
        self.netns_path = netns_path
        if netns is None:
            netns = os.stat(netns_path or "/proc/self/ns/net").st_ino
        self.netns = netns
        self._states = states
        self._families = families
        self._diag = SockDiag(netns_path, request, netns=netns, inode=inode)

    @property
    def where(self) -> str:
        return "the sock_diag dump" + (f" of {self.netns_path}" if self.netns_path else "")

    def read(self, *, size_hint: int = 0, stop_reading: StopReading | None = None) -> Snapshot:
        return self._diag.dump(self._states, size_hint=size_hint, families=self._families,
                               stop_reading=stop_reading)

    def destroy_events(self, warn: Warn) -> DestroyEvents | None:
        return open_destroy_events(self.netns_path, warn, netns=self.netns)

    def close(self) -> None:
        self._diag.close()

    def __enter__(self) -> NetlinkSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
