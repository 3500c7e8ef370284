"""Destroyed TCP sockets as the kernel reports them: the connections a poller never sees.

A netlink socket bound to the sock_diag multicast groups SKNLGRP_INET_TCP_DESTROY
and SKNLGRP_INET6_TCP_DESTROY receives one ``inet_diag_msg`` for every full TCP
socket the kernel destroys, at once: a connection that opens and closes between
two polls is still heard of. A thread receives them as they come (so the
socket's buffer never overflows between polls) and decodes them into rows; the
poll loop drains what arrived since its last poll.

What the kernel sends, measured on 6.x: state CLOSE, inode 0, uid as /proc
would show it; a socket that sent a RST on close (SO_LINGER 0) has lost its
local address and remote port (zeros). Request sockets (SYN_RECV) and TIME_WAIT
entries are not full sockets: their end is not reported; a connection that
ends in TIME_WAIT is reported when its full socket is destroyed, on entering it.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from ..schema import CONNECTION_DTYPE
from .netns import open_in_namespace
from .sockdiag import NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, decode_into

SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET6_TCP_DESTROY = 3
#: bind()'s group mask: group n is bit n - 1.
GROUPS = (1 << (SKNLGRP_INET_TCP_DESTROY - 1)) | (1 << (SKNLGRP_INET6_TCP_DESTROY - 1))
#: Events are broadcast with sequence number 0.
EVENT_SEQ = 0
# Room for bursts while the receiving thread waits for the GIL (SO_RCVBUFFORCE as root).
RECEIVE_BUFFER = 8 << 20
# How often the receiving thread looks whether it should stop.
STOP_CHECK_SECONDS = 0.2
RECV_BYTES = 64 * 1024
#: Rows held for a drain at most (64 MiB); past it events are counted as lost.
MAX_PENDING_ROWS = 1 << 20


def _events_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_SOCK_DIAG)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)   # SO_RCVBUFFORCE
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((0, GROUPS))
    except OSError:
        sock.close()
        raise
    return sock


class DestroyEvents:
    """Receives the destroyed TCP sockets of one namespace or many until closed: one
    socket per namespace, one thread for all of them.

    ``netns_path`` (None: ours) is watched from the start, its rows stamped with
    ``netns`` (None: the namespace's inode number, as the sources stamp theirs; 0:
    nothing); :meth:`watch` and :meth:`forget` add and drop namespaces (every
    namespace of the host, say). Raises OSError when the kernel refuses the
    multicast groups. ``lost`` counts the times events were dropped (the
    kernel's buffer overflowed, or MAX_PENDING_ROWS were waiting for a drain):
    then some went unheard.
    """

    def __init__(self, netns_path: str | None = None, *, netns: int | None = None) -> None:
        if netns is None:
            netns = os.stat(netns_path or "/proc/self/ns/net").st_ino
        self._lock = threading.Lock()
        self._rows = np.empty(1024, dtype=CONNECTION_DTYPE)
        self._times = np.empty(1024, dtype=np.float64)
        self._count = 0
        self.lost = 0
        self.malformed = 0
        self._sockets: dict[int, socket.socket] = {}      # netns -> its events socket
        self._changed = True                               # the selector must be rebuilt
        self.watch(netns, netns_path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="tcpfast-destroy-events",
                                        daemon=True)
        self._thread.start()

    def watch(self, netns: int, netns_path: str | None, inode: int | None = None) -> None:
        """Hear of the namespace ``netns_path`` (its file must be ``inode``, if given) too,
        its rows stamped ``netns``; OSError when it cannot be entered or refuses."""
        sock = open_in_namespace(netns_path, _events_socket, inode)
        with self._lock:
            old = self._sockets.pop(netns, None)
            self._sockets[netns] = sock
            self._changed = True
        if old is not None:
            old.close()

    def forget(self, netns: int) -> None:
        """No more events of ``netns`` (a namespace gone); those received are kept."""
        with self._lock:
            sock = self._sockets.pop(netns, None)
            self._changed = True
        if sock is not None:
            sock.close()

    @property
    def namespaces(self) -> set[int]:
        with self._lock:
            return set(self._sockets)

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """The sockets destroyed since the last drain, in order, and when each was
        received (UNIX time, seconds)."""
        with self._lock:
            rows, times = self._rows[:self._count].copy(), self._times[:self._count].copy()
            self._count = 0
        return rows, times

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            sockets, self._sockets = list(self._sockets.values()), {}
        for sock in sockets:
            sock.close()

    def __enter__(self) -> DestroyEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _receive(self) -> None:
        buffer = bytearray(RECV_BYTES)
        view = memoryview(buffer)
        selector = selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._changed:                 # namespaces came or went
                        selector.close()
                        selector = selectors.DefaultSelector()
                        for netns, sock in self._sockets.items():
                            selector.register(sock, selectors.EVENT_READ, netns)
                        self._changed = False
                for key, _ in selector.select(STOP_CHECK_SECONDS) if selector.get_map() else ():
                    self._receive_from(key.fileobj, key.data, view)   # type: ignore[arg-type]
                if not selector.get_map():
                    self._stop.wait(STOP_CHECK_SECONDS)
        finally:
            selector.close()

    def _receive_from(self, sock: socket.socket, netns: int, view: memoryview) -> None:
        try:
            got = sock.recv_into(view, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno == errno.ENOBUFS:                 # the kernel dropped events
                self.lost += 1
            return                                            # closed by forget(): gone
        received = time.time()
        with self._lock:
            if self._count >= MAX_PENDING_ROWS:         # nobody drains: do not grow forever
                self.lost += 1
                return
            start = self._count
            self._append(view[:got], received)
            if netns:
                self._rows["netns"][start:self._count] = netns

    def _append(self, data: memoryview, received: float) -> None:
        used = 0
        while True:
            end, consumed, malformed, _, _ = decode_into(data[used:], self._rows, self._count,
                                                         EVENT_SEQ, SOCK_DIAG_BY_FAMILY)
            self._times[self._count:end] = received
            self._count = end
            self.malformed += malformed
            used += consumed
            if used >= len(data) or end < len(self._rows):     # all of it, or a walk's end
                return
            self._rows = np.concatenate([self._rows, np.empty_like(self._rows)])
            self._times = np.concatenate([self._times, np.empty_like(self._times)])


def open_destroy_events(netns_path: str | None, warn: Callable[[str], None], *,
                        netns: int | None = None) -> DestroyEvents | None:
    """DestroyEvents, or None after saying once why not (polling goes on without them)."""
    try:
        return DestroyEvents(netns_path, netns=netns)
    except OSError as error:
        warn(f"cannot receive destroyed-socket events ({error.strerror or error}): "
             "connections shorter than the interval are not seen")
        return None
