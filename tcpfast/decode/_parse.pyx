# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled parser of /proc/net/tcp and /proc/net/tcp6 text into connection rows.

It parses and nothing else: no I/O, no state kept between calls. The grammar it
accepts is the one written out in ``tcpfast/decode/pureparse.py``; both parsers must
agree on every input, valid or not (the tests compare them).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memset

from tcpfast.row cimport Row, row_layout_of, row_pointer

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    /* Two hex digits c0 c1, at index c0 | c1 << 8, to their value; 0xFFFF when
       either is not a hex digit. Filled once at import. */
    static uint16_t tcpfast_hex_pairs[65536];
    static void tcpfast_fill_hex_pairs(const uint8_t *hex) {
        for (int i = 0; i < 65536; i++) {
            uint8_t high = hex[i & 0xFF], low = hex[i >> 8];
            tcpfast_hex_pairs[i] = (high > 15 || low > 15) ? 0xFFFF : (uint16_t)(high << 4 | low);
        }
    }
    /* Eight hex digits at s (s[0] most significant) to *value: four lookups in
       a 128 KiB table of digit pairs; 0 if any byte is not a hex digit. Fewest
       instructions; the lookups cost cache, so addresses use the SWAR form. */
    static inline __attribute__((always_inline)) int tcpfast_hex8(const uint8_t *s, uint32_t *value) {
        uint16_t a = tcpfast_hex_pairs[s[0] | s[1] << 8], b = tcpfast_hex_pairs[s[2] | s[3] << 8],
                 c = tcpfast_hex_pairs[s[4] | s[5] << 8], d = tcpfast_hex_pairs[s[6] | s[7] << 8];
        if ((a | b | c | d) & 0xFF00) return 0;
        *value = (uint32_t)a << 24 | (uint32_t)b << 16 | (uint32_t)c << 8 | d;
        return 1;
    }
    /* Two and four hex digits the same way. */
    static inline __attribute__((always_inline)) int tcpfast_hex2(const uint8_t *s, uint32_t *value) {
        uint16_t a = tcpfast_hex_pairs[s[0] | s[1] << 8];
        if (a & 0xFF00) return 0;
        *value = a;
        return 1;
    }
    static inline __attribute__((always_inline)) int tcpfast_hex4(const uint8_t *s, uint32_t *value) {
        uint16_t a = tcpfast_hex_pairs[s[0] | s[1] << 8], b = tcpfast_hex_pairs[s[2] | s[3] << 8];
        if ((a | b) & 0xFF00) return 0;
        *value = (uint32_t)a << 8 | b;
        return 1;
    }
    /* The same as tcpfast_hex8 without memory lookups, with SWAR:
       one 64-bit load, range checks on all bytes at once; 0 if any byte is
       not a hex digit. Bytes are ASCII < 0x80 (checked), so the per-byte
       additions below never carry into the next byte. */
    static inline __attribute__((always_inline)) int tcpfast_hex8_swar(const uint8_t *s, uint32_t *value) {
    #if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        return tcpfast_hex8(s, value);            /* the load below assumes little-endian */
    #endif
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t x, lower, digit, alpha, nibbles, pairs, quads;
        memcpy(&x, s, 8);
        if (x & highs) return 0;
        lower = x | (0x20 * ones);
        digit = (x + (0x80 - '0') * ones) & ~(x + (0x7F - '9') * ones) & highs;
        alpha = (lower + (0x80 - 'a') * ones) & ~(lower + (0x7F - 'f') * ones) & highs;
        if ((digit | alpha) != highs) return 0;
        nibbles = (x & (0x0F * ones)) + (alpha >> 7) * 9;
        pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00FF00FF00FF00FFULL;
        quads = (pairs | (pairs >> 8)) & 0x0000FFFF0000FFFFULL;
        *value = __builtin_bswap32((uint32_t)(quads | (quads >> 16)));
        return 1;
    }
    """
    bint tcpfast_hex8(const uint8_t* s, uint32_t* value) nogil
    bint tcpfast_hex8_swar(const uint8_t* s, uint32_t* value) nogil
    bint tcpfast_hex2(const uint8_t* s, uint32_t* value) nogil
    bint tcpfast_hex4(const uint8_t* s, uint32_t* value) nogil
    void tcpfast_fill_hex_pairs(const uint8_t* hex)

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
tcpfast_fill_hex_pairs(HEX)


def row_layout():
    """(itemsize, {field: offset}) of the C row, to check against CONNECTION_DTYPE."""
    return row_layout_of()


cdef inline bint _spaces(const uint8_t** p, const uint8_t* e) noexcept nogil:
    """One or more spaces."""
    cdef const uint8_t* q = p[0]
    if q >= e or q[0] != SPACE:
        return False
    q += 1
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
    if digits == 8:
        if not tcpfast_hex8(q, value):
            return False
        p[0] = q + 8
        return True
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
    cdef uint32_t eight
    cdef uint8_t d
    if stop > e:
        stop = e
    if stop - q >= 8 and tcpfast_hex8(q, &eight):       # the kernel's usual %08X
        v = eight
        q += 8
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
        if v >= 1844674407370955161ULL and (v > 1844674407370955161ULL or d > 5):
            return False                          # 10 * v + d would pass 2**64 - 1
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
    if words == 1:
        memset(addr + 4, 0, 12)
    if p[0] >= e or p[0][0] != COLON:
        return False
    p[0] += 1
    if not _hex_fixed(p, e, 4, &word):
        return False
    port[0] = <uint16_t>word
    return True


cdef inline bint _colon(const uint8_t** p, const uint8_t* e) noexcept nogil:
    if p[0] >= e or p[0][0] != COLON:
        return False
    p[0] += 1
    return True


cdef inline bint _line_ends(const uint8_t* p, const uint8_t* e) noexcept nogil:
    return p == e or p[0] == NEWLINE


cdef inline bint _canonical(const uint8_t** p, const uint8_t* e, int words,
                            Row* row) noexcept nogil:
    """LOCAL:PORT .. RETR in the kernel's own layout (one space between fields,
    ``%08X`` widths), checked and decoded at fixed offsets: the usual case,
    without the general path's field-by-field scanning. False when the line
    is laid out otherwise; the general path then reads it from the start."""
    cdef const uint8_t* q = p[0]
    cdef int a = 8 * words                      # address digits
    cdef int length = 2 * a + 53
    cdef uint32_t word, value
    cdef int i
    if e - q <= length:
        return False
    if not (q[a] == COLON and q[a + 5] == SPACE and q[2 * a + 6] == COLON
            and q[2 * a + 11] == SPACE and q[2 * a + 14] == SPACE and q[2 * a + 23] == COLON
            and q[2 * a + 32] == SPACE and q[2 * a + 35] == COLON and q[2 * a + 44] == SPACE
            and q[length] == SPACE):
        return False
    for i in range(words):
        if not tcpfast_hex8_swar(q + 8 * i, &word):
            return False
        memcpy(row.local_addr + 4 * i, &word, 4)
        if not tcpfast_hex8_swar(q + a + 6 + 8 * i, &word):
            return False
        memcpy(row.remote_addr + 4 * i, &word, 4)
    if words == 1:
        memset(row.local_addr + 4, 0, 12)
        memset(row.remote_addr + 4, 0, 12)
    if not tcpfast_hex4(q + a + 1, &value):
        return False
    row.local_port = <uint16_t>value
    if not tcpfast_hex4(q + 2 * a + 7, &value):
        return False
    row.remote_port = <uint16_t>value
    if not tcpfast_hex2(q + 2 * a + 12, &value):
        return False
    row.state = <uint8_t>value
    if not tcpfast_hex8(q + 2 * a + 15, &row.tx_queue) or not tcpfast_hex8(q + 2 * a + 24, &row.rx_queue):
        return False
    if not tcpfast_hex2(q + 2 * a + 33, &value):
        return False
    row.timer = <uint16_t>value
    if not tcpfast_hex8(q + 2 * a + 36, &value) or not tcpfast_hex8(q + 2 * a + 45, &row.retransmits):
        return False
    p[0] = q + length
    return True


cdef inline bint _fields(const uint8_t** p, const uint8_t* e, int words,
                         Row* row) noexcept nogil:
    """Everything after ``sl:``; writes every field of row (there is no padding)."""
    cdef uint32_t v32
    cdef uint64_t v64
    if not _spaces(p, e):
        return False
    if _canonical(p, e, words, row):
        return _numbers(p, e, row)
    if not _address(p, e, words, row.local_addr, &row.local_port):
        return False
    if not _spaces(p, e) or not _address(p, e, words, row.remote_addr, &row.remote_port):
        return False
    if not _spaces(p, e) or not _hex_fixed(p, e, 2, &v32):              # state
        return False
    row.state = <uint8_t>v32
    if not _spaces(p, e) or not _hex_var(p, e, 8, &v64):                # tx_queue
        return False
    row.tx_queue = <uint32_t>v64
    if not _colon(p, e) or not _hex_var(p, e, 8, &v64):                 # rx_queue
        return False
    row.rx_queue = <uint32_t>v64
    if not _spaces(p, e) or not _hex_var(p, e, 2, &v64):                # timer
        return False
    row.timer = <uint16_t>v64
    if not _colon(p, e) or not _hex_var(p, e, 16, &v64):                # when
        return False
    if not _spaces(p, e) or not _hex_var(p, e, 8, &v64):                # retransmits
        return False
    row.retransmits = <uint32_t>v64
    return _numbers(p, e, row)


cdef inline bint _numbers(const uint8_t** p, const uint8_t* e, Row* row) noexcept nogil:
    """UID TIMEOUT INODE, and the end of the fields we read."""
    cdef uint64_t v64
    if not _spaces(p, e) or not _dec_var(p, e, 10, &v64) or v64 > 0xFFFFFFFFULL:   # uid
        return False
    row.uid = <uint32_t>v64
    if not _spaces(p, e):                                                # timeout
        return False
    if p[0] < e and p[0][0] == b'-':
        p[0] += 1
    if not _dec_var(p, e, 10, &v64):
        return False
    if not _spaces(p, e) or not _dec_var(p, e, 20, &v64):               # inode
        return False
    row.inode = v64
    return _line_ends(p[0], e) or p[0][0] == SPACE


cdef int _parse_line(const uint8_t** start, const uint8_t* e, int words,
                     Row* row) noexcept nogil:
    """Parse the line at *start, which ends at a newline or at e.

    1: row was written; 0: a blank or header line; -1: malformed. *start is
    left where parsing stopped, never past the line's newline: no field's
    characters include the newline, so every field stops there.
    """
    cdef const uint8_t* p = start[0]
    cdef const uint8_t* digits
    cdef int result = -1
    while p < e and p[0] == SPACE:
        p += 1
    if _line_ends(p, e):
        result = 0
    elif e - p >= 2 and p[0] == b's' and p[1] == b'l' and (
            _line_ends(p + 2, e) or p[2] == SPACE):
        result = 0
    else:
        digits = p                                                       # sl
        while p < e and DEC[p[0]] != INVALID:
            p += 1
        if p != digits and _colon(&p, e) and _fields(&p, e, words, row):
            row.family = 4 if words == 1 else 6
            row.netns = 0
            row.cookie = 0
            result = 1
    start[0] = p
    return result


def parse_into(const uint8_t[::1] data, int family, object out, Py_ssize_t start,
               bint final):
    """Parse the lines of `data` into `out[start:]`; see pureparse.parse_into."""
    cdef int words
    cdef Py_ssize_t length = data.shape[0]
    cdef Py_ssize_t capacity
    cdef Py_ssize_t n = start, malformed = 0
    cdef const uint8_t* base
    cdef const uint8_t* p
    cdef const uint8_t* q
    cdef const uint8_t* end
    cdef const uint8_t* newline
    cdef Row* rows
    cdef Row spare                        # parses the row that finds out full
    cdef int result

    if family == 4:
        words = 1
    elif family == 6:
        words = 4
    else:
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    rows = row_pointer(out, True, "out")
    capacity = out.shape[0]
    if not 0 <= start <= capacity:
        raise ValueError(f"start {start} is outside out (0..{capacity})")
    if length == 0:
        return start, 0, 0
    base = &data[0]
    end = base + length
    if not final:                                 # a partial last line waits for more data
        while end > base and (end - 1)[0] != NEWLINE:
            end -= 1
    p = base
    with nogil:
        while p < end:
            q = p
            result = _parse_line(&q, end, words, &rows[n] if n < capacity else &spare)
            if result > 0:
                if n == capacity:
                    break                         # out is full: this line is left unread
                n += 1
            elif result < 0:
                malformed += 1
            newline = <const uint8_t*>memchr(q, NEWLINE, end - q)
            p = end if newline == NULL else newline + 1
    return n, p - base, malformed
