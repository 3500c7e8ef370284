"""The kernel's socket-diagnostics dump (NETLINK_SOCK_DIAG, what ``ss`` uses) as a source.

Why: the kernel spends about 0.6x the CPU producing a binary dump that it
spends formatting /proc/net/tcp text, walks its table once for both families,
and a dump of a growing table ends (a read of /proc/net/tcp may not). Rows
equal /proc's for the same sockets. One socket is kept open and reused for
every dump; any failure of netlink falls back to /proc with one warning.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import re
import socket
import struct
import threading
import time
import warnings
from collections.abc import Callable, Collection

import numpy as np

from .. import backend
from ..decode import netlink_pure, parsing
from ..diff import keys
from . import proc
from .proc import Snapshot

NETLINK_SOCK_DIAG = 4
#: The legacy request: walks the TCP table once and returns both families.
TCPDIAG_GETSOCK = 18
#: The current request: one family per dump (two walks for tcp and tcp6).
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300                        # NLM_F_ROOT | NLM_F_MATCH
IPPROTO_TCP = 6
TCP_NEW_SYN_RECV = 12                     # pending handshakes; shown as SYN_RECV
TCP_BOUND_INACTIVE = 13                   # bound, not listening: /proc does not list it
#: Every state /proc lists.
ALL_STATES_MASK = 0xFFFFFFFF & ~(1 << TCP_BOUND_INACTIVE)
CLONE_NEWNET = 0x40000000

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
#: The decoder in use: ``decode_into(data, out, start, seq, msg_type)``, see
#: :func:`tcpfast.decode.netlink_pure.decode_into`.
decode_into = _compiled.decode_into if _compiled else netlink_pure.decode_into


class NetlinkFallbackWarning(RuntimeWarning):
    """netlink failed; rows come from /proc instead."""


def state_mask(states: Collection[int] | None) -> int:
    """The kernel's state filter for ``states`` (None: every state /proc lists)."""
    if not states:
        return ALL_STATES_MASK
    mask = 0
    for state in states:
        mask |= 1 << state
    if mask & (1 << 3):                   # SYN_RECV: the request sockets too
        mask |= 1 << TCP_NEW_SYN_RECV
    return mask


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):              # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


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


def open_in_namespace(netns_path: str | None,
                      make: Callable[[], socket.socket] | None = None) -> socket.socket:
    """A netlink socket made by ``make`` (a dump socket by default) in the namespace
    ``netns_path`` (None: ours).

    A socket belongs to the namespace it was created in, for good: a worker
    thread enters the namespace (``setns()``, root only), creates it, and
    ends; the rest of the process stays where it was.
    """
    make = make or _new_socket
    if netns_path is None:
        return make()
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise OSError(error.errno, f"cannot open network namespace {netns_path}: "
                                   f"{error.strerror}") from None
    result: dict[str, object] = {}

    def enter_and_open() -> None:
        try:
            _setns(fd)
            result["socket"] = make()
        except OSError as error:
            result["error"] = error

    try:
        worker = threading.Thread(target=enter_and_open, name="tcpfast-netns", daemon=True)
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    refused = result.get("error")
    if refused is not None:
        assert isinstance(refused, OSError)
        hint = " (entering a namespace needs root)" if refused.errno == errno.EPERM else ""
        raise OSError(refused.errno, f"cannot enter network namespace {netns_path}: "
                                     f"{refused.strerror or refused}{hint}") from None
    sock = result["socket"]
    assert isinstance(sock, socket.socket)
    return sock


def namespace_of(proc_root: str) -> str | None:
    """The namespace file whose sockets ``proc_root``'s tables list; None: our own.

    Raises FileNotFoundError when ``proc_root`` has none (a directory of
    recorded tables): netlink cannot read that, only /proc can.
    """
    # /proc/net is a link to /proc/self/net: follow it to the process it names.
    tables = os.path.realpath(os.path.join(proc_root, "net"))
    path = os.path.join(os.path.dirname(tables), "ns", "net")
    theirs, ours = os.stat(path), os.stat("/proc/self/ns/net")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        return None
    return path


def _proc_root_of(netns_path: str) -> str | None:
    """``/proc/PID`` for ``/proc/PID/ns/net`` (its tables are that namespace's), else None."""
    match = re.fullmatch(r"(/proc/[0-9]+)/ns/net", os.path.normpath(netns_path))
    return match.group(1) if match else None


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

    def __init__(self, netns_path: str | None = None, request: int = TCPDIAG_GETSOCK) -> None:
        if request not in (TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY):
            raise ValueError(f"unknown sock_diag request type {request}")
        self.netns_path = netns_path
        self.request = request
        self._socket: socket.socket | None = open_in_namespace(netns_path)
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

    def dump(self, states: Collection[int] | None = None, *, size_hint: int = 0,
             families: tuple[int, ...] = (4, 6),
             stop_reading: Callable[[], bool] | None = None) -> Snapshot:
        """The TCP sockets of the namespace in ``states`` (None: all /proc lists).

        Raises OSError when netlink fails (the kernel's error reply included).
        When ``stop_reading()`` turns true the dump is abandoned (its socket
        is replaced, so the next dump starts clean) and the snapshot says it
        is incomplete, as it does when the kernel flags the dump interrupted.
        """
        with self._lock:
            if self._socket is None:
                self._socket = open_in_namespace(self.netns_path)
            collector = parsing.RowCollector(self._decode_reply,
                                             first_block_rows=size_hint + size_hint // 8)
            mask = state_mask(states)
            if self.request == TCPDIAG_GETSOCK:
                requests = [self._legacy_request(mask)]
            else:
                requests = [self._family_request(family, mask) for family in families]
            complete = True
            for request in requests:
                finished, interrupted = self._dump_one(collector, request, stop_reading)
                complete &= finished and not interrupted
                if not finished:
                    break
            rows = collector.rows()
            if self.request == TCPDIAG_GETSOCK and tuple(families) != (4, 6):
                rows = rows[np.isin(rows["family"], families)]
            rows, duplicates = keys.unique(rows)
            return Snapshot(rows, collector.malformed, duplicates, complete)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1           # 1..2**32-1: events use 0
        return self._seq

    def _legacy_request(self, mask: int) -> bytes:
        payload = _LEGACY_REQUEST.pack(socket.AF_INET, 0, 0, 0, _SOCKID_ZERO, mask, 0)
        return self._message(TCPDIAG_GETSOCK, payload)

    def _family_request(self, family: int, mask: int) -> bytes:
        payload = _FAMILY_REQUEST.pack(_AF[family], IPPROTO_TCP, 0, mask, _SOCKID_ZERO)
        return self._message(SOCK_DIAG_BY_FAMILY, payload)

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
                  stop_reading: Callable[[], bool] | None) -> tuple[bool, bool]:
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
        self._socket = open_in_namespace(self.netns_path)


class NetlinkSource:
    """Polls one namespace through sock_diag, or through /proc once netlink has failed.

    ``proc_root`` names the namespace (its ``ns/net``) and is the fallback;
    ``netns_path`` (a ``/var/run/netns/NAME`` or ``/proc/PID/ns/net`` file)
    names it directly: then entering it must work (OSError otherwise), and
    the fallback is ``/proc/PID`` where the path gives one. The first failure
    is reported once through ``warn`` and /proc is used from then on.
    """

    def __init__(self, proc_root: str = "/proc", netns_path: str | None = None, *,
                 request: int = TCPDIAG_GETSOCK,
                 warn: Callable[[str], None] | None = None) -> None:
        self._warn = warn or _warn_once
        self.fallback_root: str | None = proc_root
        self._diag: SockDiag | None = None
        self.failure: str | None = None
        #: The namespace dumped: a file to enter, or None for our own.
        self.netns_path = netns_path
        if netns_path is not None:
            self.fallback_root = _proc_root_of(netns_path)
            self._diag = SockDiag(netns_path, request)      # raises: no silent other namespace
            return
        try:
            self.netns_path = namespace_of(proc_root)
            self._diag = SockDiag(self.netns_path, request)
        except OSError as error:
            self._fail(f"cannot dump {proc_root}'s sockets through netlink ({_reason(error)})")

    @property
    def using_netlink(self) -> bool:
        return self._diag is not None

    def read(self, states: Collection[int] | None = None, *, size_hint: int = 0,
             deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
             families: tuple[int, ...] = (4, 6)) -> Snapshot:
        """One poll's rows: like :func:`tcpfast.sources.proc.read_snapshot`.

        ``states`` is pushed into the kernel as a filter (with netlink);
        /proc, when in use, lists every state.
        """
        if self._diag is not None:
            def stop_reading() -> bool:
                return ((deadline is not None and time.monotonic() > deadline)
                        or (cancelled is not None and cancelled()))
            try:
                return self._diag.dump(states, size_hint=size_hint, families=families,
                                       stop_reading=stop_reading)
            except OSError as error:
                self._diag.close()
                self._diag = None
                self._fail(f"netlink dump failed ({_reason(error)})")
        if self.fallback_root is None:
            raise OSError(errno.ENOTSUP, f"netlink failed ({self.failure}) and the namespace "
                                         "has no /proc tables to fall back to")
        return proc.read_snapshot(self.fallback_root, size_hint=size_hint, deadline=deadline,
                                  cancelled=cancelled, families=families)

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()

    def __enter__(self) -> NetlinkSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fail(self, failure: str) -> None:
        self.failure = failure
        where = f"{self.fallback_root}/net/tcp*" if self.fallback_root else "nothing"
        self._warn(f"{failure}; reading {where} instead")


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _warn_once(message: str) -> None:
    warnings.warn(f"tcpfast: {message}", NetlinkFallbackWarning, stacklevel=4)


_sources: dict[str, NetlinkSource] = {}
_sources_lock = threading.Lock()


@atexit.register
def _close_shared_sources() -> None:
    for source in _sources.values():
        source.close()


def shared_source(proc_root: str = "/proc") -> NetlinkSource:
    """The process's NetlinkSource for ``proc_root``: one persistent socket per namespace."""
    with _sources_lock:
        source = _sources.get(proc_root)
        if source is None:
            source = _sources[proc_root] = NetlinkSource(proc_root)
        return source


def read_snapshot(proc_root: str = "/proc", *, size_hint: int = 0,
                  deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                  families: tuple[int, ...] = (4, 6),
                  states: Collection[int] | None = None) -> Snapshot:
    """The sockets ``proc_root``'s tables would list, through sock_diag (see NetlinkSource)."""
    return shared_source(proc_root).read(states, size_hint=size_hint, deadline=deadline,
                                         cancelled=cancelled, families=families)
