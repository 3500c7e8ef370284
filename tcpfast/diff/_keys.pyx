# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled set operations on connection keys, linear in the number of rows for every input.

Same semantics as the numpy implementation in keys.py, which the tests compare
with this one: two rows are the same connection when their keys (addresses,
ports, family, namespace: ``tcpfast/row.pxd``) are equal and their inodes are
equal or one of them is 0. Among the rows that are the same connection, a row
with the very same inode is preferred.

Identical keys are normal input (every connection to one listener has the
same local end; reuseport listeners share a key), so a key is stored once,
however many rows carry it, and what a lookup needs of its rows is kept
beside it: the first with inode 0, the first with an inode,
and whether its rows hold several inodes (then a second table of (key, inode)
pairs, each stored once, answers). No chain ever holds two equal entries, and
the hash is seeded at import from os.urandom, so no input can be made in
advance to collide: every lookup costs O(1) expected, whatever the input.
A hash only picks where to look; keys are always compared in full. No state
is kept between calls.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from tcpfast.row cimport INODE_WORD, NETNS_WORD, PORTS_WORD, ROW_WORDS, Row, row_layout_of, row_pointer

import os

import numpy as np

cdef enum:
    LOOK_AHEAD = 8           # how far the walk looks for a row that moved
    WALK_GIVE_UP = 64        # steps without a match after which the walk stops

cdef Py_ssize_t MAX_ROWS = 0x7FFFFFFE    # indexes are stored + 1 in 31 bits

cdef uint64_t PORTS_MASK     # ports and family of word 4: state and timer left out
memcpy(&PORTS_MASK, b"\xff\xff\xff\xff\xff\x00\x00\x00", 8)

cdef uint64_t SEED[10]


cdef void _seed(bytes random) noexcept:
    memcpy(SEED, <const char*>random, sizeof(SEED))
    for i in range(10):
        SEED[i] |= 1         # odd multipliers


_seed(os.urandom(sizeof(SEED)))


def row_layout():
    """(itemsize, {field: offset}) of the C row, to check against CONNECTION_DTYPE."""
    return row_layout_of()


cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    h ^= h >> 32
    h *= 0xD6E8FEB86659FD93ULL
    return h ^ (h >> 29)


cdef inline uint64_t _key_hash(const uint64_t* w) noexcept nogil:
    return _mix(w[0] * SEED[0] + w[1] * SEED[1] + w[2] * SEED[2] + w[3] * SEED[3]
                + (w[PORTS_WORD] & PORTS_MASK) * SEED[4] + w[NETNS_WORD] * SEED[5])


cdef inline uint64_t _pair_hash(uint32_t entry, uint64_t inode) noexcept nogil:
    return _mix((entry + SEED[6]) * SEED[7] + inode * SEED[8])


cdef inline bint _same_key(const uint64_t* a, const uint64_t* b) noexcept nogil:
    return (a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
            and ((a[PORTS_WORD] ^ b[PORTS_WORD]) & PORTS_MASK) == 0
            and a[NETNS_WORD] == b[NETNS_WORD])


cdef inline const uint64_t* _words(const uint64_t* rows, Py_ssize_t i) noexcept nogil:
    return rows + ROW_WORDS * i


cdef extern from *:
    void __builtin_prefetch(const void* address) nogil

cdef enum:
    AHEAD = 16               # rows hashed ahead, their slots prefetched: hides memory latency

cdef uint32_t SEVERAL = 0x80000000U      # in Slot.exact: the key's rows hold several inodes


# One distinct key of the rows a KeyTable holds, and what lookups need of its rows;
# empty while both rows are 0. 12 bytes: at 10^6 keys the table is the largest
# temporary of a poll.
cdef struct Slot:
    uint32_t tag             # low bits of its hash: most mismatches end here
    uint32_t zero            # its first row with inode 0, + 1; 0: none
    uint32_t exact           # its first row with an inode, + 1 (0: none); | SEVERAL


cdef inline uint32_t _some_row(const Slot* slot) noexcept nogil:
    """A row of the slot's key, + 1 (0: the slot is empty)."""
    return slot.zero if slot.zero else slot.exact & ~SEVERAL


# A (key, inode) pair of a key with several inodes: its first row.
cdef struct Pair:
    uint32_t tag
    uint32_t row             # + 1; 0: empty


cdef struct KeyTable:
    const uint64_t* rows
    Slot* slots
    uint64_t size
    uint32_t* slot_of        # per row put in: its key's slot (for the pair pass)
    bint several             # some key holds several inodes
    Pair* pairs              # with several: the (key, inode) pairs of such keys
    uint64_t pair_size


cdef inline uint64_t _size(Py_ssize_t count) noexcept nogil:
    """Slots for ``count`` items, at most 70% full: linear probing stays short (a few
    probes a lookup), and the size is not rounded up to a power of two (which left
    tables up to twice as large: 2^21 slots for 10^6 keys, not 1.43 million)."""
    return 16 + <uint64_t>count * 10 // 7


cdef inline uint64_t _home(uint64_t h, uint64_t size) noexcept nogil:
    """The slot a hash's probe starts at: its high 32 bits scaled to the size (a
    multiply and a shift; the low 32 bits are the tag). Sizes stay below 2^32."""
    return ((h >> 32) * size) >> 32


cdef inline uint64_t _next(uint64_t at, uint64_t size) noexcept nogil:
    at += 1
    return 0 if at == size else at


cdef void _release(KeyTable* table) noexcept nogil:
    free(table.slots)
    free(table.slot_of)
    free(table.pairs)
    table.slots = NULL
    table.slot_of = NULL
    table.pairs = NULL


cdef inline Slot* _find_key(const KeyTable* table, const uint64_t* row, uint64_t h) noexcept nogil:
    """The slot of ``row``'s key (hash ``h``), or the empty slot where it would go."""
    cdef uint64_t at = _home(h, table.size)
    cdef Slot* slot = &table.slots[at]
    while _some_row(slot):
        if slot.tag == <uint32_t>h and _same_key(_words(table.rows, _some_row(slot) - 1), row):
            return slot
        at = _next(at, table.size)
        slot = &table.slots[at]
    return slot


cdef inline Pair* _find_pair(const KeyTable* table, uint32_t key, uint64_t inode,
                             uint64_t h) noexcept nogil:
    """The pair (``key``'s slot, ``inode``; hash ``h``), or the empty slot where it would go."""
    cdef uint64_t at = _home(h, table.pair_size)
    cdef Pair* pair = &table.pairs[at]
    while pair.row:
        if (pair.tag == <uint32_t>h and table.slot_of[pair.row - 1] == key
                and _words(table.rows, pair.row - 1)[INODE_WORD] == inode):
            return pair
        at = _next(at, table.pair_size)
        pair = &table.pairs[at]
    return pair


cdef inline void _put(KeyTable* table, Py_ssize_t i, uint64_t h) noexcept nogil:
    """Row ``i`` (hash ``h``) into its key's slot."""
    cdef const uint64_t* row = _words(table.rows, i)
    cdef Slot* slot = _find_key(table, row, h)
    cdef uint64_t inode = row[INODE_WORD]
    if not _some_row(slot):
        slot.tag = <uint32_t>h
    table.slot_of[i] = <uint32_t>(slot - table.slots)
    if inode == 0:
        if not slot.zero:
            slot.zero = <uint32_t>(i + 1)
    elif not slot.exact:
        slot.exact = <uint32_t>(i + 1)
    elif (not slot.exact & SEVERAL
          and _words(table.rows, (slot.exact & ~SEVERAL) - 1)[INODE_WORD] != inode):
        slot.exact |= SEVERAL
        table.several = True


cdef int _build(KeyTable* table, const uint64_t* rows, Py_ssize_t n, const uint8_t* chosen,
                bint with_pairs) noexcept nogil:
    """The keys of rows 0..n-1 (those ``chosen`` marks, if given), in order, and
    ``with_pairs`` the (key, inode) pairs of keys with several; -1: no memory."""
    cdef Py_ssize_t i, k
    cdef uint64_t ahead[AHEAD]
    cdef Pair* pair
    cdef uint32_t key
    cdef uint64_t inode, h
    cdef Py_ssize_t count = n
    table.rows = rows
    table.several = False
    table.pairs = NULL
    if chosen != NULL:                            # tables sized to what goes in: pages
        count = 0                                 # never touched are never faulted in
        for i in range(n):
            count += chosen[i]
    table.size = _size(count)
    table.slots = <Slot*>calloc(table.size, sizeof(Slot))
    table.slot_of = <uint32_t*>malloc((n if n else 1) * sizeof(uint32_t))
    if table.slots == NULL or table.slot_of == NULL:
        return -1
    for k in range(n + AHEAD):
        i = k - AHEAD                             # put the row hashed AHEAD rows ago
        if i >= 0 and (chosen == NULL or chosen[i]):
            _put(table, i, ahead[i % AHEAD])
        if k < n and (chosen == NULL or chosen[k]):   # then hash this one, fetch its slot
            ahead[k % AHEAD] = _key_hash(_words(rows, k))
            __builtin_prefetch(&table.slots[_home(ahead[k % AHEAD], table.size)])
    if not (table.several and with_pairs):
        return 0
    table.pair_size = _size(count)
    table.pairs = <Pair*>calloc(table.pair_size, sizeof(Pair))
    if table.pairs == NULL:
        return -1
    for i in range(n):
        if chosen != NULL and not chosen[i]:
            continue
        key = table.slot_of[i]
        inode = _words(rows, i)[INODE_WORD]
        if inode and table.slots[key].exact & SEVERAL:
            h = _pair_hash(key, inode)
            pair = _find_pair(table, key, inode, h)
            if not pair.row:
                pair.tag = <uint32_t>h
                pair.row = <uint32_t>(i + 1)
    return 0


cdef inline int64_t _lookup(const KeyTable* table, const uint64_t* needle, uint64_t h) noexcept nogil:
    """A row of the table that is the same connection as ``needle`` (hash ``h``): the
    first with its very inode if any, else one with inode 0, else (the needle's inode
    being 0) the first with an inode; or -1."""
    cdef const Slot* slot = _find_key(table, needle, h)
    cdef uint64_t inode = needle[INODE_WORD]
    cdef const Pair* pair
    if not _some_row(slot):
        return -1
    if inode == 0:
        return _some_row(slot) - 1
    if slot.exact & SEVERAL:
        pair = _find_pair(table, <uint32_t>(slot - table.slots), inode,
                          _pair_hash(<uint32_t>(slot - table.slots), inode))
        if pair.row:
            return pair.row - 1
    elif slot.exact and _words(table.rows, slot.exact - 1)[INODE_WORD] == inode:
        return slot.exact - 1
    return <int64_t>slot.zero - 1


cdef void _look_up_all(const KeyTable* table, const uint64_t* needles, Py_ssize_t n,
                       int64_t* match) noexcept nogil:
    """match[i] for every needle whose match[i] is still -1, hashes computed ahead."""
    cdef Py_ssize_t i, k
    cdef uint64_t ahead[AHEAD]
    for k in range(n + AHEAD):
        i = k - AHEAD
        if i >= 0 and match[i] < 0:
            match[i] = _lookup(table, _words(needles, i), ahead[i % AHEAD])
        if k < n and match[k] < 0:
            ahead[k % AHEAD] = _key_hash(_words(needles, k))
            __builtin_prefetch(&table.slots[_home(ahead[k % AHEAD], table.size)])


cdef void _mark_known(const KeyTable* table, const uint64_t* rows, Py_ssize_t n,
                      uint8_t* known) noexcept nogil:
    """known[i]: row i's key is in the table (hashes computed ahead)."""
    cdef Py_ssize_t i, k
    cdef uint64_t ahead[AHEAD]
    for k in range(n + AHEAD):
        i = k - AHEAD
        if i >= 0:
            known[i] = _some_row(_find_key(table, _words(rows, i), ahead[i % AHEAD])) != 0
        if k < n:
            ahead[k % AHEAD] = _key_hash(_words(rows, k))
            __builtin_prefetch(&table.slots[_home(ahead[k % AHEAD], table.size)])


cdef Py_ssize_t _walk(const uint64_t* needles, Py_ssize_t n, const uint64_t* haystack,
                      Py_ssize_t m, int64_t* match) noexcept nogil:
    """Match rows that stand in the same order in both, the same key and inode (as the
    kernel lists sockets that live across polls); returns how many needles it matched.
    It stops after WALK_GIVE_UP steps without a match (the inputs are not in order)."""
    cdef Py_ssize_t i = 0, j = 0, k, matches = 0, misses = 0
    while i < n and j < m and misses < WALK_GIVE_UP:
        if _exact(_words(needles, i), _words(haystack, j)):
            match[i] = j
            matches += 1
            misses = 0
            i += 1
            j += 1
            continue
        misses += 1
        for k in range(1, LOOK_AHEAD + 1):       # haystack rows gone before this needle?
            if j + k < m and _exact(_words(needles, i), _words(haystack, j + k)):
                j += k
                break
            if i + k < n and _exact(_words(needles, i + k), _words(haystack, j)):
                i += k                            # needles new before this haystack row?
                break
        else:
            i += 1                                # no match near: leave both to the tables
            j += 1
    return matches


cdef inline bint _exact(const uint64_t* a, const uint64_t* b) noexcept nogil:
    return _same_key(a, b) and a[INODE_WORD] == b[INODE_WORD]


cdef const uint64_t* _rows(object rows, str name, Py_ssize_t* count) except? NULL:
    """Checked rows as 64-bit words, and how many there are."""
    cdef Row* first = row_pointer(rows, False, name)
    count[0] = rows.shape[0]
    if count[0] > MAX_ROWS:
        raise ValueError(f"{name}: more than {MAX_ROWS} rows")
    return <const uint64_t*>first


def match(object needles, object haystack):
    """For each needle row, the index of a haystack row that is the same connection
    (one with the very same inode when there is one), or -1.

    First a walk of both in order (cheap, streaming: the kernel lists sockets
    that live across polls in the same order); then the keys of what it left
    go into a table, on the smaller side: the haystack rows (all of them, or
    those whose key some unmatched needle has) and each unmatched needle is
    looked up. Exact whatever the order: order only decides how much work is left.
    """
    cdef Py_ssize_t n, m, i, left = 0
    cdef const uint64_t* needle_rows = _rows(needles, "needles", &n)
    cdef const uint64_t* haystack_rows = _rows(haystack, "haystack", &m)
    result = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return result
    cdef int64_t[::1] match_at = result
    cdef KeyTable wanted, table
    cdef uint8_t* chosen = NULL
    cdef int status = 0
    wanted.slots = table.slots = NULL
    wanted.slot_of = table.slot_of = NULL
    wanted.pairs = table.pairs = NULL
    with nogil:
        left = n - _walk(needle_rows, n, haystack_rows, m, &match_at[0])
        if left and left < m:            # few needles left: only haystack keys they have
            chosen = <uint8_t*>malloc(n if n > m else m)
            status = -1 if chosen == NULL else 0
            if status == 0:
                for i in range(n):
                    chosen[i] = match_at[i] < 0
                status = _build(&wanted, needle_rows, n, chosen, False)
            if status == 0:
                _mark_known(&wanted, haystack_rows, m, chosen)
            _release(&wanted)
        if left and status == 0:
            status = _build(&table, haystack_rows, m, chosen, True)
            if status == 0:
                _look_up_all(&table, needle_rows, n, &match_at[0])
        _release(&table)
        free(chosen)
    if status != 0:
        raise MemoryError()
    return result


def duplicates(object rows):
    """Mask of rows to drop so that each connection is listed once.

    A row goes when the same connection is listed earlier with the same inode,
    or it has inode 0 and the connection is also listed with a real one.
    """
    cdef Py_ssize_t n, i
    cdef const uint64_t* words = _rows(rows, "rows", &n)
    result = np.zeros(n, dtype=bool)
    if n == 0:
        return result
    cdef uint8_t[::1] drop = result.view(np.uint8)
    cdef KeyTable table
    cdef const Slot* key
    cdef const Pair* pair
    cdef uint32_t key_slot
    cdef uint64_t inode
    cdef int status
    table.slots = NULL
    table.slot_of = NULL
    table.pairs = NULL
    with nogil:
        status = _build(&table, words, n, NULL, True)
        if status == 0:
            for i in range(n):
                key = &table.slots[table.slot_of[i]]
                inode = _words(words, i)[INODE_WORD]
                if inode == 0:                          # superseded, or listed again
                    drop[i] = key.exact != 0 or <Py_ssize_t>key.zero - 1 != i
                elif key.exact & SEVERAL:
                    key_slot = table.slot_of[i]
                    pair = _find_pair(&table, key_slot, inode, _pair_hash(key_slot, inode))
                    drop[i] = <Py_ssize_t>pair.row - 1 != i
                else:
                    drop[i] = <Py_ssize_t>key.exact - 1 != i
        _release(&table)
    if status != 0:
        raise MemoryError()
    return result


cdef uint64_t LOCAL_PORT_MASK      # local port and family of word 4
memcpy(&LOCAL_PORT_MASK, b"\xff\xff\x00\x00\xff\x00\x00\x00", 8)


cdef inline uint64_t _local_hash(uint64_t a0, uint64_t a1, const uint64_t* w) noexcept nogil:
    """The hash of a local end: address words ``a0, a1`` and ``w``'s port, family, namespace."""
    return _mix(a0 * SEED[0] + a1 * SEED[1] + (w[PORTS_WORD] & LOCAL_PORT_MASK) * SEED[4]
                + w[NETNS_WORD] * SEED[5])


cdef inline bint _local_end_in(const Pair* slots, uint64_t size,
                               const uint64_t* ends, uint64_t a0, uint64_t a1,
                               const uint64_t* w, uint64_t h) noexcept nogil:
    """Whether the table holds an ``ends`` row with local address ``a0, a1`` and
    ``w``'s local port, family and namespace (hash ``h``)."""
    cdef uint64_t at = _home(h, size)
    cdef const uint64_t* end
    while slots[at].row:
        end = _words(ends, slots[at].row - 1)
        if (slots[at].tag == <uint32_t>h and end[0] == a0 and end[1] == a1
                and end[NETNS_WORD] == w[NETNS_WORD]
                and ((end[PORTS_WORD] ^ w[PORTS_WORD]) & LOCAL_PORT_MASK) == 0):
            return True
        at = _next(at, size)
    return False


def listened(object rows, object listeners):
    """Mask of rows whose local end (family, local address, local port, namespace) is
    a listener's, or whose family's wildcard address with that port is: the rows a
    listener accepted. Rows are never copied (numpy's fallback, in keys.py, reduces
    copies of them to their local ends)."""
    cdef Py_ssize_t n, m, i, k
    cdef const uint64_t* row_words = _rows(rows, "rows", &n)
    cdef const uint64_t* ends = _rows(listeners, "listeners", &m)
    result = np.zeros(n, dtype=bool)
    if n == 0 or m == 0:
        return result
    cdef uint8_t[::1] heard = result.view(np.uint8)
    cdef uint64_t at, h
    cdef uint64_t ahead[AHEAD]
    cdef const uint64_t* w
    cdef uint64_t size = _size(m)
    cdef Pair* slots = <Pair*>calloc(size, sizeof(Pair))     # (tag, listener + 1)
    if slots == NULL:
        raise MemoryError()
    with nogil:
        for i in range(m):                       # each distinct local end once
            w = _words(ends, i)
            h = _local_hash(w[0], w[1], w)
            if not _local_end_in(slots, size, ends, w[0], w[1], w, h):
                at = _home(h, size)
                while slots[at].row:
                    at = _next(at, size)
                slots[at].tag = <uint32_t>h
                slots[at].row = <uint32_t>(i + 1)
        for k in range(n + AHEAD):               # own address, hashed ahead; then wildcard
            i = k - AHEAD
            if i >= 0:
                w = _words(row_words, i)
                heard[i] = (_local_end_in(slots, size, ends, w[0], w[1], w, ahead[i % AHEAD])
                            or _local_end_in(slots, size, ends, 0, 0, w,
                                             _local_hash(0, 0, w)))
            if k < n:
                w = _words(row_words, k)
                ahead[k % AHEAD] = _local_hash(w[0], w[1], w)
                __builtin_prefetch(&slots[_home(ahead[k % AHEAD], size)])
        free(slots)
    return result
