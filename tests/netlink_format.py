"""Build NETLINK_SOCK_DIAG replies the way the kernel sends them.

Written from include/uapi/linux/netlink.h and inet_diag.h (struct nlmsghdr,
struct inet_diag_msg, struct nlattr), independently of the decoders, so the
tests check the decoders against the kernel's format rather than against
themselves. Connections are the same ``Conn`` as for /proc text.
"""

from __future__ import annotations

import ipaddress
import struct

from kernel_format import Conn

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_MULTI = 0x02
NLM_F_DUMP_INTR = 0x10
TCPDIAG_GETSOCK = 18
AF = {4: 2, 6: 10}
SEQ = 0x5EED0001


def align(size: int) -> int:
    return (size + 3) & ~3


def message(kind: int, payload: bytes, seq: int = SEQ, flags: int = NLM_F_MULTI,
            port_id: int = 4242) -> bytes:
    """One nlmsghdr + payload, padded to 4 bytes as the kernel lays them out."""
    header = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, port_id)
    return (header + payload).ljust(align(16 + len(payload)), b"\0")


def attribute(kind: int, value: bytes) -> bytes:
    """One nlattr (length, type) + value, padded to 4 bytes."""
    return (struct.pack("=HH", 4 + len(value), kind) + value).ljust(align(4 + len(value)), b"\0")


def diag_msg(conn: Conn, wqueue: int | None = None, cookie: int = 0, expires: int = 0) -> bytes:
    """struct inet_diag_msg for ``conn`` (72 bytes). ``wqueue`` overrides tx_queue
    (the kernel puts a listener's backlog limit there)."""
    width = 4 if conn.family == 4 else 16
    local = ipaddress.ip_address(conn.local).packed.ljust(16, b"\0")
    remote = ipaddress.ip_address(conn.remote).packed.ljust(16, b"\0")
    assert len(local) == len(remote) == 16 and width in (4, 16)
    return (struct.pack("=BBBB", AF[conn.family], conn.state, conn.timer, conn.retransmits & 0xFF)
            + struct.pack(">HH", conn.local_port, conn.remote_port) + local + remote
            + struct.pack("=IQ", 0, cookie)
            + struct.pack("=IIIII", expires, conn.rx_queue,
                          conn.tx_queue if wqueue is None else wqueue, conn.uid, conn.inode))


def socket_message(conn: Conn, extra: bytes = b"", **fields) -> bytes:
    return message(TCPDIAG_GETSOCK, diag_msg(conn, **fields) + extra)


def done(seq: int = SEQ, code: int = 0) -> bytes:
    """NLMSG_DONE: the int the dump ended with (0, or a negative errno)."""
    return message(NLMSG_DONE, struct.pack("=i", -code), seq)


def error(code: int, seq: int = SEQ) -> bytes:
    """NLMSG_ERROR: the negative errno, then the request's header."""
    return message(NLMSG_ERROR, struct.pack("=i", -code) + bytes(16), seq, flags=0)
