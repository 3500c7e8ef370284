# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled set operations on connection keys: one hash-table pass, no sorting.

Rows come in as their (n, 8) uint64 word view (see keys.py): words 0-3 are the
addresses, word 4 masked by ``key_mask`` holds ports and family, word 7 is the
inode. Same semantics as the numpy implementation in keys.py, which the tests
compare with this one: two rows are the same connection when their keys are
equal word for word and their inodes are equal or one of them is 0. A hash
only picks where to look; keys are always compared in full. No state is kept.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np

cdef enum:
    INODE = 7
    AHEAD = 16               # rows hashed ahead, their slots prefetched: hides memory latency
    LOOK_AHEAD = 8           # how far phase 1 looks for a row that moved

cdef extern from *:
    void __builtin_prefetch(const void* address) nogil


cdef inline uint64_t _hash(const uint64_t* row, uint64_t key_mask) noexcept nogil:
    cdef uint64_t h = (row[0] * 0x9E3779B97F4A7C15ULL) ^ (row[1] * 0xC2B2AE3D27D4EB4FULL)
    h ^= (row[2] * 0x165667B19E3779F9ULL) ^ (row[3] * 0xD6E8FEB86659FD93ULL)
    h ^= (row[4] & key_mask) * 0xFF51AFD7ED558CCDULL
    h ^= h >> 32
    h *= 0x9E3779B97F4A7C15ULL
    return h ^ (h >> 29)


cdef inline bint _same_key(const uint64_t* a, const uint64_t* b, uint64_t key_mask) noexcept nogil:
    return (a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
            and ((a[4] ^ b[4]) & key_mask) == 0)


cdef inline bint _compatible(uint64_t a, uint64_t b) noexcept nogil:
    return a == b or a == 0 or b == 0


cdef struct Slot:
    uint32_t index           # row index + 1; 0 is empty
    uint32_t tag             # low hash bits of that row: most misses end here


cdef struct Table:
    Slot* slots
    uint64_t mask
    int shift


cdef int _build(Table* table, const uint64_t* rows, const uint32_t* subset, Py_ssize_t n,
                uint64_t key_mask) noexcept nogil:
    """Rows (all, or those listed in subset) into an open-addressing table at most
    half full, each slot holding its row's index + 1; -1 if out of memory."""
    cdef uint64_t size = 16
    cdef int bits = 4
    cdef Py_ssize_t i
    cdef uint64_t h, slot
    cdef uint64_t ahead[AHEAD]
    while size < <uint64_t>(2 * n):
        size <<= 1
        bits += 1
    table.slots = <Slot*>calloc(size, sizeof(Slot))
    if table.slots == NULL:
        return -1
    table.mask = size - 1
    table.shift = 64 - bits
    for i in range(n + AHEAD):
        if i >= AHEAD:                            # insert the row hashed AHEAD rows ago
            h = ahead[i % AHEAD]
            slot = h >> table.shift
            while table.slots[slot].index:
                slot = (slot + 1) & table.mask
            table.slots[slot].index = (subset[i - AHEAD] if subset else <uint32_t>(i - AHEAD)) + 1
            table.slots[slot].tag = <uint32_t>h
        if i < n:                                 # then hash this one, fetch its slot
            h = _hash(rows + 8 * (subset[i] if subset else i), key_mask)
            __builtin_prefetch(&table.slots[h >> table.shift])
            ahead[i % AHEAD] = h
    return 0


cdef void _release(Table* table) noexcept nogil:
    free(table.slots)


def _words(object words):
    """The (n, 8) uint64 C-contiguous view, checked."""
    if words.ndim != 2 or words.shape[1] != 8 or words.dtype != np.uint64:
        raise TypeError("expected an (n, 8) uint64 array of row words")
    if words.shape[0] >= 0xFFFFFFFF:
        raise ValueError("too many rows")
    return np.ascontiguousarray(words)


cdef inline bint _same(const uint64_t* a, const uint64_t* b, uint64_t key_mask) noexcept nogil:
    return _same_key(a, b, key_mask) and _compatible(a[INODE], b[INODE])


cdef Py_ssize_t _walk(const uint64_t* needles, Py_ssize_t n, const uint64_t* haystack,
                      Py_ssize_t m, uint64_t key_mask, int64_t* match) noexcept nogil:
    """Phase 1: match rows that stand in the same order in both, as the kernel
    lists sockets that live across polls; returns how many needles it matched."""
    cdef Py_ssize_t i = 0, j = 0, k, matches = 0
    while i < n and j < m:
        if _same(needles + 8 * i, haystack + 8 * j, key_mask):
            match[i] = j
            matches += 1
            i += 1
            j += 1
            continue
        for k in range(1, LOOK_AHEAD + 1):       # haystack rows gone before this needle?
            if j + k < m and _same(needles + 8 * i, haystack + 8 * (j + k), key_mask):
                j += k
                break
            if i + k < n and _same(needles + 8 * (i + k), haystack + 8 * j, key_mask):
                i += k                            # needles new before this haystack row?
                break
        else:
            i += 1                                # no match near: leave both to phase 2
            j += 1
    return matches


def match(object needle_words, object haystack_words, uint64_t key_mask):
    """For each needle row, the index of a haystack row that is the same
    connection, or -1.

    Phase 1 walks both in order (cheap, streaming); phase 2 puts the needles it
    left in a hash table and probes it with every haystack row, so the result
    is exact whatever the order: order only decides how much work is left.
    """
    needle_words, haystack_words = _words(needle_words), _words(haystack_words)
    cdef Py_ssize_t n = needle_words.shape[0], m = haystack_words.shape[0], i, left
    cdef const uint64_t[:, ::1] needles = needle_words
    cdef const uint64_t[:, ::1] haystack = haystack_words
    result = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return result
    cdef int64_t[::1] match_at = result
    cdef Table table
    cdef const uint64_t* row
    cdef uint64_t h, slot
    cdef uint32_t index
    cdef uint32_t* unmatched = NULL
    cdef int status = 0
    with nogil:
        left = n - _walk(&needles[0, 0], n, &haystack[0, 0], m, key_mask, &match_at[0])
        if left:
            unmatched = <uint32_t*>malloc(left * sizeof(uint32_t))
            status = -1 if unmatched == NULL else 0
        if left and status == 0:
            left = 0
            for i in range(n):
                if match_at[i] < 0:
                    unmatched[left] = <uint32_t>i
                    left += 1
            status = _build(&table, &needles[0, 0], unmatched, left, key_mask)
            if status == 0:
                for i in range(m):
                    row = &haystack[i, 0]
                    h = _hash(row, key_mask)
                    slot = h >> table.shift
                    index = table.slots[slot].index
                    while index:
                        if (table.slots[slot].tag == <uint32_t>h and match_at[index - 1] < 0
                                and _same(&needles[index - 1, 0], row, key_mask)):
                            match_at[index - 1] = i
                        slot = (slot + 1) & table.mask
                        index = table.slots[slot].index
            _release(&table)
        free(unmatched)
    if status != 0:
        raise MemoryError()
    return result


def duplicates(object row_words, uint64_t key_mask):
    """Mask of rows to drop so that each connection is listed once.

    A row goes when the same connection is listed earlier with the same inode,
    or it has inode 0 and the connection is also listed with a real one.
    """
    row_words = _words(row_words)
    cdef Py_ssize_t n = row_words.shape[0], i
    cdef const uint64_t[:, ::1] rows = row_words
    result = np.zeros(n, dtype=bool)
    if n == 0:
        return result
    cdef uint8_t[::1] drop = result.view(np.uint8)
    cdef Table table
    cdef const uint64_t* row
    cdef const uint64_t* other
    cdef uint64_t h, slot, inode
    cdef uint32_t index
    cdef int status
    with nogil:
        status = _build(&table, &rows[0, 0], NULL, n, key_mask)
        if status == 0:
            for i in range(n):
                row = &rows[i, 0]
                inode = row[INODE]
                h = _hash(row, key_mask)
                slot = h >> table.shift
                index = table.slots[slot].index
                while index:
                    if table.slots[slot].tag == <uint32_t>h and index - 1 != <uint32_t>i:
                        other = &rows[index - 1, 0]
                        if _same_key(row, other, key_mask) and (
                                (other[INODE] == inode and index - 1 < <uint32_t>i)
                                or (inode == 0 and other[INODE] != 0)):
                            drop[i] = 1
                            break
                    slot = (slot + 1) & table.mask
                    index = table.slots[slot].index
        _release(&table)
    if status != 0:
        raise MemoryError()
    return result
