# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled decoder of NETLINK_SOCK_DIAG replies into connection rows.

It decodes and nothing else: no I/O, no state kept between calls, no Python
object per row. What it accepts is written out in ``netlink_pure.py``; both
decoders must agree on every input, valid or not (the tests compare them).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from tcpfast.row cimport CloseInfo, Row, close_info_layout_of, row_layout_of, row_pointer

from tcpfast.schema import check_close_info

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
    NLA_HEADER_BYTES = 4
    NLA_TYPE_MASK = 0x3FFF
    INET_DIAG_INFO = 2
    KNOWN_BYTES_SENT = 0x01
    KNOWN_BYTES_RECEIVED = 0x02
    KNOWN_SEGMENTS_SENT = 0x04
    KNOWN_SEGMENTS_RECEIVED = 0x08
    KNOWN_RETRANSMITS = 0x10
    KNOWN_RTT = 0x20
    KNOWN_STATE = 0x40
    KNOWN_DATA_BYTES_SENT = 0x80
    KNOWN_MIN_RTT = 0x100


def row_layout():
    """(itemsize, {field: offset}) of the C row, to check against CONNECTION_DTYPE."""
    return row_layout_of()


def close_info_layout():
    """(itemsize, {field: offset}) of the C close info, to check against CLOSE_INFO_DTYPE."""
    return close_info_layout_of()


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t value
    memcpy(&value, p, 4)
    return value


cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    cdef uint16_t value
    memcpy(&value, p, 2)
    return value


cdef inline uint64_t _u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t value
    memcpy(&value, p, 8)
    return value


cdef inline bint _find_info(const uint8_t* a, Py_ssize_t left, const uint8_t** value,
                            Py_ssize_t* length) noexcept nogil:
    """The last INET_DIAG_INFO among the attributes at ``a`` (``left`` bytes) before any
    fault, into value/length (NULL: none); whether there was a fault."""
    cdef Py_ssize_t size, step
    value[0] = NULL
    length[0] = 0
    while left > 0:
        if left < NLA_HEADER_BYTES:
            return True
        size = _u16(a)
        if size < NLA_HEADER_BYTES or size > left:
            return True
        if (_u16(a + 2) & NLA_TYPE_MASK) == INET_DIAG_INFO:
            value[0] = a + NLA_HEADER_BYTES
            length[0] = size - NLA_HEADER_BYTES
        step = (size + 3) & ~(<Py_ssize_t>3)
        if step > left:
            step = left
        a += step
        left -= step
    return False


cdef inline void _decode_info(const uint8_t* v, Py_ssize_t length, CloseInfo* info) noexcept nogil:
    """A struct tcp_info of ``length`` bytes (v NULL: none) to what the socket carried."""
    cdef uint64_t sent, retransmitted
    memset(info, 0, sizeof(CloseInfo))
    if v == NULL:
        return
    if length >= 1:
        info.state = v[0]
        info.known |= KNOWN_STATE
    if length >= 72:
        info.rtt_us = _u32(v + 68)
        info.known |= KNOWN_RTT
    if length >= 104:
        info.retransmits = _u32(v + 100)
        info.known |= KNOWN_RETRANSMITS
    if length >= 128:
        info.bytes_sent = _u64(v + 120)
        info.known |= KNOWN_BYTES_SENT
    if length >= 136:
        info.bytes_received = _u64(v + 128)
        info.known |= KNOWN_BYTES_RECEIVED
    if length >= 140:
        info.segments_sent = _u32(v + 136)
        info.known |= KNOWN_SEGMENTS_SENT
    if length >= 144:
        info.segments_received = _u32(v + 140)
        info.known |= KNOWN_SEGMENTS_RECEIVED
    if length >= 152:
        info.min_rtt_us = _u32(v + 148)
        info.known |= KNOWN_MIN_RTT
    if length >= 216:
        sent = _u64(v + 200)
        retransmitted = _u64(v + 208)
        if retransmitted <= sent:
            info.data_bytes_sent = sent - retransmitted
            info.known |= KNOWN_DATA_BYTES_SENT


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
                uint16_t msg_type, object info=None):
    """Decode the messages in `data` into `out[start:]` (and `info[start:]`); see
    netlink_pure.decode_into."""
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
    cdef CloseInfo* infos = NULL
    cdef const uint8_t* value
    cdef Py_ssize_t value_length
    cdef uint8_t[::1] info_bytes

    rows = row_pointer(out, True, "out")
    capacity = out.shape[0]
    if info is not None:
        check_close_info(info, capacity)
        if info.shape[0]:
            info_bytes = info.view("u1")
            infos = <CloseInfo*>&info_bytes[0]
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
                        if infos != NULL:
                            malformed += _find_info(m + DIAG_MSG_BYTES,
                                                    <Py_ssize_t>size - HEADER_BYTES - DIAG_MSG_BYTES,
                                                    &value, &value_length)
                            _decode_info(value, value_length, &infos[n])
                        n += 1
                        if flags & NLM_F_DUMP_INTR:
                            status |= STATUS_INTERRUPTED
            pos += step
    return n, pos, malformed, status, error
