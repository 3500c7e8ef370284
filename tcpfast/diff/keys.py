"""Connection keys as machine words, and the vectorised set operations on them.

A connection's key is (family, local address, local port, remote address,
remote port): the first 37 bytes of a row. Rows are compared as five 64-bit
words (state and timer masked out); a 64-bit hash of those words says where
to look, and keys are then compared word by word, so a hash collision can
never merge two connections. Two implementations give the same results: the
compiled ``_keys`` (one hash-table pass) and numpy (sorted hashes, then every
pair of rows with equal hashes checked), the fallback under ``TCPFAST_PURE``.

Two rows with the same key are the same connection when their socket inodes
are "compatible": equal, or one of them 0 (the kernel prints inode 0 for
TIME_WAIT sockets and pending handshakes).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..schema import CONNECTION_DTYPE, FIELD_OFFSETS

_ROW_WORDS = CONNECTION_DTYPE.itemsize // 8
_INODE_WORD = FIELD_OFFSETS["inode"] // 8
#: Word 4 holds the ports, the family, the state and the timer: keep ports and family.
KEY_MASK = np.frombuffer(b"\xff" * 5 + b"\x00" * 3, dtype=np.uint64)[0]
_MULTIPLIERS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
     0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD],
    dtype=np.uint64,
)


def row_words(rows: np.ndarray) -> np.ndarray:
    """The rows as an (n, 8) uint64 view (a copy only if they are not contiguous)."""
    if rows.dtype != CONNECTION_DTYPE:
        raise TypeError(f"expected rows of CONNECTION_DTYPE, got {rows.dtype}")
    return np.ascontiguousarray(rows).view(np.uint64).reshape(-1, _ROW_WORDS)


def _key_hash(words: np.ndarray, key_mask: np.uint64) -> np.ndarray:
    hashed = words[:, 4] & key_mask
    hashed *= _MULTIPLIERS[4]
    for column in range(4):
        hashed ^= words[:, column] * _MULTIPLIERS[column]
    hashed ^= hashed >> np.uint64(31)
    hashed *= _MULTIPLIERS[0]
    hashed ^= hashed >> np.uint64(29)
    return hashed


def _same_key(words_a: np.ndarray, index_a: np.ndarray, words_b: np.ndarray,
              index_b: np.ndarray, key_mask: np.uint64) -> np.ndarray:
    a, b = words_a[index_a], words_b[index_b]
    return (a[:, :4] == b[:, :4]).all(axis=1) & (((a[:, 4] ^ b[:, 4]) & key_mask) == 0)


def _equal_key_pairs(words_a: np.ndarray, words_b: np.ndarray,
                     key_mask: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with key(a[i]) == key(b[j]), as two index arrays."""
    hash_a, hash_b = _key_hash(words_a, key_mask), _key_hash(words_b, key_mask)
    order_b = np.argsort(hash_b)
    sorted_b = hash_b[order_b]
    low = np.searchsorted(sorted_b, hash_a, side="left")
    counts = np.searchsorted(sorted_b, hash_a, side="right") - low
    index_a = np.repeat(np.arange(len(hash_a)), counts)
    first = np.cumsum(counts) - counts
    index_b = order_b[np.repeat(low - first, counts) + np.arange(len(index_a))]
    same = _same_key(words_a, index_a, words_b, index_b, key_mask)
    return index_a[same], index_b[same]


def _compatible(inode_a: np.ndarray, inode_b: np.ndarray) -> np.ndarray:
    return (inode_a == inode_b) | (inode_a == 0) | (inode_b == 0)


def match_numpy(words_n: np.ndarray, words_h: np.ndarray, key_mask: np.uint64) -> np.ndarray:
    """For each needle row, the index of a haystack row that is the same
    connection, or -1 (numpy)."""
    index_n, index_h = _equal_key_pairs(words_n, words_h, key_mask)
    same = _compatible(words_n[index_n, _INODE_WORD], words_h[index_h, _INODE_WORD])
    result = np.full(len(words_n), -1, dtype=np.int64)
    result[index_n[same]] = index_h[same]
    return result


def duplicates_numpy(words: np.ndarray, key_mask: np.uint64) -> np.ndarray:
    """Mask of rows to drop so that each connection is listed once (numpy)."""
    index_a, index_b = _equal_key_pairs(words, words, key_mask)
    inode_a, inode_b = words[index_a, _INODE_WORD], words[index_b, _INODE_WORD]
    repeated = (inode_a == inode_b) & (index_b < index_a)
    superseded = (inode_a == 0) & (inode_b != 0)
    drop = np.zeros(len(words), dtype=bool)
    drop[index_a[repeated | superseded]] = True
    return drop


_compiled = backend.compiled("_keys")
_match = _compiled.match if _compiled else match_numpy
_duplicates = _compiled.duplicates if _compiled else duplicates_numpy


def match(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """For each ``needles`` row, the index of a ``haystack`` row that is the same
    connection, or -1: what lets a poll carry what it knows of a connection
    (when it was first seen, its direction) over to the next."""
    return _match(row_words(needles), row_words(haystack), KEY_MASK)


def matched(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """Mask of ``needles`` rows that are the same connection as some ``haystack`` row."""
    return match(needles, haystack) >= 0


def unique(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows with each connection kept once, in their order, and how many were dropped.

    A row is dropped when the same connection is listed earlier with the same
    inode, or it has inode 0 and the connection is also listed with a real one.
    """
    drop = _duplicates(row_words(rows), KEY_MASK)
    dropped = int(drop.sum())
    return (rows[~drop] if dropped else rows), dropped
