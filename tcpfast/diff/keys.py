"""Connection keys, and the vectorised set operations on them.

A connection's key is (family, local address, local port, remote address,
remote port, network namespace): the first six 64-bit words of a row, with
state and timer masked out of the fifth. Two rows with the same key are the
same connection when their socket inodes are "compatible": equal, or one of
them 0 (the kernel prints inode 0 for TIME_WAIT sockets and pending
handshakes); among them, a row with the very same inode is preferred.

Two implementations give the same results: the compiled ``_keys`` (hash
tables that store each key once) and numpy (rows grouped by key with a sort,
then first rows per group), the fallback under ``TCPFAST_PURE``. Both take
O(n) or O(n log n) whatever the input: any number of rows may share a key
(every connection to one listener has the same local end).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..schema import CONNECTION_DTYPE, FIELD_OFFSETS, check_rows, compact_rows, take_rows

ROW_WORDS = CONNECTION_DTYPE.itemsize // 8
PORTS_WORD = FIELD_OFFSETS["local_port"] // 8
NETNS_WORD = FIELD_OFFSETS["netns"] // 8
INODE_WORD = FIELD_OFFSETS["inode"] // 8
#: Word 4 holds the ports, the family, the state and the timer: keep ports and family.
KEY_MASK = np.frombuffer(b"\xff" * 5 + b"\x00" * 3, dtype=np.uint64)[0]
_MULTIPLIERS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
     0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB],
    dtype=np.uint64,
)


def row_words(rows: np.ndarray) -> np.ndarray:
    """The rows as an (n, ROW_WORDS) uint64 view (a copy only if they are not contiguous)."""
    if rows.dtype != CONNECTION_DTYPE:
        raise TypeError(f"expected rows of CONNECTION_DTYPE, got {rows.dtype}")
    return np.ascontiguousarray(rows).view(np.uint64).reshape(-1, ROW_WORDS)


def key_words(rows: np.ndarray) -> np.ndarray:
    """(n, 6) uint64: each row's key, the words that say which connection it is."""
    words = row_words(rows)
    keys = words[:, : NETNS_WORD + 1].copy()
    keys[:, PORTS_WORD] &= KEY_MASK
    return keys


def _hash(columns: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of an (n, k <= 7) uint64 array."""
    hashed = np.zeros(len(columns), dtype=np.uint64)
    for column in range(columns.shape[1]):
        hashed ^= columns[:, column] * _MULTIPLIERS[column]
        hashed ^= hashed >> np.uint64(29)
    hashed *= _MULTIPLIERS[0]
    hashed ^= hashed >> np.uint64(32)
    return hashed


def group_ids(columns: np.ndarray) -> np.ndarray:
    """For each row of an (n, k) uint64 array, the id of its group of equal rows
    (ids 0.., in no particular order): sorted by hash, and checked in full; when
    two different rows share a hash, an exact sort of the columns decides."""
    if len(columns) == 0:
        return np.zeros(0, dtype=np.int64)
    hashes = _hash(columns)
    order = np.argsort(hashes)
    hashes = hashes[order]
    differs = hashes[1:] != hashes[:-1]
    neighbours = np.flatnonzero(~differs)                   # equal hashes: equal rows?
    if (columns[order[neighbours]] != columns[order[neighbours + 1]]).any():
        order = np.lexsort(columns.T[::-1])                 # a collision: sort exactly
        ordered = columns[order]
        differs = (ordered[1:] != ordered[:-1]).any(axis=1)
    ids = np.empty(len(columns), dtype=np.int64)
    ids[order] = np.concatenate([[0], np.cumsum(differs)])
    return ids


def _first_of(ids: np.ndarray, count: int, where: np.ndarray) -> np.ndarray:
    """For each id in 0..count-1, the first index i with ``where[i]`` and
    ``ids[i] == id``, or -1."""
    index = np.flatnonzero(where)
    first = np.full(count, len(ids), dtype=np.int64)
    np.minimum.at(first, ids[index], index)
    first[first == len(ids)] = -1
    return first


def match_numpy(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """For each needle row, the index of a haystack row that is the same connection
    (the first with its very inode if any, else the first compatible one), or -1."""
    check_rows(needles, "needles")
    check_rows(haystack, "haystack")
    n = len(needles)
    if n == 0 or len(haystack) == 0:
        return np.full(n, -1, dtype=np.int64)
    columns = np.concatenate([key_words(needles), key_words(haystack)])
    inodes = np.concatenate([needles["inode"], haystack["inode"]])
    ids = group_ids(columns)
    pairs = group_ids(np.concatenate([columns, inodes[:, None]], axis=1))   # key and inode
    groups = int(ids.max()) + 1
    in_haystack = np.arange(len(ids)) >= n
    first = np.maximum(_first_of(ids, groups, in_haystack) - n, -1)
    zero = np.maximum(_first_of(ids, groups, in_haystack & (inodes == 0)) - n, -1)
    exact = np.maximum(_first_of(pairs, int(pairs.max()) + 1, in_haystack & (inodes != 0)) - n, -1)
    needle_ids, needle_inodes = ids[:n], inodes[:n]
    compatible = np.where(needle_inodes == 0, first[needle_ids], -1)
    same_inode = np.where(needle_inodes == 0, zero[needle_ids], exact[pairs[:n]])
    result = np.where(same_inode >= 0, same_inode, compatible)
    return np.where(result >= 0, result, zero[needle_ids])


def duplicates_numpy(rows: np.ndarray) -> np.ndarray:
    """Mask of rows to drop so that each connection is listed once (numpy)."""
    check_rows(rows, "rows")
    if len(rows) == 0:
        return np.zeros(0, dtype=bool)
    columns = key_words(rows)
    inodes = rows["inode"]
    ids = group_ids(columns)
    pairs = group_ids(np.concatenate([columns, inodes[:, None]], axis=1))   # key and inode
    first_of_pair = _first_of(pairs, int(pairs.max()) + 1, np.ones(len(rows), dtype=bool))
    repeated = first_of_pair[pairs] != np.arange(len(rows))
    with_inode = np.zeros(int(ids.max()) + 1, dtype=bool)
    with_inode[ids[inodes != 0]] = True
    return repeated | ((inodes == 0) & with_inode[ids])


# Word 4 of a row without the remote port (bytes 2-3): local port, family, state, timer.
_WITHOUT_REMOTE_PORT = np.frombuffer(b"\xff\xff\x00\x00\xff\xff\xff\xff", dtype=np.uint64)[0]
_REMOTE_ADDR_WORDS = slice(2, 4)
_LOCAL_ADDR_WORDS = slice(0, 2)


def _local_ends(rows: np.ndarray, wildcard: bool = False) -> np.ndarray:
    """Copies of the rows reduced to their local end: family, local address (the
    wildcard's, with ``wildcard``), local port and namespace; whole 64-bit words
    at a time (numpy writes a structured field row by row)."""
    words = row_words(rows).copy()
    words[:, _REMOTE_ADDR_WORDS] = 0
    if wildcard:
        words[:, _LOCAL_ADDR_WORDS] = 0
    words[:, PORTS_WORD] &= _WITHOUT_REMOTE_PORT
    words[:, INODE_WORD] = 0
    return words.view(rows.dtype).reshape(-1)


def listened_numpy(rows: np.ndarray, listeners: np.ndarray) -> np.ndarray:
    """Mask of rows whose local end (family, local address, local port, namespace) is
    a listener's, or whose family's wildcard address with that port is (numpy)."""
    check_rows(rows, "rows")
    check_rows(listeners, "listeners")
    if len(rows) == 0 or len(listeners) == 0:
        return np.zeros(len(rows), dtype=bool)
    heard = _local_ends(listeners)
    inbound = match(_local_ends(rows), heard) >= 0                # the listener's own address
    inbound |= match(_local_ends(rows, wildcard=True), heard) >= 0  # its family's wildcard
    return inbound


_compiled = backend.compiled("_keys")
_match = _compiled.match if _compiled else match_numpy
_duplicates = _compiled.duplicates if _compiled else duplicates_numpy
_listened = _compiled.listened if _compiled else listened_numpy


def match(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """For each ``needles`` row, the index of a ``haystack`` row that is the same
    connection, or -1: what lets a poll carry what it knows of a connection
    (when it was first seen, its direction) over to the next."""
    return _match(_contiguous(needles), _contiguous(haystack))


def matched(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """Mask of ``needles`` rows that are the same connection as some ``haystack`` row."""
    return match(needles, haystack) >= 0


def listened(rows: np.ndarray, listeners: np.ndarray) -> np.ndarray:
    """Mask of rows that some listener (a LISTEN row of ``listeners``) accepted: their
    local end is the listener's, or their family's wildcard address with that port is."""
    return _listened(_contiguous(rows), _contiguous(listeners))


def unique(rows: np.ndarray, *, in_place: bool = False) -> tuple[np.ndarray, int]:
    """Rows with each connection kept once, in their order, and how many were dropped.

    A row is dropped when the same connection is listed earlier with the same
    inode, or it has inode 0 and the connection is also listed with a real one.
    ``in_place``: the kept rows are moved to the front of ``rows`` itself (a read's
    own array: at 10^6 rows a copy is 80 MB more at the peak of a poll).
    """
    drop = _duplicates(_contiguous(rows))
    dropped = int(drop.sum())
    if not dropped:
        return rows, 0
    return (compact_rows(rows, ~drop) if in_place else take_rows(rows, ~drop)), dropped


def _contiguous(rows: np.ndarray) -> np.ndarray:
    if rows.dtype != CONNECTION_DTYPE:
        raise TypeError(f"expected rows of CONNECTION_DTYPE, got {rows.dtype}")
    return np.ascontiguousarray(rows)


def same_socket(needles: np.ndarray, haystack: np.ndarray,
                by_key: np.ndarray | None = None) -> np.ndarray:
    """For each ``needles`` row (a destroyed socket's, say), the ``haystack`` row that is
    that very socket, or -1: the same connection (key, compatible inodes) with the same
    cookie where both rows have one, or, for the haystack rows ``by_key`` marks, the
    key alone (a TIME_WAIT entry gets a cookie of its own unless its socket had one).
    A needle whose key the kernel cut (a socket reset on close loses its local address
    and remote port) is found by its cookie alone."""
    index = match(needles, haystack)
    found = index >= 0
    mine = needles["cookie"]
    at = np.where(found, index, 0)
    theirs = haystack["cookie"][at] if len(haystack) else mine
    trusted = by_key[at] if by_key is not None and len(haystack) else False
    found &= (mine == 0) | (theirs == 0) | (mine == theirs) | trusted
    index = np.where(found, index, -1)
    lost = np.flatnonzero(~found & (mine != 0))
    if len(lost) and len(haystack):
        wanted = mine[lost]
        order = np.argsort(wanted)
        ordered = wanted[order]
        cookies = haystack["cookie"]
        at = np.minimum(np.searchsorted(ordered, cookies), len(ordered) - 1)
        hits = np.flatnonzero((ordered[at] == cookies) & (cookies != 0))
        index[lost[order[at[hits]]]] = hits
    return index
