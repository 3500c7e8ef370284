# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled decoder of NETLINK_SOCK_DIAG replies into connection rows.

It decodes and nothing else: no I/O, no state kept between calls, no Python
object per row. What it accepts is written out in ``netlink_pure.py``; both
decoders must agree on every input, valid or not (the tests compare them).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from tcpfast.row cimport Row, row_layout_of, row_pointer

cdef enum:
    HEADER_BYTES = 16
    DIAG_MSG_BYTES = 72
    NLMSG_ERROR = 2
    NLMSG_DONE = 3
    NLM_F_DUMP_INTR = 0x10
    AF_INET = 2
    AF_INET6 = 10
    TCP_LISTEN = 10
    MAX_STATE = 11
    EPROTO = 71
    STATUS_DONE = 1
    STATUS_INTERRUPTED = 2


def row_layout():
    """(itemsize, {field: offset}) of the C row, to check against CONNECTION_DTYPE."""
    return row_layout_of()


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t value
    memcpy(&value, p, 4)
    return value


cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    cdef uint16_t value
    memcpy(&value, p, 2)
    return value


cdef inline void _decode_row(const uint8_t* m, Row* row) noexcept nogil:
    """One inet_diag_msg (checked: 72 bytes, family and state valid) to a row."""
    row.family = 4 if m[0] == AF_INET else 6
    row.state = m[1]
    row.timer = m[2]
    row.retransmits = m[3]
    row.local_port = <uint16_t>(m[4] << 8 | m[5])
    row.remote_port = <uint16_t>(m[6] << 8 | m[7])
    if row.family == 4:
        memcpy(row.local_addr, m + 8, 4)
        memset(row.local_addr + 4, 0, 12)
        memcpy(row.remote_addr, m + 24, 4)
        memset(row.remote_addr + 4, 0, 12)
    else:
        memcpy(row.local_addr, m + 8, 16)
        memcpy(row.remote_addr, m + 24, 16)
    row.rx_queue = _u32(m + 56)
    row.tx_queue = 0 if m[1] == TCP_LISTEN else _u32(m + 60)
    row.uid = _u32(m + 64)
    row.inode = _u32(m + 68)
    row.netns = 0
    row.cookie = <uint64_t>_u32(m + 44) | (<uint64_t>_u32(m + 48)) << 32


def decode_into(const uint8_t[::1] data, object out, Py_ssize_t start, uint32_t seq,
                uint16_t msg_type):
    """Decode the messages in `data` into `out[start:]`; see netlink_pure.decode_into."""
    cdef Py_ssize_t length = data.shape[0]
    cdef Py_ssize_t capacity
    cdef Py_ssize_t n = start, pos = 0, malformed = 0, step
    cdef int status = 0
    cdef int64_t error = 0
    cdef int32_t code
    cdef uint32_t size
    cdef uint16_t kind, flags
    cdef const uint8_t* base
    cdef const uint8_t* h
    cdef const uint8_t* m
    cdef Row* rows

    rows = row_pointer(out, True, "out")
    capacity = out.shape[0]
    if not 0 <= start <= capacity:
        raise ValueError(f"start {start} is outside out (0..{capacity})")
    if length == 0:
        return start, 0, 0, 0, 0
    base = &data[0]
    with nogil:
        while pos < length:
            if length - pos < HEADER_BYTES:
                malformed += 1
                pos = length
                break
            h = base + pos
            size = _u32(h)
            if size < HEADER_BYTES or size > <uint64_t>(length - pos):
                malformed += 1
                pos = length
                break
            kind = _u16(h + 4)
            flags = _u16(h + 6)
            step = (<Py_ssize_t>size + 3) & ~(<Py_ssize_t>3)
            if step > length - pos:
                step = length - pos
            if _u32(h + 8) == seq:
                if kind == NLMSG_DONE:
                    if size >= HEADER_BYTES + 4:
                        memcpy(&code, h + HEADER_BYTES, 4)
                        if code < 0:
                            error = -(<int64_t>code)
                    status |= STATUS_DONE
                    pos += step
                    break
                if kind == NLMSG_ERROR:
                    if size >= HEADER_BYTES + 4:
                        memcpy(&code, h + HEADER_BYTES, 4)
                    else:
                        code = -EPROTO
                    if code != 0:
                        error = -(<int64_t>code) if code < 0 else code
                        status |= STATUS_DONE
                        pos += step
                        break
                elif kind == msg_type:
                    m = h + HEADER_BYTES
                    if (size - HEADER_BYTES < DIAG_MSG_BYTES or (m[0] != AF_INET and m[0] != AF_INET6)
                            or m[1] < 1 or m[1] > MAX_STATE):
                        malformed += 1
                    else:
                        if n == capacity:
                            break                     # out is full: this message is left
                        _decode_row(m, &rows[n])
                        n += 1
                        if flags & NLM_F_DUMP_INTR:
                            status |= STATUS_INTERRUPTED
            pos += step
    return n, pos, malformed, status, error
