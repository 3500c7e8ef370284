"""Destroyed TCP sockets as the kernel reports them: the connections a poller never sees.

A netlink socket bound to the sock_diag multicast groups SKNLGRP_INET_TCP_DESTROY
and SKNLGRP_INET6_TCP_DESTROY receives one ``inet_diag_msg`` for every full TCP
socket the kernel destroys, at once: a connection that opens and closes between
two polls is still heard of. A thread receives them as they come (so the
socket's buffer never overflows between polls) and decodes them into rows; the
poll loop drains what arrived since its last poll.

What the kernel sends (net/core/sock_diag.c, sock_diag_broadcast_destroy, and
net/ipv4/inet_diag.c, inet_diag_handler_get_info; measured on 6.18): one message
(SOCK_DIAG_BY_FAMILY, sequence 0) per destroyed full socket of a user (not the
kernel's own), the same for every listener, root or not (binding the groups
needs no privilege and asks for nothing: no request picks the attributes):
the inet_diag_msg with state CLOSE, uid 0 and inode 0 (not filled in), the
cookie and the queues; then INET_DIAG_PROTOCOL and INET_DIAG_INFO, the
socket's final ``struct tcp_info`` (280 bytes on 6.18), decoded beside each row
into CLOSE_INFO_DTYPE. A socket that sent a RST on close (SO_LINGER 0) went
through tcp_disconnect first, which cleared its remote port, its local address
and its counters: the info of a row with remote port 0 is unknown (but for its
state and its min RTT, which tells whether it was ever established). Request
sockets (SYN_RECV) and TIME_WAIT entries are not full sockets: their end is not
reported; a connection that ends in TIME_WAIT is reported
when its full socket is destroyed, on entering it (or, closed first by
close(), as soon as its FIN is acknowledged: what follows is the timewait
entry's). What the byte counts mean: tests/test_close_info.py.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..schema import CLOSE_INFO_DTYPE, CONNECTION_DTYPE, KNOWN_MIN_RTT, KNOWN_STATE
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


class Destroyed(NamedTuple):
    """Sockets destroyed since the last drain, in order."""

    rows: np.ndarray       # CONNECTION_DTYPE
    times: np.ndarray      # float64: when each was received (UNIX time, seconds)
    info: np.ndarray       # CLOSE_INFO_DTYPE: what each carried (its final tcp_info)


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
        self._info = np.empty(1024, dtype=CLOSE_INFO_DTYPE)
        self._count = 0
        self.lost = 0
        self.malformed = 0
        #: Why the receiving thread ended before close() (None: it runs, or was closed).
        self.failure: str | None = None
        self._sockets: dict[int, socket.socket] = {}      # netns -> its events socket
        # Held from a message's recv to its rows' append, by the thread and by a drain
        # alike: a message taken from a socket is in the rows before a drain counts them
        # (without it, a drain between the thread's recv and append missed the message).
        self._receiving = threading.Lock()
        self._view = memoryview(bytearray(RECV_BYTES))
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

    def drain_with_info(self) -> Destroyed:
        """The sockets destroyed since the last drain: rows, times and what each carried.
        Every event the kernel sent before the call is in it: what the receiving thread
        has not taken yet (a busy machine may not have run it) is received here."""
        self._receive_pending()
        with self._lock:
            count = self._count
            drained = Destroyed(self._rows[:count].copy(), self._times[:count].copy(),
                                self._info[:count].copy())
            self._count = 0
        return drained

    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows and times of :meth:`drain_with_info` (what the poller pairs today)."""
        rows, times, _ = self.drain_with_info()
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
        try:
            self._receive_until_stopped()
        except BaseException as error:    # anything but a stop: said by the poller, not lost
            self.failure = f"{type(error).__name__}: {error}"

    def _receive_until_stopped(self) -> None:
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
                    self._receive_from(key.fileobj, key.data)   # type: ignore[arg-type]
                if not selector.get_map():
                    self._stop.wait(STOP_CHECK_SECONDS)
        finally:
            selector.close()

    def _receive_pending(self) -> None:
        """Receive, in the caller's thread, every message waiting in the sockets."""
        with self._lock:
            sockets = list(self._sockets.items())
        for netns, sock in sockets:
            while self._receive_from(sock, netns):
                pass

    def _receive_from(self, sock: socket.socket, netns: int) -> bool:
        """One message, if one waits (True: there may be more)."""
        with self._receiving:
            return self._receive_one(sock, netns)

    def _receive_one(self, sock: socket.socket, netns: int) -> bool:
        """_receive_from's work, the lock held."""
        view = self._view
        try:
            got = sock.recv_into(view, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno == errno.ENOBUFS:                 # the kernel dropped events
                self.lost += 1
                return True
            return False                                      # closed by forget(): gone
        received = time.time()
        with self._lock:
            if self._count >= MAX_PENDING_ROWS:         # nobody drains: do not grow forever
                self.lost += 1
                return False
            start = self._count
            self._append(view[:got], received)
            if netns:
                self._rows["netns"][start:self._count] = netns
        return True

    def _append(self, data: memoryview, received: float) -> None:
        used = 0
        while True:
            start = self._count
            end, consumed, malformed, _, _ = decode_into(data[used:], self._rows, start,
                                                         EVENT_SEQ, SOCK_DIAG_BY_FAMILY,
                                                         self._info)
            self._times[start:end] = received
            self._forget_cleared_counters(start, end)
            self._count = end
            self.malformed += malformed
            used += consumed
            if used >= len(data) or end < len(self._rows):     # all of it, or a walk's end
                return
            self._rows = np.concatenate([self._rows, np.empty_like(self._rows)])
            self._times = np.concatenate([self._times, np.empty_like(self._times)])
            self._info = np.concatenate([self._info, np.empty_like(self._info)])

    def _forget_cleared_counters(self, start: int, end: int) -> None:
        """Rows start..end with remote port 0 were disconnected (tcp_disconnect zeroed
        their counters) or never connected: their info is unknown, but for the state
        and the min RTT, which tcp_disconnect leaves (what tells a socket that was
        established from a connect that was refused or never answered)."""
        cleared = start + np.flatnonzero(self._rows["remote_port"][start:end] == 0)
        if len(cleared):
            kept = self._info[["state", "min_rtt_us"]][cleared]
            known = self._info["known"][cleared]
            self._info[cleared] = np.zeros(1, dtype=CLOSE_INFO_DTYPE)
            self._info["state"][cleared] = kept["state"]
            self._info["min_rtt_us"][cleared] = kept["min_rtt_us"]
            self._info["known"][cleared] = known & (KNOWN_STATE | KNOWN_MIN_RTT)


def open_destroy_events(netns_path: str | None, warn: Callable[[str], None], *,
                        netns: int | None = None) -> DestroyEvents | None:
    """DestroyEvents, or None after saying once why not (polling goes on without them)."""
    try:
        return DestroyEvents(netns_path, netns=netns)
    except OSError as error:
        warn(f"cannot receive destroyed-socket events ({error.strerror or error}): "
             "connections shorter than the interval are not seen")
        return None
