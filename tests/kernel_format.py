"""Render connections the way the kernel prints /proc/net/tcp and /proc/net/tcp6.

Written from net/ipv4/tcp_ipv4.c and net/ipv6/tcp_ipv6.c, independently of the
parsers, so the tests check the parsers against the kernel's format rather
than against themselves.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass

HEADER = {
    4: "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
       "   uid  timeout inode",
    6: "  sl  local_address                         remote_address                 "
       "       st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
}


@dataclass(frozen=True)
class Conn:
    local: str
    local_port: int
    remote: str
    remote_port: int
    state: int = 0x01
    tx_queue: int = 0
    rx_queue: int = 0
    uid: int = 1000
    inode: int = 12345
    timer: int = 0
    retransmits: int = 0

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.local).version


def hex_address(text: str) -> str:
    """Each 32-bit word of the network-order address printed as a host integer (%08X)."""
    packed = ipaddress.ip_address(text).packed
    return "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}"
                   for i in range(0, len(packed), 4))


def row_line(sl: int, conn: Conn) -> str:
    line = (f"{sl:4d}: {hex_address(conn.local)}:{conn.local_port:04X} "
            f"{hex_address(conn.remote)}:{conn.remote_port:04X} {conn.state:02X} "
            f"{conn.tx_queue:08X}:{conn.rx_queue:08X} {conn.timer:02X}:00000000 {conn.retransmits:08X} "
            f"{conn.uid:5d} {0:8d} {conn.inode} 1 0000000000000000 100 0 0 10 0")
    return line.ljust(149) if conn.family == 4 else line   # IPv4 lines are padded


def table(conns: list[Conn], family: int, trailing_newline: bool = True) -> bytes:
    lines = [HEADER[family].ljust(149) if family == 4 else HEADER[family]]
    lines += [row_line(sl, conn) for sl, conn in enumerate(conns)]
    text = "\n".join(lines)
    return (text + "\n" if trailing_newline else text).encode()
