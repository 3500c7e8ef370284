# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled parser of /proc/net/tcp and /proc/net/tcp6 text into connection rows.

It parses and nothing else: no I/O, no state kept between calls. The grammar it
accepts is the one written out in ``tcpfast/pureparse.py``; both parsers must
agree on every input, valid or not (the tests compare them).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memset

import numpy as np

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    /* Must match tcpfast.schema.CONNECTION_DTYPE (checked by row_layout()). */
    typedef struct {
        uint8_t local_addr[16];
        uint8_t remote_addr[16];
        uint16_t local_port;
        uint16_t remote_port;
        uint8_t family;
        uint8_t state;
        uint16_t timer;
        uint32_t tx_queue;
        uint32_t rx_queue;
        uint32_t uid;
        uint32_t retransmits;
        uint64_t inode;
    } tcpfast_row;
    static const size_t tcpfast_offsets[12] = {
        offsetof(tcpfast_row, local_addr), offsetof(tcpfast_row, remote_addr),
        offsetof(tcpfast_row, local_port), offsetof(tcpfast_row, remote_port),
        offsetof(tcpfast_row, family), offsetof(tcpfast_row, state),
        offsetof(tcpfast_row, timer), offsetof(tcpfast_row, tx_queue),
        offsetof(tcpfast_row, rx_queue), offsetof(tcpfast_row, uid),
        offsetof(tcpfast_row, retransmits), offsetof(tcpfast_row, inode)};
    """
    ctypedef struct tcpfast_row:
        uint8_t local_addr[16]
        uint8_t remote_addr[16]
        uint16_t local_port
        uint16_t remote_port
        uint8_t family
        uint8_t state
        uint16_t timer
        uint32_t tx_queue
        uint32_t rx_queue
        uint32_t uid
        uint32_t retransmits
        uint64_t inode
    const size_t tcpfast_offsets[12]

cdef enum:
    INVALID = 0xFF
    SPACE = 32
    COLON = 58
    NEWLINE = 10

cdef uint8_t HEX[256]   # hex digit value, or INVALID; filled once at import
cdef uint8_t DEC[256]   # decimal digit value, or INVALID

cdef void _fill_tables() noexcept:
    cdef int c
    for c in range(256):
        HEX[c] = INVALID
        DEC[c] = INVALID
    for c in range(10):
        HEX[48 + c] = c
        DEC[48 + c] = c
    for c in range(6):
        HEX[65 + c] = 10 + c
        HEX[97 + c] = 10 + c

_fill_tables()

_FIELDS = ("local_addr", "remote_addr", "local_port", "remote_port", "family",
           "state", "timer", "tx_queue", "rx_queue", "uid", "retransmits", "inode")


def row_layout():
    """(itemsize, {field: offset}) of the C row, to check against CONNECTION_DTYPE."""
    return sizeof(tcpfast_row), {name: tcpfast_offsets[i] for i, name in enumerate(_FIELDS)}


cdef inline bint _spaces(const uint8_t** p, const uint8_t* e) noexcept nogil:
    """One or more spaces."""
    cdef const uint8_t* q = p[0]
    if q >= e or q[0] != SPACE:
        return False
    while q < e and q[0] == SPACE:
        q += 1
    p[0] = q
    return True


cdef inline bint _hex_fixed(const uint8_t** p, const uint8_t* e, int digits,
                            uint32_t* value) noexcept nogil:
    """Exactly `digits` (<= 8) hex digits."""
    cdef const uint8_t* q = p[0]
    cdef uint32_t v = 0
    cdef uint8_t d
    cdef int i
    if e - q < digits:
        return False
    for i in range(digits):
        d = HEX[q[i]]
        if d == INVALID:
            return False
        v = (v << 4) | d
    p[0] = q + digits
    value[0] = v
    return True


cdef inline bint _hex_var(const uint8_t** p, const uint8_t* e, int max_digits,
                          uint64_t* value) noexcept nogil:
    """1 to `max_digits` (<= 16) hex digits; the caller checks what follows."""
    cdef const uint8_t* q = p[0]
    cdef const uint8_t* stop = q + max_digits
    cdef uint64_t v = 0
    cdef uint8_t d
    if stop > e:
        stop = e
    while q < stop:
        d = HEX[q[0]]
        if d == INVALID:
            break
        v = (v << 4) | d
        q += 1
    if q == p[0]:
        return False
    p[0] = q
    value[0] = v
    return True


cdef inline bint _dec_var(const uint8_t** p, const uint8_t* e, int max_digits,
                          uint64_t* value) noexcept nogil:
    """1 to `max_digits` (<= 20) decimal digits whose value fits in 64 bits."""
    cdef const uint8_t* q = p[0]
    cdef const uint8_t* stop = q + max_digits
    cdef uint64_t v = 0
    cdef uint8_t d
    if stop > e:
        stop = e
    while q < stop:
        d = DEC[q[0]]
        if d == INVALID:
            break
        if v > (0xFFFFFFFFFFFFFFFFULL - d) // 10:
            return False
        v = v * 10 + d
        q += 1
    if q == p[0]:
        return False
    p[0] = q
    value[0] = v
    return True


cdef inline bint _address(const uint8_t** p, const uint8_t* e, int words,
                          uint8_t* addr, uint16_t* port) noexcept nogil:
    """ADDR:PORT; each 32-bit word of ADDR is the host-order print of network bytes."""
    cdef uint32_t word
    cdef int i
    for i in range(words):
        if not _hex_fixed(p, e, 8, &word):
            return False
        memcpy(addr + 4 * i, &word, 4)
    if p[0] >= e or p[0][0] != COLON:
        return False
    p[0] += 1
    if not _hex_fixed(p, e, 4, &word):
        return False
    port[0] = <uint16_t>word
    return True


cdef int _parse_line(const uint8_t* p, const uint8_t* e, int words,
                     tcpfast_row* row) noexcept nogil:
    """1: a row was written; 0: blank or header line; -1: malformed."""
    cdef uint32_t v32
    cdef uint64_t v64
    cdef const uint8_t* start
    while p < e and p[0] == SPACE:
        p += 1
    if p == e:
        return 0
    if e - p >= 2 and p[0] == b's' and p[1] == b'l' and (e - p == 2 or p[2] == SPACE):
        return 0
    memset(row, 0, sizeof(tcpfast_row))
    start = p                                     # sl: decimal digits and a colon
    while p < e and DEC[p[0]] != INVALID:
        p += 1
    if p == start or p == e or p[0] != COLON:
        return -1
    p += 1
    if not _spaces(&p, e) or not _address(&p, e, words, row.local_addr, &row.local_port):
        return -1
    if not _spaces(&p, e) or not _address(&p, e, words, row.remote_addr, &row.remote_port):
        return -1
    if not _spaces(&p, e) or not _hex_fixed(&p, e, 2, &v32):
        return -1
    row.state = <uint8_t>v32
    if not _spaces(&p, e) or not _hex_var(&p, e, 8, &v64):              # tx_queue
        return -1
    row.tx_queue = <uint32_t>v64
    if p == e or p[0] != COLON:
        return -1
    p += 1
    if not _hex_var(&p, e, 8, &v64):                                     # rx_queue
        return -1
    row.rx_queue = <uint32_t>v64
    if not _spaces(&p, e) or not _hex_var(&p, e, 2, &v64):              # timer
        return -1
    row.timer = <uint16_t>v64
    if p == e or p[0] != COLON:
        return -1
    p += 1
    if not _hex_var(&p, e, 16, &v64):                                    # when
        return -1
    if not _spaces(&p, e) or not _hex_var(&p, e, 8, &v64):              # retransmits
        return -1
    row.retransmits = <uint32_t>v64
    if not _spaces(&p, e) or not _dec_var(&p, e, 10, &v64) or v64 > 0xFFFFFFFFULL:   # uid
        return -1
    row.uid = <uint32_t>v64
    if not _spaces(&p, e):
        return -1
    if p < e and p[0] == b'-':                                           # timeout
        p += 1
    if not _dec_var(&p, e, 10, &v64):
        return -1
    if not _spaces(&p, e) or not _dec_var(&p, e, 20, &v64):             # inode
        return -1
    row.inode = v64
    if p < e and p[0] != SPACE:
        return -1
    return 1


def parse_into(const uint8_t[::1] data, int family, object out, Py_ssize_t start,
               bint final):
    """Parse the lines of `data` into `out[start:]`; see pureparse.parse_into."""
    cdef int words
    cdef Py_ssize_t length = data.shape[0]
    cdef Py_ssize_t capacity, lines, n = start, malformed = 0
    cdef const uint8_t* base
    cdef const uint8_t* p
    cdef const uint8_t* end
    cdef const uint8_t* nl
    cdef const uint8_t* line_end
    cdef tcpfast_row* rows
    cdef uint8_t[::1] out_bytes
    cdef int result

    if family == 4:
        words = 1
    elif family == 6:
        words = 4
    else:
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    out_bytes = out.view(np.uint8)
    capacity = out.shape[0]
    if length == 0:
        return start, 0, 0
    base = &data[0]
    end = base + length
    if not final:                                 # keep a partial last line for later
        while end > base and (end - 1)[0] != NEWLINE:
            end -= 1
    lines = 0
    p = base
    while p < end:
        nl = <const uint8_t*>memchr(p, NEWLINE, end - p)
        lines += 1
        p = end if nl == NULL else nl + 1
    if start < 0 or capacity - start < lines:
        raise ValueError(f"out has room for {capacity - start} rows, data has {lines} lines")
    if lines == 0:
        return start, end - base, 0
    rows = <tcpfast_row*>&out_bytes[0]
    p = base
    with nogil:
        while p < end:
            nl = <const uint8_t*>memchr(p, NEWLINE, end - p)
            line_end = end if nl == NULL else nl
            result = _parse_line(p, line_end, words, &rows[n])
            if result > 0:
                rows[n].family = <uint8_t>family
                n += 1
            elif result < 0:
                malformed += 1
            p = line_end + 1 if nl != NULL else end
    return n, end - base, malformed
