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


# ---- destroy messages: struct tcp_info in INET_DIAG_INFO ----------------------------

SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_INFO, INET_DIAG_PROTOCOL = 2, 10
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000

#: struct tcp_info of include/uapi/linux/tcp.h (Linux 6.18: 280 bytes), member by
#: member in order, as (name, struct code); the C layout (natural alignment) gives
#: the offsets. The two bitfield bytes are kept whole.
TCP_INFO_MEMBERS = (
    [(name, "B") for name in ("state", "ca_state", "retransmits", "probes", "backoff",
                              "options", "wscale", "flags")]
    + [(name, "I") for name in (
        "rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
        "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv", "pmtu",
        "rcv_ssthresh", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "advmss", "reordering",
        "rcv_rtt", "rcv_space", "total_retrans")]
    + [(name, "Q") for name in ("pacing_rate", "max_pacing_rate", "bytes_acked",
                                "bytes_received")]
    + [(name, "I") for name in ("segs_out", "segs_in", "notsent_bytes", "min_rtt",
                                "data_segs_in", "data_segs_out")]
    + [(name, "Q") for name in ("delivery_rate", "busy_time", "rwnd_limited",
                                "sndbuf_limited")]
    + [("delivered", "I"), ("delivered_ce", "I"), ("bytes_sent", "Q"), ("bytes_retrans", "Q")]
    + [(name, "I") for name in ("dsack_dups", "reord_seen", "rcv_ooopack", "snd_wnd",
                                "rcv_wnd", "rehash")]
    + [("total_rto", "H"), ("total_rto_recoveries", "H"), ("total_rto_time", "I")]
    + [(name, "I") for name in ("received_ce", "delivered_e1_bytes", "delivered_e0_bytes",
                                "delivered_ce_bytes", "received_e1_bytes", "received_e0_bytes",
                                "received_ce_bytes", "ecn_bits")])


def _offsets() -> dict[str, tuple[int, str]]:
    offsets, pos = {}, 0
    for name, code in TCP_INFO_MEMBERS:
        size = struct.calcsize(code)
        pos = (pos + size - 1) // size * size             # natural alignment
        offsets[name] = (pos, code)
        pos += size
    return offsets


TCP_INFO_OFFSETS = _offsets()
TCP_INFO_BYTES = 280
assert max(at + struct.calcsize(code) for at, code in TCP_INFO_OFFSETS.values()) == TCP_INFO_BYTES

#: Sizes of struct tcp_info that kernels sent, by the member that ends each.
SIZE_BEFORE_BYTES_ACKED = TCP_INFO_OFFSETS["bytes_acked"][0]          # 120: up to max_pacing_rate
SIZE_BEFORE_SEGS = TCP_INFO_OFFSETS["segs_out"][0]                    # 136: bytes, no segments
SIZE_BEFORE_BYTES_SENT = TCP_INFO_OFFSETS["bytes_sent"][0]            # 200: no data_bytes_sent


def tcp_info(length: int = TCP_INFO_BYTES, **members: int) -> bytes:
    """A struct tcp_info with ``members`` set (the others 0), cut or zero-extended to
    ``length`` bytes (an older or a newer kernel's)."""
    raw = bytearray(TCP_INFO_BYTES)
    for name, value in members.items():
        at, code = TCP_INFO_OFFSETS[name]
        struct.pack_into("=" + code, raw, at, value)
    return bytes(raw[:length]).ljust(length, b"\0")


def destroy_message(conn: Conn, info: bytes | None, before: bytes = b"", after: bytes = b"",
                    **fields) -> bytes:
    """What the kernel broadcasts for a destroyed socket: inet_diag_msg, INET_DIAG_PROTOCOL,
    INET_DIAG_INFO (None: left out), sequence 0; ``before``/``after``: more attributes."""
    attributes = before + attribute(INET_DIAG_PROTOCOL, b"\x06")
    if info is not None:
        attributes += attribute(INET_DIAG_INFO, info)
    return message(SOCK_DIAG_BY_FAMILY, diag_msg(conn, **fields) + attributes + after, seq=0,
                   flags=0, port_id=0)
