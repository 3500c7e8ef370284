"""Which way a connection goes, decided from one poll's rows with vectorised key matching.

- ``listen``: the row is a LISTEN socket.
- ``in``: a peer connected to this host: SYN_RECV, or the row's local address
  and port are those of a LISTEN socket (that very address, or the wildcard of
  its family; a ``[::]`` listener also accepts IPv4-mapped peers, whose rows
  are IPv6 rows with a ``::ffff:a.b.c.d`` local address).
- ``out``: this host connected out: SYN_SENT, or no listener holds the local
  port and that port is in the ephemeral range the kernel picks client ports
  from (``net.ipv4.ip_local_port_range``).
- ``unknown``: the table cannot tell: no listener matches and the local port
  is outside the ephemeral range (an inbound connection whose listener has
  closed since it was accepted looks like this), or the row has no peer yet.

Corner cases, by these rules: a connection accepted by a listener that closed
afterwards is ``unknown`` (or ``out`` if its port is ephemeral); a client whose
ephemeral port equals a port that some other address listens on is ``out``,
since only the listener's own address or its family's wildcard count.
"""

from __future__ import annotations

import numpy as np

from ..diff import keys
from ..schema import STATE_CODES, take_rows

UNKNOWN, IN, OUT, LISTEN = 0, 1, 2, 3
DIRECTION_NAMES: dict[int, str] = {UNKNOWN: "unknown", IN: "in", OUT: "out", LISTEN: "listen"}

#: Linux's default ``net.ipv4.ip_local_port_range``.
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)

_LISTEN, _SYN_SENT, _SYN_RECV = STATE_CODES["LISTEN"], STATE_CODES["SYN_SENT"], STATE_CODES["SYN_RECV"]


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's client port range, or Linux's default where it cannot be read."""
    try:
        with open(path) as ports:
            low, high = (int(value) for value in ports.read().split())
        return low, high
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_PORTS


def directions(rows: np.ndarray, listeners: np.ndarray | None = None,
               ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL_PORTS) -> np.ndarray:
    """The direction code of each row (``DIRECTION_NAMES`` names them).

    ``listeners``: the LISTEN rows of the same poll, when ``rows`` is only part
    of it (the new rows, say); by default the LISTEN rows among ``rows``.
    """
    if listeners is None:
        listeners = take_rows(rows, rows["state"] == _LISTEN)
    else:
        listeners = take_rows(listeners, listeners["state"] == _LISTEN)
    # Each field read once, out of the 80-byte rows: the tests below read packed bytes.
    state, local_port = rows["state"].copy(), rows["local_port"].copy()
    result = np.full(len(rows), UNKNOWN, dtype=np.uint8)
    ephemeral_port = (local_port >= ephemeral[0]) & (local_port <= ephemeral[1])
    result[ephemeral_port & (rows["remote_port"] != 0)] = OUT
    if len(listeners) and len(rows):
        result[keys.listened(rows, listeners)] = IN
    result[state == _SYN_RECV] = IN
    result[state == _SYN_SENT] = OUT
    result[state == _LISTEN] = LISTEN
    return result


def direction_names(codes: np.ndarray) -> list[str]:
    """The names of direction codes, for output."""
    return [DIRECTION_NAMES[code] for code in codes.tolist()]
