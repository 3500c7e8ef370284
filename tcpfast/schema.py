"""The one definition of a parsed connection row, and the kernel's TCP state names."""

from __future__ import annotations

import numpy as np

#: One row per socket listed in /proc/net/tcp or /proc/net/tcp6 (or dumped by sock_diag).
#: Addresses are 16 bytes in network order; an IPv4 address fills the first 4
#: bytes and the rest are zero. The connection key comes first, as 64-bit
#: words a diff reads whole: the addresses (words 0-3), the ports and family
#: (word 4, where state and timer are masked out) and ``netns`` (word 5), the
#: network namespace that holds the socket (0 for rows of one namespace whose
#: source did not name it: a key is per namespace). ``cookie`` is the kernel's
#: socket cookie (sock_diag gives it, /proc does not: 0), which ties a destroyed
#: socket's event to the row a dump listed. The layout is 80 bytes with no
#: padding (copies keep every byte defined); the compiled modules use the same
#: C struct (``tcpfast/row.pxd``, checked at import). ``timer`` is the kernel's
#: ``tr`` column (which timer is pending).
CONNECTION_DTYPE = np.dtype(
    [
        ("local_addr", np.uint8, (16,)),
        ("remote_addr", np.uint8, (16,)),
        ("local_port", np.uint16),
        ("remote_port", np.uint16),
        ("family", np.uint8),
        ("state", np.uint8),
        ("timer", np.uint16),
        ("netns", np.uint64),
        ("tx_queue", np.uint32),
        ("rx_queue", np.uint32),
        ("uid", np.uint32),
        ("retransmits", np.uint32),
        ("inode", np.uint64),
        ("cookie", np.uint64),
    ],
    align=True,
)


def check_rows(rows: object, name: str, *, writable: bool = False) -> None:
    """Raise unless ``rows`` is a 1-d, C-contiguous array of CONNECTION_DTYPE (and
    writable, when asked): what the compiled modules check before touching memory,
    so that both implementations refuse the same inputs with the same words."""
    dtype = getattr(rows, "dtype", None)
    if not isinstance(rows, np.ndarray) or dtype != CONNECTION_DTYPE:
        raise TypeError(f"{name} must be a numpy array of CONNECTION_DTYPE, not "
                        f"{dtype if dtype is not None else type(rows).__name__}")
    if rows.ndim != 1 or not rows.flags.c_contiguous:
        raise ValueError(f"{name} must be a 1-d C-contiguous array of rows")
    if writable and not rows.flags.writeable:
        raise ValueError(f"{name} is read-only")


_ROW_WORDS = CONNECTION_DTYPE.itemsize // 8


def _words(rows: np.ndarray) -> np.ndarray:
    return rows.view(np.uint64).reshape(-1, _ROW_WORDS)


def take_rows(rows: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``rows[which]`` (a mask, or indexes), copied as 64-bit words: numpy copies a
    structured dtype field by field, 5-20x slower, and a poll of 10^6 rows takes
    several such selections."""
    which = np.asarray(which)
    if (rows.dtype != CONNECTION_DTYPE or rows.ndim != 1 or not rows.flags.c_contiguous
            or which.ndim != 1 or (which.dtype == bool and len(which) != len(rows))):
        return rows[which]                   # numpy's checks and errors
    if which.dtype == bool:
        picked = np.compress(which, _words(rows), axis=0)
    else:
        picked = np.take(_words(rows), which, axis=0)
    return picked.view(CONNECTION_DTYPE).reshape(-1)


#: Rows moved at once by compact_rows: its only temporary is a chunk of this many.
_COMPACT_ROWS = 1 << 16


def compact_rows(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``rows[keep]`` (a mask), moved to the front of ``rows`` itself a chunk at a time,
    as a view of it: a selection that keeps nearly every row, with no second copy of
    them. ``rows``: contiguous, writable rows of CONNECTION_DTYPE; what follows the
    view is left as it was."""
    check_rows(rows, "rows", writable=True)
    if keep.dtype != bool or keep.shape != rows.shape:
        raise ValueError(f"keep must be a mask of {len(rows)} rows")
    words = _words(rows)
    end = 0
    for start in range(0, len(rows), _COMPACT_ROWS):
        part = slice(start, start + _COMPACT_ROWS)
        kept = np.compress(keep[part], words[part], axis=0)      # before anything moves there
        words[end:end + len(kept)] = kept
        end += len(kept)
    return rows[:end]


def concatenate_rows(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` of contiguous arrays of rows, copied as 64-bit words."""
    if len(parts) == 1:
        return parts[0]
    if any(part.dtype != CONNECTION_DTYPE or not part.flags.c_contiguous for part in parts):
        return np.concatenate(parts)
    return np.concatenate([_words(part) for part in parts]).view(CONNECTION_DTYPE).reshape(-1)


#: Each field's byte offset in a row.
FIELD_OFFSETS: dict[str, int] = {name: spec[1] for name, spec in (CONNECTION_DTYPE.fields or {}).items()}

#: What a socket carried, from its last ``struct tcp_info`` (sock_diag's INET_DIAG_INFO,
#: which the kernel puts in every destroy message): one per closed event. The
#: kernel's counters as they are: ``bytes_sent`` (tcpi_bytes_acked) counts the
#: opener's SYN and an acknowledged FIN as a byte each, ``bytes_received``
#: (tcpi_bytes_received) the peer's FIN when it arrived (the rule:
#: tests/test_close_info.py). ``data_bytes_sent`` (tcpi_bytes_sent minus
#: tcpi_bytes_retrans, kernels from 4.19) is the payload sent, each byte counted
#: once, no SYN or FIN: what the application wrote, for a connection closed by FIN.
#: ``known`` has a KNOWN_* bit for each field the kernel's struct was long enough
#: to hold (older kernels send shorter ones); the others are 0 and print as null.
CLOSE_INFO_DTYPE = np.dtype(
    [
        ("bytes_sent", np.uint64),        # tcpi_bytes_acked
        ("bytes_received", np.uint64),    # tcpi_bytes_received
        ("data_bytes_sent", np.uint64),   # tcpi_bytes_sent - tcpi_bytes_retrans
        ("segments_sent", np.uint32),     # tcpi_segs_out
        ("segments_received", np.uint32), # tcpi_segs_in
        ("retransmits", np.uint32),       # tcpi_total_retrans
        ("rtt_us", np.uint32),            # tcpi_rtt: smoothed round-trip time, microseconds
        ("min_rtt_us", np.uint32),        # tcpi_min_rtt: 2**32 - 1 for a connect never answered
        ("state", np.uint8),              # tcpi_state
        ("_reserved", np.uint8),          # explicit, so that copies keep every byte defined
        ("known", np.uint16),
    ],
    align=True,
)
KNOWN_BYTES_SENT, KNOWN_BYTES_RECEIVED, KNOWN_SEGMENTS_SENT = 0x01, 0x02, 0x04
KNOWN_SEGMENTS_RECEIVED, KNOWN_RETRANSMITS, KNOWN_RTT, KNOWN_STATE = 0x08, 0x10, 0x20, 0x40
KNOWN_DATA_BYTES_SENT, KNOWN_MIN_RTT = 0x80, 0x100
#: Each field's byte offset in a close info record.
CLOSE_INFO_OFFSETS: dict[str, int] = {name: spec[1] for name, spec
                                      in (CLOSE_INFO_DTYPE.fields or {}).items()}


def check_close_info(info: object, rows: int) -> None:
    """Raise unless ``info`` is a writable 1-d, C-contiguous array of CLOSE_INFO_DTYPE
    with room for ``rows`` records: what a decoder checks before writing into it."""
    dtype = getattr(info, "dtype", None)
    if not isinstance(info, np.ndarray) or dtype != CLOSE_INFO_DTYPE:
        raise TypeError(f"info must be a numpy array of CLOSE_INFO_DTYPE, not "
                        f"{dtype if dtype is not None else type(info).__name__}")
    if info.ndim != 1 or not info.flags.c_contiguous:
        raise ValueError("info must be a 1-d C-contiguous array of close info records")
    if not info.flags.writeable:
        raise ValueError("info is read-only")
    if len(info) < rows:
        raise ValueError(f"info has {len(info)} records, fewer than out's {rows} rows")

#: ``timer`` of a timewait entry's row (TIME_WAIT, or FIN_WAIT2 as its substate), in
#: /proc's ``tr`` column and sock_diag's ``idiag_timer`` alike: the socket itself is gone.
TIMEWAIT_TIMER = 3

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

