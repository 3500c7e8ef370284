"""The kernel's socket-diagnostics protocol (NETLINK_SOCK_DIAG, what ``ss`` uses): a dump
of a namespace's TCP sockets, requested and decoded into rows.

Why: the kernel spends about 0.6x the CPU producing a binary dump that it
spends formatting /proc/net/tcp text, walks its table once for both families,
and a dump of a growing table ends (a read of /proc/net/tcp may not). Rows
equal /proc's for the same sockets, with the socket's cookie besides.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

import numpy as np

from .. import backend
from ..decode import netlink_pure, parsing
from ..diff import keys
from ..filters.kernel import KernelFilter
from ..filters.states import ALL_STATES_MASK
from .base import Snapshot, StopReading
from .netns import open_in_namespace

NETLINK_SOCK_DIAG = 4
#: The legacy request: walks the TCP table once and returns both families.
TCPDIAG_GETSOCK = 18
#: The current request: one family per dump (two walks for tcp and tcp6).
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300                        # NLM_F_ROOT | NLM_F_MATCH
IPPROTO_TCP = 6

_HEADER = struct.Struct("=IHHII")
_SOCKID_ZERO = bytes(48)                  # inet_diag_sockid: any address, port, interface
_LEGACY_REQUEST = struct.Struct("=BBBB48sII")      # inet_diag_req
_FAMILY_REQUEST = struct.Struct("=BBBxI48s")       # inet_diag_req_v2
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}

# A reply holds at most ~32 KiB per recv(); twice that never truncates one.
RECV_BYTES = 64 * 1024
# A dump is driven by recv(): a recv that waits this long means the kernel is stuck.
RECV_TIMEOUT = 10.0

_compiled = backend.compiled("_netlink")
#: The decoder in use: ``decode_into(data, out, start, seq, msg_type, info=None)``, see
#: :func:`tcpfast.decode.netlink_pure.decode_into`.
decode_into = _compiled.decode_into if _compiled else netlink_pure.decode_into


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_SOCK_DIAG)
    try:
        sock.bind((0, 0))
        sock.settimeout(RECV_TIMEOUT)
    except OSError:
        sock.close()
        raise
    return sock


class _Reply:
    """What the replies to one dump request said so far."""

    def __init__(self, seq: int, kind: int) -> None:
        self.seq, self.kind = seq, kind
        self.status = 0
        self.error = 0


class SockDiag:
    """One NETLINK_SOCK_DIAG socket, kept open, dumping the TCP sockets of its namespace.

    ``request`` is TCPDIAG_GETSOCK (one walk, both families: the default,
    measured faster) or SOCK_DIAG_BY_FAMILY (one walk per family).
    """

    def __init__(self, netns_path: str | None = None, request: int = TCPDIAG_GETSOCK, *,
                 netns: int = 0, inode: int | None = None) -> None:
        if request not in (TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY):
            raise ValueError(f"unknown sock_diag request type {request}")
        self.netns_path = netns_path
        self.request = request
        self.netns = netns                  # stamped into every row (0: none)
        self._socket: socket.socket | None = open_in_namespace(netns_path, _new_socket, inode)
        self._buffer = bytearray(RECV_BYTES)
        self._seq = 0
        self._reply = _Reply(0, request)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __enter__(self) -> SockDiag:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def dump(self, kernel: KernelFilter | None = None, *, size_hint: int = 0,
             families: tuple[int, ...] = (4, 6),
             stop_reading: StopReading | None = None) -> Snapshot:
        """The TCP sockets of the namespace, those ``kernel`` keeps (its state mask and
        bytecode, evaluated by the kernel; None: every socket /proc lists).

        Raises OSError when netlink fails (the kernel's error reply included).
        When ``stop_reading()`` turns true the dump is abandoned (its socket
        is replaced, so the next dump starts clean) and the snapshot says it
        is incomplete, as it does when the kernel flags the dump interrupted.
        """
        with self._lock:
            if self._socket is None:
                self._socket = open_in_namespace(self.netns_path, _new_socket)
            collector = parsing.RowCollector(self._decode_reply,
                                             first_block_rows=size_hint + size_hint // 8)
            mask = kernel.state_mask if kernel is not None else ALL_STATES_MASK
            program = kernel.attribute() if kernel is not None else b""
            if self.request == TCPDIAG_GETSOCK:
                requests = [self._legacy_request(mask, program)]
            else:
                requests = [self._family_request(family, mask, program) for family in families]
            complete = True
            for request in requests:
                finished, interrupted = self._dump_one(collector, request, stop_reading)
                complete &= finished and not interrupted
                if not finished:
                    break
            rows = collector.rows()
            if self.request == TCPDIAG_GETSOCK and tuple(families) != (4, 6):
                rows = rows[np.isin(rows["family"], families)]
            rows, duplicates = keys.unique(rows, in_place=True)
            if self.netns:
                rows["netns"] = self.netns
            return Snapshot(rows, collector.malformed, duplicates, complete)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1           # 1..2**32-1: events use 0
        return self._seq

    def _legacy_request(self, mask: int, program: bytes = b"") -> bytes:
        payload = _LEGACY_REQUEST.pack(socket.AF_INET, 0, 0, 0, _SOCKID_ZERO, mask, 0)
        return self._message(TCPDIAG_GETSOCK, payload + program)

    def _family_request(self, family: int, mask: int, program: bytes = b"") -> bytes:
        payload = _FAMILY_REQUEST.pack(_AF[family], IPPROTO_TCP, 0, mask, _SOCKID_ZERO)
        return self._message(SOCK_DIAG_BY_FAMILY, payload + program)

    def _message(self, kind: int, payload: bytes) -> bytes:
        header = _HEADER.pack(_HEADER.size + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP,
                              self._next_seq(), 0)
        return header + payload

    def _decode_reply(self, data: bytes | memoryview, family: int, out: np.ndarray, start: int,
                      final: bool) -> tuple[int, int, int]:
        """RowCollector's parser: the replies of the dump in progress (``self._reply``)."""
        reply = self._reply
        end, consumed, malformed, status, error = decode_into(data, out, start, reply.seq,
                                                              reply.kind)
        reply.status |= status
        reply.error = reply.error or error
        return end, consumed, malformed

    def _dump_one(self, collector: parsing.RowCollector, request: bytes,
                  stop_reading: StopReading | None) -> tuple[bool, bool]:
        """Send one dump request and decode its replies into ``collector``.

        Returns (finished: not abandoned, interrupted: the kernel flagged
        NLM_F_DUMP_INTR); either way rows may be missing.
        """
        sock = self._socket
        assert sock is not None
        _, kind, _, seq, _ = _HEADER.unpack_from(request)
        self._reply = reply = _Reply(seq, kind)
        sock.sendall(request)
        view = memoryview(self._buffer)
        while not reply.status & netlink_pure.STATUS_DONE:
            if stop_reading is not None and stop_reading():
                self._abandon()
                return False, False
            got = sock.recv_into(view, 0, socket.MSG_TRUNC)
            if got == 0:
                raise OSError(errno.EPROTO, "sock_diag: the kernel closed the dump")
            if got > len(view):                  # cut: decoded as far as it goes
                collector.malformed += 1
                got = len(view)
            collector.feed(view[:got], 0, True)
        if reply.error:
            raise OSError(reply.error, f"sock_diag dump refused: {os.strerror(reply.error)}")
        return True, bool(reply.status & netlink_pure.STATUS_INTERRUPTED)

    def _abandon(self) -> None:
        """A dump left half-read blocks the next one (EBUSY): start over on a new socket."""
        assert self._socket is not None
        self._socket.close()
        self._socket = None
        self._socket = open_in_namespace(self.netns_path, _new_socket)
