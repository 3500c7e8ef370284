"""A sock_diag dump sent with a filter's state mask and bytecode, decoded into rows: what the
kernel answers for a :class:`tcpfast.filters.KernelFilter`, for the tests to compare with the mask.

The request is built here, as the kernel's uapi lays it out (``inet_diag_req`` for
TCPDIAG_GETSOCK, ``inet_diag_req_v2`` for SOCK_DIAG_BY_FAMILY, each followed by the
``INET_DIAG_REQ_BYTECODE`` attribute); replies are decoded by tcpfast's decoder.
"""

from __future__ import annotations

import os
import socket
import struct

import numpy as np

from tcpfast.decode import netlink_pure
from tcpfast.filters import KernelFilter
from tcpfast.schema import CONNECTION_DTYPE
from tcpfast.sources.netns import open_in_namespace
from tcpfast.sources.sockdiag import (
    IPPROTO_TCP,
    NETLINK_SOCK_DIAG,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    TCPDIAG_GETSOCK,
    decode_into,
)

HEADER = struct.Struct("=IHHII")
LEGACY_REQUEST = struct.Struct("=BBBB48sII")      # inet_diag_req
FAMILY_REQUEST = struct.Struct("=BBBxI48s")       # inet_diag_req_v2
AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def request(kernel: KernelFilter, kind: int, family: int = 4, seq: int = 1) -> bytes:
    """One dump request message carrying ``kernel``'s states and bytecode."""
    if kind == TCPDIAG_GETSOCK:
        payload = LEGACY_REQUEST.pack(socket.AF_INET, 0, 0, 0, bytes(48), kernel.state_mask, 0)
    else:
        payload = FAMILY_REQUEST.pack(AF[family], IPPROTO_TCP, 0, kernel.state_mask, bytes(48))
    payload += kernel.attribute()
    return HEADER.pack(HEADER.size + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    sock.bind((0, 0))
    sock.settimeout(10)
    return sock


def dump(kernel: KernelFilter, kind: int = TCPDIAG_GETSOCK, netns_path: str | None = None
         ) -> np.ndarray:
    """The sockets the kernel sends for ``kernel`` (both families), in the namespace of
    ``netns_path`` (None: ours). OSError: the kernel's refusal (EINVAL from its bytecode
    audit, say)."""
    parts = []
    with open_in_namespace(netns_path, _netlink_socket) as sock:
        families = (4,) if kind == TCPDIAG_GETSOCK else (4, 6)
        for seq, family in enumerate(families, start=1):
            sock.sendall(request(kernel, kind, family, seq))
            status = 0
            while not status & netlink_pure.STATUS_DONE:
                data = sock.recv(1 << 20)
                out = np.empty(len(data) // netlink_pure.DIAG_MSG_BYTES + 1, dtype=CONNECTION_DTYPE)
                end, _, malformed, status, error = decode_into(data, out, 0, seq, kind)
                assert malformed == 0
                if error:
                    raise OSError(error, f"sock_diag refused the dump: {os.strerror(error)}")
                parts.append(out[:end])
    return np.concatenate(parts)
