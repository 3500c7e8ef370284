"""The one definition of a parsed connection row, and the kernel's TCP state names."""

from __future__ import annotations

import numpy as np

#: One row per socket listed in /proc/net/tcp or /proc/net/tcp6.
#: Addresses are 16 bytes in network order; an IPv4 address fills the first 4
#: bytes and the rest are zero. The key fields (addresses, ports, family) come
#: first and fill 37 bytes, so a diff can read them as machine words. The
#: layout is 64 bytes, one cache line, with no padding (so copies keep every
#: byte defined), and the compiled parser writes the same C struct (checked at
#: import). ``timer`` is the kernel's ``tr`` column (which timer is pending).
CONNECTION_DTYPE = np.dtype(
    [
        ("local_addr", np.uint8, (16,)),
        ("remote_addr", np.uint8, (16,)),
        ("local_port", np.uint16),
        ("remote_port", np.uint16),
        ("family", np.uint8),
        ("state", np.uint8),
        ("timer", np.uint16),
        ("tx_queue", np.uint32),
        ("rx_queue", np.uint32),
        ("uid", np.uint32),
        ("retransmits", np.uint32),
        ("inode", np.uint64),
    ],
    align=True,
)

#: Each field's byte offset in a row.
FIELD_OFFSETS: dict[str, int] = {name: spec[1] for name, spec in (CONNECTION_DTYPE.fields or {}).items()}

#: The kernel's TCP states as /proc prints them (include/net/tcp_states.h).
STATE_NAMES: dict[int, str] = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
}
STATE_CODES: dict[str, int] = {name: code for code, name in STATE_NAMES.items()}


def state_name(code: int) -> str:
    """The kernel's name of a state; an unknown code keeps its hex value."""
    return STATE_NAMES.get(code) or f"UNKNOWN_{code:02X}"

