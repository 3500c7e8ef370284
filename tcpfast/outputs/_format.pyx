# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled formatter of output lines: an event batch's text or JSON lines, as bytes.

It writes what ``tcpfast/outputs/report.py`` (the reference) writes, byte for byte
(the tests compare the two on generated events), into a buffer the caller owns
and reuses: fresh memory costs a page fault per 4 KiB on first touch, more than
formatting the lines in it. No Python object is made per row, except for what
owners carry (each distinct comm string is encoded once a call); the namespaces'
holders are encoded once a call. No I/O, no state kept between calls.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.math cimport fabs, isfinite, isnan
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy, memset

from tcpfast.row cimport CloseInfo, Row, close_info_layout_of, row_layout_of, row_pointer

import json

import numpy as np

from tcpfast.schema import (
    CLOSE_INFO_DTYPE,
    KNOWN_BYTES_RECEIVED,
    KNOWN_BYTES_SENT,
    KNOWN_RETRANSMITS,
    KNOWN_RTT,
    KNOWN_SEGMENTS_RECEIVED,
    KNOWN_SEGMENTS_SENT,
    state_name,
)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static const char tcpfast_pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    /* v in decimal at p; the end of what was written. (Counted first, then written
       from the end: no copy of a length only known at run time.) */
    static inline char *tcpfast_u64(char *p, uint64_t v) {
        int length = 1;
        for (uint64_t bound = 10; length < 20 && v >= bound; bound *= 10) length++;
        char *end = p + length, *t = end;
        while (v >= 100) {
            t -= 2;
            memcpy(t, tcpfast_pairs + 2 * (v % 100), 2);
            v /= 100;
        }
        if (v >= 10) {
            t -= 2;
            memcpy(t, tcpfast_pairs + 2 * v, 2);
        } else {
            *--t = (char)('0' + v);
        }
        return end;
    }
    static inline char *tcpfast_i64(char *p, int64_t v) {
        if (v < 0) {
            *p++ = '-';
            return tcpfast_u64(p, (uint64_t)0 - (uint64_t)v);
        }
        return tcpfast_u64(p, (uint64_t)v);
    }
    /* a.b.c.d, as inet_ntop prints it. */
    static inline char *tcpfast_ipv4(char *p, const uint8_t *a) {
        for (int i = 0; i < 4; i++) {
            unsigned v = a[i];
            if (i) *p++ = '.';
            if (v >= 100) {
                *p++ = (char)('0' + v / 100);
                memcpy(p, tcpfast_pairs + 2 * (v % 100), 2);
                p += 2;
            } else if (v >= 10) {
                memcpy(p, tcpfast_pairs + 2 * v, 2);
                p += 2;
            } else {
                *p++ = (char)('0' + v);
            }
        }
        return p;
    }
    /* An IPv6 address as glibc's inet_ntop prints it (resolv/inet_ntop.c): RFC 5952,
       lower-case hex, the longest run of two or more zero words as "::" (the first of
       equal runs), and ::a.b.c.d and ::ffff:a.b.c.d with the IPv4 address dotted. */
    static inline char *tcpfast_ipv6(char *p, const uint8_t *a) {
        static const char hex[] = "0123456789abcdef";
        unsigned words[8];
        int best = -1, best_length = 0, run = -1, run_length = 0;
        for (int i = 0; i < 8; i++) {
            words[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
            if (words[i] == 0) {
                if (run < 0) { run = i; run_length = 1; } else run_length++;
            } else if (run >= 0) {
                if (best < 0 || run_length > best_length) { best = run; best_length = run_length; }
                run = -1;
            }
        }
        if (run >= 0 && (best < 0 || run_length > best_length)) { best = run; best_length = run_length; }
        if (best >= 0 && best_length < 2) best = -1;
        for (int i = 0; i < 8; i++) {
            if (best >= 0 && i >= best && i < best + best_length) {
                if (i == best) *p++ = ':';
                continue;
            }
            if (i) *p++ = ':';
            if (i == 6 && best == 0 && (best_length == 6 || (best_length == 5 && words[5] == 0xffff)))
                return tcpfast_ipv4(p, a + 12);
            unsigned w = words[i];
            if (w >= 0x1000) *p++ = hex[w >> 12];
            if (w >= 0x100) *p++ = hex[(w >> 8) & 15];
            if (w >= 0x10) *p++ = hex[(w >> 4) & 15];
            *p++ = hex[w & 15];
        }
        if (best >= 0 && best + best_length == 8) *p++ = ':';
        return p;
    }
    /* The first and last second datetime can hold (years 1 to 9999). */
    static const int64_t tcpfast_first_second = -62135596800LL, tcpfast_last_second = 253402300799LL;
    /* YYYY-MM-DD<sep>HH:MM:SS+00:00 (25 bytes), as datetime.isoformat prints a UTC time
       of that second; the days to a date by H. Hinnant's civil_from_days. */
    static inline char *tcpfast_stamp(char *p, int64_t seconds, char sep) {
        int64_t days = seconds / 86400, second = seconds % 86400;
        if (second < 0) { second += 86400; days--; }
        days += 719468;
        int64_t era = (days >= 0 ? days : days - 146096) / 146097;
        unsigned day_of_era = (unsigned)(days - era * 146097);
        unsigned year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524
                                - day_of_era / 146096) / 365;
        unsigned day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        unsigned shifted_month = (5 * day_of_year + 2) / 153;
        unsigned day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        unsigned month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
        unsigned year = (unsigned)((int64_t)year_of_era + era * 400 + (month <= 2));
        memcpy(p, tcpfast_pairs + 2 * (year / 100), 2);
        memcpy(p + 2, tcpfast_pairs + 2 * (year % 100), 2);
        p[4] = '-';
        memcpy(p + 5, tcpfast_pairs + 2 * month, 2);
        p[7] = '-';
        memcpy(p + 8, tcpfast_pairs + 2 * day, 2);
        p[10] = sep;
        memcpy(p + 11, tcpfast_pairs + 2 * (second / 3600), 2);
        p[13] = ':';
        memcpy(p + 14, tcpfast_pairs + 2 * (second / 60 % 60), 2);
        p[16] = ':';
        memcpy(p + 17, tcpfast_pairs + 2 * (second % 60), 2);
        memcpy(p + 19, "+00:00", 6);
        return p + 25;
    }
    /* Below this, round(x, 3) is exact here and its repr is the plain decimal: a
       double's spacing there is far below 0.001, and repr switches to exponents
       only at 1e16. */
    static const double tcpfast_plain_limit = 1e12;
    /* repr(round(x, 3)) for a finite |x| < tcpfast_plain_limit: x is m * 2^-shift
       exactly, so 1000 x is rounded half to even in integers, as Python's round
       rounds the exact value; then the digits, trailing zeros dropped ("2.5",
       "0.062", "-0.0"). */
    static inline char *tcpfast_round3(char *p, double x) {
        uint64_t bits, mantissa, scaled, thousandths, remainder, half;
        memcpy(&bits, &x, 8);
        int exponent = (int)(bits >> 52 & 0x7FF);
        mantissa = bits & 0xFFFFFFFFFFFFFULL;
        if (exponent) mantissa |= 1ULL << 52; else exponent = 1;
        int shift = 1075 - exponent;           /* >= 13 below the limit */
        if (bits >> 63) *p++ = '-';
        scaled = mantissa * 1000;              /* < 2^63 */
        if (shift >= 64) {
            thousandths = 0;                   /* 1000 |x| < 2^63 / 2^64 < 0.5 */
        } else {
            thousandths = scaled >> shift;
            remainder = scaled & ((1ULL << shift) - 1);
            half = 1ULL << (shift - 1);
            if (remainder > half || (remainder == half && (thousandths & 1))) thousandths++;
        }
        p = tcpfast_u64(p, thousandths / 1000);
        *p++ = '.';
        unsigned fraction = (unsigned)(thousandths % 1000);
        *p++ = (char)('0' + fraction / 100);
        if (fraction % 100) {
            *p++ = (char)('0' + fraction / 10 % 10);
            if (fraction % 10) *p++ = (char)('0' + fraction % 10);
        }
        return p;
    }
    """
    char* tcpfast_u64(char* p, uint64_t v) noexcept nogil
    char* tcpfast_i64(char* p, int64_t v) noexcept nogil
    char* tcpfast_ipv4(char* p, const uint8_t* a) noexcept nogil
    char* tcpfast_ipv6(char* p, const uint8_t* a) noexcept nogil
    char* tcpfast_stamp(char* p, int64_t seconds, char sep) noexcept nogil
    char* tcpfast_round3(char* p, double x) noexcept nogil
    const int64_t tcpfast_first_second
    const int64_t tcpfast_last_second
    const double tcpfast_plain_limit


def close_info_layout():
    """(itemsize, {field: offset}) of the C close info, to check against CLOSE_INFO_DTYPE."""
    return close_info_layout_of()


cdef enum:
    # tcpfast.events' UNKNOWN_* bits (the tests compare the formatters on every combination)
    UNKNOWN_LOCAL_ADDRESS = 0x01
    UNKNOWN_LOCAL_PORT = 0x02
    UNKNOWN_REMOTE_ADDRESS = 0x04
    UNKNOWN_REMOTE_PORT = 0x08
    UNKNOWN_UID = 0x10
    DIRECTIONS = 4            # tcpfast.enrich.direction's codes: unknown, in, out, listen
    # The most a line takes but for its owner's comm and its namespace's holder,
    # with room to spare (the longest text line's fixed part is ~330 bytes, JSON's ~700).
    TEXT_LINE_BYTES = 512
    JSON_LINE_BYTES = 1024
    NAME_BYTES = 32           # room for any state, direction or event name

cdef uint8_t KNOWN_SENT = KNOWN_BYTES_SENT, KNOWN_RECEIVED = KNOWN_BYTES_RECEIVED
cdef uint8_t KNOWN_SEGS_OUT = KNOWN_SEGMENTS_SENT, KNOWN_SEGS_IN = KNOWN_SEGMENTS_RECEIVED
cdef uint8_t KNOWN_RETRANS = KNOWN_RETRANSMITS, KNOWN_RTT_US = KNOWN_RTT

# The kernel's state names (schema.state_name) and the direction names, by code.
cdef char STATE_NAME[256][NAME_BYTES]
cdef uint8_t STATE_LENGTH[256]
cdef char DIRECTION_NAME[DIRECTIONS][NAME_BYTES]
cdef uint8_t DIRECTION_LENGTH[DIRECTIONS]


cdef void _fill_names() except *:
    cdef int code
    cdef bytes name
    for code in range(256):
        name = state_name(code).encode("ascii")
        memcpy(STATE_NAME[code], <const char*>name, len(name))
        STATE_LENGTH[code] = len(name)
    for code, name in enumerate((b"unknown", b"in", b"out", b"listen")):
        memcpy(DIRECTION_NAME[code], <const char*>name, len(name))
        DIRECTION_LENGTH[code] = len(name)


_fill_names()

#: Each event's text label, and whether it is a closed socket's (duration, tcp_info).
_EVENTS = {"new": (b"New connection", False), "closed": (b"Closed connection", True),
           "new_and_closed": (b"New and closed connection", True)}


def row_layout():
    """(itemsize, {field: offset}) of the C row, to check against CONNECTION_DTYPE."""
    return row_layout_of()


cdef object _column(object array, str name, object dtype, Py_ssize_t count):
    """``array`` once checked (None stays None): the words of report.check_events."""
    if array is None:
        return None
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        raise TypeError(f"{name} must be a numpy array of {dtype}, not "
                        f"{getattr(array, 'dtype', type(array).__name__)}")
    if array.ndim != 1 or not array.flags.c_contiguous or array.shape[0] != count:
        raise ValueError(f"{name} must be a 1-d C-contiguous array of {count} entries "
                         f"(one per row), not of shape {array.shape}")
    return array


cdef bytes _json_value(object value):
    return b"null" if value is None else json.dumps(value).encode("ascii")


cdef bytes _text(object value):
    return str(value).encode("utf-8", "backslashreplace")


cdef list _holder_texts(tuple holders, bint json_lines):
    """Each holder as what its lines end with (the last entry: no holder): JSON's four
    keys, or text's `` pod=NAMESPACE/NAME`` / `` container=ID`` (first 12 characters)."""
    texts = []
    for holder in holders + (None,):
        if json_lines:
            values = [None] * 4 if holder is None else [
                holder.container_id, holder.pod_uid, holder.pod_namespace, holder.pod_name]
            texts.append(b', "container_id": ' + _json_value(values[0]) + b', "pod_uid": '
                         + _json_value(values[1]) + b', "pod_namespace": ' + _json_value(values[2])
                         + b', "pod_name": ' + _json_value(values[3]))
        elif holder is None:
            texts.append(b"")
        elif holder.pod_name is not None:
            texts.append(b" pod=" + (b"*" if holder.pod_namespace is None else _text(holder.pod_namespace))
                         + b"/" + _text(holder.pod_name))
        elif holder.container_id is not None:
            texts.append(b" container=" + _text(holder.container_id[:12]))
        else:
            texts.append(b"")
    return texts


cdef inline char* _put(char* p, const char* text, Py_ssize_t length) noexcept nogil:
    memcpy(p, text, length)
    return p + length


cdef inline char* _put_name(char* p, const char* padded, Py_ssize_t length) noexcept nogil:
    """A name from a NAME_BYTES array: copied whole (a fixed size needs no call), kept to its length."""
    memcpy(p, padded, NAME_BYTES)
    return p + length


cdef inline const uint8_t* _address(const Row* row, bint local) noexcept nogil:
    if local:
        return row.local_addr
    return row.remote_addr


cdef inline char* _endpoint(char* p, const Row* row, bint local, uint8_t unknown) noexcept nogil:
    """Text's ``ADDRESS:PORT`` (``[ADDRESS]:PORT`` for IPv6), ``*`` for what is unknown."""
    cdef bint no_address = unknown & (UNKNOWN_LOCAL_ADDRESS if local else UNKNOWN_REMOTE_ADDRESS)
    cdef bint no_port = unknown & (UNKNOWN_LOCAL_PORT if local else UNKNOWN_REMOTE_PORT)
    if no_address:
        p[0] = b'*'
        p += 1
    elif row.family == 4:
        p = tcpfast_ipv4(p, _address(row, local))
    else:
        p[0] = b'['
        p = tcpfast_ipv6(p + 1, _address(row, local))
        p[0] = b']'
        p += 1
    p[0] = b':'
    p += 1
    if no_port:
        p[0] = b'*'
        return p + 1
    return tcpfast_u64(p, row.local_port if local else row.remote_port)


cdef inline char* _json_address(char* p, const Row* row, bint local, uint8_t unknown) noexcept nogil:
    if unknown & (UNKNOWN_LOCAL_ADDRESS if local else UNKNOWN_REMOTE_ADDRESS):
        return _put(p, "null", 4)
    p[0] = b'"'
    if row.family == 4:
        p = tcpfast_ipv4(p + 1, _address(row, local))
    else:
        p = tcpfast_ipv6(p + 1, _address(row, local))
    p[0] = b'"'
    return p + 1


cdef inline char* _json_port(char* p, const Row* row, bint local, uint8_t unknown) noexcept nogil:
    if unknown & (UNKNOWN_LOCAL_PORT if local else UNKNOWN_REMOTE_PORT):
        return _put(p, "null", 4)
    return tcpfast_u64(p, row.local_port if local else row.remote_port)


cdef inline char* _known_u64(char* p, uint64_t value, bint known, bint json_lines) noexcept nogil:
    """``value``, or what stands for an unknown one: JSON's null, text's ``*``."""
    if known:
        return tcpfast_u64(p, value)
    if json_lines:
        return _put(p, "null", 4)
    p[0] = b'*'
    return p + 1


cdef char* _seconds(char* p, double value) except NULL:
    """JSON's round(value, 3) (NaN: null), in C where the plain decimal is exact."""
    cdef bytes text
    if isnan(value):
        return _put(p, "null", 4)
    if fabs(value) < tcpfast_plain_limit:
        return tcpfast_round3(p, value)
    text = json.dumps(round(value, 3)).encode("ascii")    # huge, or infinite
    return _put(p, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))


cdef int64_t _event_second(double value) except? -1:
    """int(value), the second datetime.fromtimestamp is given; ValueError outside datetime's years."""
    if not (isfinite(value) and value > tcpfast_first_second - 1 and value < tcpfast_last_second + 1):
        raise ValueError(f"event time {value!r} is outside the years 1 to 9999")
    return <int64_t>value


def format_into(unsigned char[::1] out, rows, str event, direction, Py_ssize_t start=0, *,
                bint json_lines=False, int64_t poll_time=0, duration=None, times=None,
                unknown=None, info=None, holder=None, tuple holders=(), owners=None,
                bint show_direction=False, bint show_bytes=False, bint show_namespace=False):
    """Write the lines of ``rows[start:]`` into ``out`` while the next line surely fits;
    return (the row after the last one written, bytes written). Each line ends with a
    newline; lines are what report.text_lines, or report.json_lines (``json_lines``),
    make of the same RowEvents columns, UTF-8 encoded with backslashreplace.

    ``event``: new, closed or new_and_closed. ``poll_time``: the poll's time (UTC
    seconds), for rows without a time of their own (``times``: float seconds, as
    time.time()). Per-row columns, each None or one entry a row: ``direction``
    (uint8 codes), ``duration`` (float64 seconds, NaN unknown), ``unknown`` (uint8
    UNKNOWN_* bits), ``info`` (CLOSE_INFO_DTYPE), ``holder`` (int32 index into
    ``holders``, -1 none), ``owners`` (a list of Owner or None).
    """
    cdef const Row* row_data = row_pointer(rows, False, "rows")
    cdef Py_ssize_t count = rows.shape[0]
    cdef const uint8_t[::1] direction_view
    cdef const double[::1] duration_view
    cdef const double[::1] times_view
    cdef const uint8_t[::1] unknown_view
    cdef const uint8_t[::1] info_view
    cdef const int32_t[::1] holder_view
    cdef const CloseInfo* infos = NULL
    cdef const Row* row
    cdef const CloseInfo* close
    cdef char* base = <char*>&out[0] if out.shape[0] else NULL
    cdef char* p = base
    cdef char* line_end = base + out.shape[0]
    cdef char* stamp_at
    cdef char poll_stamp[25]
    cdef char cached_stamp[25]
    cdef int64_t cached_second = 0, second, pid = 0
    cdef bint cached = False, closed, has_owner
    cdef Py_ssize_t i, fixed, comm_length = 0, holder_index, holder_count = len(holders)
    cdef uint8_t bits = 0, code
    cdef uint16_t known
    cdef char label[NAME_BYTES]
    cdef char event_text[NAME_BYTES]
    cdef Py_ssize_t label_length, event_length
    cdef bytes event_name, label_bytes, holder_text, comm_text = b""
    cdef list holder_texts, owner_list = None
    cdef dict comms = {}
    cdef char sep = 84 if json_lines else 32       # 'T' or ' ', as isoformat's sep

    if event not in _EVENTS:
        raise ValueError(f"unknown event {event!r}")
    event_name = event.encode("ascii")
    label_bytes, closed = _EVENTS[event]
    memset(label, 0, NAME_BYTES)
    memset(event_text, 0, NAME_BYTES)
    label_length, event_length = len(label_bytes), len(event_name)
    memcpy(label, <const char*>label_bytes, label_length)
    memcpy(event_text, <const char*>event_name, event_length)
    if not 0 <= start <= count:
        raise ValueError(f"start {start} is outside rows (0..{count})")
    if not tcpfast_first_second <= poll_time <= tcpfast_last_second:
        raise ValueError(f"poll time {poll_time} is outside the years 1 to 9999")
    if direction is None:
        raise TypeError("direction must be a numpy array of uint8, not NoneType")
    direction_view = _column(direction, "direction", np.dtype(np.uint8), count)
    if _column(duration, "duration", np.dtype(np.float64), count) is not None:
        duration_view = duration
    if _column(times, "times", np.dtype(np.float64), count) is not None:
        times_view = times
    if _column(unknown, "unknown", np.dtype(np.uint8), count) is not None:
        unknown_view = unknown
    if _column(info, "info", CLOSE_INFO_DTYPE, count) is not None:
        info_view = info.view(np.uint8)
        if count:
            infos = <const CloseInfo*>&info_view[0]
    if _column(holder, "holder", np.dtype(np.int32), count) is not None:
        holder_view = holder
    if owners is not None:
        owner_list = owners if type(owners) is list else list(owners)   # called per buffer: no copy
        if len(owner_list) != count:
            raise ValueError(f"owners must have {count} entries (one per row), not {len(owner_list)}")
    holder_texts = _holder_texts(holders, json_lines)
    fixed = (JSON_LINE_BYTES if json_lines else TEXT_LINE_BYTES) + max(map(len, holder_texts))
    tcpfast_stamp(poll_stamp, poll_time, sep)

    for i in range(start, count):
        row = row_data + i
        if row.family != 4 and row.family != 6:
            raise ValueError(f"family must be 4 or 6, not {row.family}")
        code = direction_view[i]
        if code >= DIRECTIONS:
            raise ValueError(f"unknown direction code {code}")
        holder_index = -1 if holder is None else holder_view[i]
        if holder_index == -1:
            holder_index = holder_count              # the entry of no holder
        elif not 0 <= holder_index < holder_count:
            raise ValueError(f"holder indexes must be -1 (none) or below {holder_count} "
                             "(the holders given)")
        has_owner = owner_list is not None and owner_list[i] is not None
        if has_owner:
            owner = owner_list[i]
            pid = owner.pid
            comm_text = comms.get(owner.comm)
            if comm_text is None:
                comm_text = _json_value(owner.comm) if json_lines else _text(owner.comm)
                comms[owner.comm] = comm_text
            comm_length = len(comm_text)
        if line_end - p < fixed + (comm_length if has_owner else 0):
            return i, p - base
        if times is None:
            stamp_at = poll_stamp
        else:
            second = _event_second(times_view[i])
            if not cached or second != cached_second:
                tcpfast_stamp(cached_stamp, second, sep)
                cached_second, cached = second, True
            stamp_at = cached_stamp
        if unknown is not None:
            bits = unknown_view[i]
        close = infos + i if infos != NULL else NULL
        holder_text = holder_texts[holder_index]

        if json_lines:
            p = _put(p, '{"time": "', 10)
            p = _put(p, stamp_at, 25)
            p = _put(p, '", "event": "', 13)
            p = _put_name(p, event_text, event_length)
            p = _put(p, '", "family": ', 13)
            p[0] = <char>(48 + row.family)                  # '4' or '6'
            p = _put(p + 1, ', "local": ', 11)
            p = _json_address(p, row, True, bits)
            p = _put(p, ', "local_port": ', 16)
            p = _json_port(p, row, True, bits)
            p = _put(p, ', "remote": ', 12)
            p = _json_address(p, row, False, bits)
            p = _put(p, ', "remote_port": ', 17)
            p = _json_port(p, row, False, bits)
            p = _put(p, ', "state": "', 12)
            p = _put_name(p, STATE_NAME[row.state], STATE_LENGTH[row.state])
            p = _put(p, '", "uid": ', 10)
            if bits & UNKNOWN_UID:
                p = _put(p, 'null', 4)
            else:
                p = tcpfast_u64(p, row.uid)
            p = _put(p, ', "inode": ', 11)
            p = tcpfast_u64(p, row.inode)
            p = _put(p, ', "direction": "', 16)
            p = _put_name(p, DIRECTION_NAME[code], DIRECTION_LENGTH[code])
            p = _put(p, '", "pid": ', 10)
            if has_owner:
                p = tcpfast_i64(p, pid)
                p = _put(p, ', "comm": ', 10)
                p = _put(p, comm_text, comm_length)
            else:
                p = _put(p, 'null, "comm": null', 18)
            if closed:
                p = _put(p, ', "duration": ', 14)
                p = _put(p, "null", 4) if duration is None else _seconds(p, duration_view[i])
                known = 0 if close == NULL else close.known
                p = _put(p, ', "bytes_sent": ', 16)
                p = _known_u64(p, close.bytes_sent if known & KNOWN_SENT else 0, known & KNOWN_SENT, True)
                p = _put(p, ', "bytes_received": ', 20)
                p = _known_u64(p, close.bytes_received if known & KNOWN_RECEIVED else 0,
                               known & KNOWN_RECEIVED, True)
                p = _put(p, ', "rtt_ms": ', 12)
                if known & KNOWN_RTT_US:
                    p = tcpfast_round3(p, close.rtt_us / 1000.0)
                else:
                    p = _put(p, "null", 4)
                p = _put(p, ', "retransmits": ', 17)
                p = _known_u64(p, close.retransmits if known & KNOWN_RETRANS else 0,
                               known & KNOWN_RETRANS, True)
                p = _put(p, ', "segments_sent": ', 19)
                p = _known_u64(p, close.segments_sent if known & KNOWN_SEGS_OUT else 0,
                               known & KNOWN_SEGS_OUT, True)
                p = _put(p, ', "segments_received": ', 23)
                p = _known_u64(p, close.segments_received if known & KNOWN_SEGS_IN else 0,
                               known & KNOWN_SEGS_IN, True)
            p = _put(p, ', "netns": ', 11)
            p = _known_u64(p, row.netns, row.netns != 0, True)
            p = _put(p, holder_text, len(holder_text))
            p = _put(p, "}\n", 2)
            continue

        p = _put(p, stamp_at, 25)
        p = _put(p, ": ", 2)
        p = _put_name(p, label, label_length)
        p = _put(p, ": ", 2)
        p = _endpoint(p, row, True, bits)
        p = _put(p, " -> ", 4)
        p = _endpoint(p, row, False, bits)
        if show_direction:
            p = _put(p, " direction=", 11)
            p = _put_name(p, DIRECTION_NAME[code], DIRECTION_LENGTH[code])
        if has_owner:
            p = _put(p, " pid=", 5)
            p = tcpfast_i64(p, pid)
            p[0] = b' '
            p = _put(p + 1, comm_text, comm_length)
        if show_bytes and closed:
            known = 0 if close == NULL else close.known
            p = _put(p, " sent=", 6)
            p = _known_u64(p, close.bytes_sent if known & KNOWN_SENT else 0, known & KNOWN_SENT, False)
            p = _put(p, " received=", 10)
            p = _known_u64(p, close.bytes_received if known & KNOWN_RECEIVED else 0,
                           known & KNOWN_RECEIVED, False)
            p = _put(p, " rtt=", 5)
            if known & KNOWN_RTT_US:
                p = tcpfast_round3(p, close.rtt_us / 1000.0)
                p = _put(p, "ms", 2)
            else:
                p[0] = b'*'
                p += 1
        if show_namespace:
            p = _put(p, " netns=", 7)
            p = _known_u64(p, row.netns, row.netns != 0, False)
            if len(holder_text):
                p = _put(p, holder_text, len(holder_text))
        p[0] = b'\n'
        p += 1
    return count, p - base
