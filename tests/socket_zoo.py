"""Real TCP sockets in every state /proc can list, over IPv4, IPv6 and IPv4-mapped IPv6, held in
a network namespace made for them (``ip netns add``, removed at the end).

What the filter tests hold the kernel's answers (sock_diag bytecode, ss's state
groups) against. The namespace has loopback up with more addresses than
127.0.0.1 and ::1 (2001:db8::1, 2001:db8::2, 2001:db8:5::1: documentation
addresses, in this namespace only), and 192.0.2.0/24 routed to loopback,
where no host answers: a connect() there stays in SYN_SENT. The states:

- LISTEN, ESTABLISHED: listeners on several addresses and ports, clients from
  several source addresses (IPv4 from 127.x, IPv6 from the 2001:db8 ones).
- SYN_SENT: a non-blocking connect to 192.0.2.2 (``::ffff:192.0.2.2`` from a
  dual-stack socket); over IPv6, to a listener whose accept queue is full (it
  drops the SYN: over loopback a SYN to an IPv6 address no one holds draws an
  ICMPv6 error that ends the connect at once).
- SYN_RECV: a listener with TCP_DEFER_ACCEPT, whose handshake's request socket
  waits for data that the client never sends.
- TIME_WAIT: the client closes first, then the server.
- FIN_WAIT2 / CLOSE_WAIT: the client shuts its sending side.
- FIN_WAIT1: the client's FIN is queued behind data the server's full receive
  window does not take (the server never reads).
- CLOSING: as FIN_WAIT1, then the server shuts its side: its FIN reaches the
  client, whose own FIN is still queued.
- LAST_ACK: the server's FIN is queued behind data the client (FIN_WAIT2, not
  reading) does not take.

CLOSE is never listed: the kernel unhashes a socket as it enters CLOSE.
Each kind is made over IPv4, IPv6, and through a dual-stack listener on ``::``
reached over IPv4 (IPv4 client rows, IPv4-mapped server rows) and over
IPv4-mapped IPv6 (mapped rows on both sides).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from namespaces import SESSION_TAG, add_namespace

from tcpfast.filters import KernelFilter, kernel_filter
from tcpfast.filters.spec import Filter
from tcpfast.schema import STATE_CODES
from tcpfast.sources.sockdiag import TCPDIAG_GETSOCK, SockDiag

CLONE_NEWNET = 0x40000000
LINGER_ABORT = struct.pack("ii", 1, 0)
SMALL_BUFFER = 4096
SETTLE_TIMEOUT = 20.0
T = TypeVar("T")

V4_LISTEN = ["127.0.0.1", "127.0.0.2", "127.0.3.3", "127.9.0.4"]
V4_CLIENTS = ["127.0.1.1", "127.0.1.2", "127.200.0.1"]
V6_LISTEN = ["::1", "2001:db8::1", "2001:db8:5::1"]
V6_CLIENTS = ["::1", "2001:db8::2", "2001:db8:5::1"]
MAPPED_CLIENTS = ["127.0.2.1", "127.0.2.2"]
UNREACHABLE = "192.0.2.2"
#: What the zoo must show, per family of rows: (4) IPv4, (6) IPv6 including mapped.
EXPECTED_STATES = {name: STATE_CODES[name] for name in
                   ("LISTEN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "TIME_WAIT", "FIN_WAIT1",
                    "FIN_WAIT2", "CLOSE_WAIT", "CLOSING", "LAST_ACK")}


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def run_inside(path: str, work: Callable[[], T]) -> T:
    """``work()`` on a thread that entered the namespace ``path``: the sockets it makes are
    that namespace's for good, whichever thread uses them afterwards."""
    result: dict[str, object] = {}

    def enter_and_work() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
            result["value"] = work()
        except BaseException as error:          # handed to the caller's thread
            result["error"] = error
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_work)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]                   # type: ignore[misc]
    return result["value"]                      # type: ignore[return-value]


class Zoo:
    """The namespace and its sockets; ``dump()`` lists them through sock_diag from inside."""

    def __init__(self) -> None:
        self.name = f"tf19-{SESSION_TAG}-{time.monotonic_ns() % 100000}"
        self.path = f"/var/run/netns/{self.name}"
        self.held: list[socket.socket] = []
        add_namespace(self.name)                # or skip where that is not permitted
        try:
            self._network()
            run_inside(self.path, self._make_sockets)
            self.rows = self._settled()
        except BaseException:
            self.close()
            raise

    def _network(self) -> None:
        for command in (["link", "set", "lo", "up"],
                        ["addr", "add", "192.0.2.1/32", "dev", "lo"],
                        ["route", "add", "192.0.2.0/24", "dev", "lo", "src", "192.0.2.1"],
                        ["-6", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad"],
                        ["-6", "addr", "add", "2001:db8::2/128", "dev", "lo", "nodad"],
                        ["-6", "addr", "add", "2001:db8:5::1/128", "dev", "lo", "nodad"]):
            subprocess.run(["ip", "-n", self.name, *command], check=True)

    # -- sockets -----------------------------------------------------------------------

    def _socket(self, af: int, receive_buffer: int = 0, send_buffer: int = 0) -> socket.socket:
        sock = socket.socket(af)
        self.held.append(sock)
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        return sock

    def _listener(self, af: int, host: str, *, dual_stack: bool = False,
                  receive_buffer: int = 0, backlog: int = 64) -> socket.socket:
        server = self._socket(af, receive_buffer)
        if af == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        server.bind((host, 0))
        server.listen(backlog)
        return server

    def _pair(self, server: socket.socket, af: int, source: str, target: str,
              receive_buffer: int = 0, send_buffer: int = 0) -> tuple[socket.socket, socket.socket]:
        client = self._socket(af, receive_buffer, send_buffer)
        client.bind((source, 0))
        client.connect((target, server.getsockname()[1]))
        accepted, _ = server.accept()
        self.held.append(accepted)
        return client, accepted

    @staticmethod
    def _fill(sender: socket.socket) -> None:
        """Send until the peer's receive window and our send buffer are full."""
        sender.setblocking(False)
        chunk = bytes(SMALL_BUFFER)
        try:
            while True:
                sender.send(chunk)
        except BlockingIOError:
            pass

    def _every_state(self, af: int, listen_host: str, source: str, target: str,
                     *, dual_stack: bool = False) -> None:
        """One socket pair or more in each state, through one listener address."""
        server = self._listener(af if not dual_stack else socket.AF_INET6, listen_host,
                                dual_stack=dual_stack, receive_buffer=SMALL_BUFFER)
        self._pair(server, af, source, target)                             # ESTABLISHED
        client, accepted = self._pair(server, af, source, target)          # TIME_WAIT
        client.close()
        accepted.close()
        client, _ = self._pair(server, af, source, target)                 # FIN_WAIT2, CLOSE_WAIT
        client.shutdown(socket.SHUT_WR)
        client, _ = self._pair(server, af, source, target, send_buffer=SMALL_BUFFER)
        self._fill(client)                                                 # FIN_WAIT1
        client.shutdown(socket.SHUT_WR)
        client, accepted = self._pair(server, af, source, target, send_buffer=SMALL_BUFFER)
        self._fill(client)                                                 # CLOSING
        client.shutdown(socket.SHUT_WR)
        accepted.shutdown(socket.SHUT_WR)
        client, accepted = self._pair(server, af, source, target, receive_buffer=SMALL_BUFFER)
        client.shutdown(socket.SHUT_WR)
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        self._fill(accepted)                                               # LAST_ACK
        accepted.shutdown(socket.SHUT_WR)
        deferred = self._listener(af if not dual_stack else socket.AF_INET6, listen_host,
                                  dual_stack=dual_stack)
        deferred.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 60)
        waiting = self._socket(af)                                         # SYN_RECV
        waiting.bind((source, 0))
        waiting.connect((target, deferred.getsockname()[1]))
        syn = self._socket(af)                                             # SYN_SENT
        syn.bind((source, 0))
        syn.setblocking(False)
        if af == socket.AF_INET6 and not target.startswith("::ffff:"):
            full = self._listener(af, listen_host, backlog=0)
            self._socket(af).connect((target, full.getsockname()[1]))  # fills the accept queue
            destination = (target, full.getsockname()[1])
        else:
            destination = ("::ffff:" if af == socket.AF_INET6 else "") + UNREACHABLE, 9
        try:
            syn.connect(destination)
        except BlockingIOError:
            pass

    def _make_sockets(self) -> None:
        for af, listen, clients in ((socket.AF_INET, V4_LISTEN, V4_CLIENTS),
                                    (socket.AF_INET6, V6_LISTEN, V6_CLIENTS)):
            for host in listen:
                for _ in range(2):
                    server = self._listener(af, host)
                    for source in clients:
                        self._pair(server, af, source, host)
        self._every_state(socket.AF_INET, "127.0.0.1", "127.0.1.1", "127.0.0.1")
        self._every_state(socket.AF_INET6, "::1", "::1", "::1")
        self._every_state(socket.AF_INET6, "2001:db8::1", "2001:db8::2", "2001:db8::1")
        for source in MAPPED_CLIENTS:                     # IPv4 clients of a dual-stack listener
            self._every_state(socket.AF_INET, "::", source, "127.0.0.1", dual_stack=True)
        self._every_state(socket.AF_INET6, "::", "::ffff:127.0.2.3", "::ffff:127.0.0.1",
                          dual_stack=True)                # mapped on both ends

    def _settled(self) -> np.ndarray:
        """The zoo's rows once every state is there and two dumps in a row agree."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            rows = self.dump()
            states = {(4 if row_family == 4 else 6, state) for row_family, state
                      in zip(rows["family"].tolist(), rows["state"].tolist())}
            complete = all((family, code) in states for family in (4, 6)
                           for code in EXPECTED_STATES.values())
            if complete and last is not None and snapshot_of(rows) == snapshot_of(last):
                return rows
            last = rows
            time.sleep(0.05)
        missing = sorted(name for name, code in EXPECTED_STATES.items() for family in (4, 6)
                         if last is None or not np.any((last["state"] == code)
                                                       & (last["family"] == family)))
        raise AssertionError(f"the zoo did not settle within {SETTLE_TIMEOUT} s; missing {missing}")

    # -- reading -----------------------------------------------------------------------

    def dump(self, kernel: KernelFilter | None = None, kind: int = TCPDIAG_GETSOCK) -> np.ndarray:
        """The namespace's sockets as the kernel sends them for ``kernel`` (None: all),
        through tcpfast's own dump (the request, its bytecode, the decoder)."""
        with SockDiag(self.path, kind) as diag:
            return diag.dump(kernel or kernel_filter(Filter())).rows

    def ss(self, *arguments: str) -> str:
        """ss's output, run in the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.name, "ss", *arguments], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def close(self) -> None:
        for sock in self.held:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            except OSError:
                pass
            sock.close()
        self.held.clear()
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def __enter__(self) -> Zoo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def snapshot_of(rows: np.ndarray) -> set[tuple]:
    """Rows as a set of (cookie, state): which sockets, in which state."""
    return set(zip(rows["cookie"].tolist(), rows["state"].tolist()))
