"""Deterministic /proc/net/tcp{,6} text of any size, generated at run time (not committed)."""

from __future__ import annotations

import functools

import numpy as np

# The kernel's own row format (net/ipv4/tcp_ipv4.c, get_tcp4_sock; IPv6 alike).
ROW = ("%4d: %s:%04X %s:%04X %02X %08X:%08X %02X:%08X %08X %5u %8d %u 1 "
       "0000000000000000 20 4 30 10 -1")
HEADER = {
    4: "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
       "   uid  timeout inode",
    6: "  sl  local_address                         remote_address                 "
       "       st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
}
STATES = np.array([0x01] * 8 + [0x06, 0x0A])          # mostly ESTABLISHED, some TIME_WAIT


def _hex_words(addresses: np.ndarray) -> list[str]:
    """(n, k) network-order byte rows -> the kernel's %08X of each host-order word."""
    words = np.ascontiguousarray(addresses).view(np.uint32)     # host order
    return ["".join(f"{word:08X}" for word in row) for row in words.tolist()]


@functools.cache
def table(rows: int, family: int, seed: int = 1) -> bytes:
    """A table of ``rows`` random but valid sockets, as the kernel prints it."""
    rng = np.random.default_rng(seed + family)
    width = 4 if family == 4 else 16
    local = rng.integers(0, 256, (rows, width), dtype=np.uint8)
    remote = rng.integers(0, 256, (rows, width), dtype=np.uint8)
    ports = rng.integers(0, 65536, (rows, 2)).tolist()
    states = rng.choice(STATES, rows).tolist()
    queues = rng.integers(0, 4096, (rows, 2)).tolist()
    uids = rng.choice([0, 33, 1000], rows).tolist()
    inodes = rng.integers(1, 2**31, rows).tolist()
    lines = [HEADER[family].ljust(149) if family == 4 else HEADER[family]]
    for sl, (loc, rem, (lport, rport), state, (txq, rxq), uid, inode) in enumerate(
            zip(_hex_words(local), _hex_words(remote), ports, states, queues, uids, inodes)):
        line = ROW % (sl, loc, lport, rem, rport, state, txq, rxq, 0, 0, 0, uid, 0,
                      inode if state != 0x06 else 0)
        lines.append(line.ljust(149) if family == 4 else line)
    return ("\n".join(lines) + "\n").encode()
