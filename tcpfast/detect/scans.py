"""Port scans: one remote address connecting to more than N distinct local ports in W seconds.

The window is one numpy structured array, one entry per (source, local port)
seen in the last W seconds, sorted by a 64-bit key so that each source's
entries are contiguous. A poll appends its inbound connections, drops what
has expired, re-sorts (a stable sort of an array sorted but for its tail,
nearly linear) and folds repeated (source, port) pairs into one: no Python
loop touches a row. Python only runs per reported scan.

A source is its address, whichever namespace saw it (``--all-netns``: one
source probing several pods is one scan), except a loopback address: each
namespace has a loopback of its own, so 127.0.0.1 of one namespace and of
another are two sources (``scope``: the row's ``netns``; 0 for other sources).

Memory is bounded by ``max_entries`` (source, port) pairs, 64 bytes each
(about 34 MB at the default 2**19, twice that while sorting), whatever the
number of sources: past it the oldest entries are dropped first (counted in
``evicted``), which can only delay a detection, never invent one. Within the
bound the number of entries is at most the inbound connections of the window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .networks import AllowList, IPNetwork, address_of, is_ipv4, source_words

#: One (source, local port) pair of the window. ``key`` orders the window:
#: an IPv4 source's address (exact), an IPv6 or loopback source's 47-bit hash
#: (of its address and scope) with the top bit set, shifted over the port.
#: ``scope``: the namespace of a loopback source, else 0. ``reported``: already
#: part of a report.
WINDOW_DTYPE = np.dtype([
    ("key", np.uint64), ("high", np.uint64), ("low", np.uint64), ("scope", np.uint64),
    ("local_high", np.uint64), ("local_low", np.uint64), ("time", np.float64),
    ("reported", np.bool_),
], align=True)

#: ``ports`` at most: a scan is more than ``ports`` distinct local ports, of 65535 (1-65535).
MAX_SCAN_PORTS = 65534

# Whole entries are moved as opaque bytes: numpy copies a structured array
# field by field, several times slower than the same bytes as one void item.
_ENTRY_BYTES = np.dtype((np.void, WINDOW_DTYPE.itemsize))
_PORT_BITS = np.uint64(16)
_PORT_MASK = np.uint64(0xFFFF)
_IPV6_FLAG = np.uint64(1 << 47)
_HASH_MULTIPLIERS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
                     np.uint64(0x165667B19E3779F9))
_MAPPED_LOOPBACK = np.uint64(0xFFFF7F)          # ::ffff:127.0.0.0/104, shifted right by 24


@dataclass(frozen=True)
class PortScan:
    """One source that crossed the threshold: what it touched within the window."""

    remote: str                 # the source address, IPv4 for IPv4-mapped sources
    local: str                  # the local address of its latest connection
    family: int                 # 4 or 6
    ports: tuple[int, ...]      # distinct local ports within the window, sorted
    window: float               # seconds


def _is_loopback(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """127.0.0.0/8 (IPv4-mapped) and ::1: addresses every namespace has its own of."""
    return (high == 0) & (((low >> np.uint64(24)) == _MAPPED_LOOPBACK) | (low == 1))


def _source_codes(high: np.ndarray, low: np.ndarray, scope: np.ndarray) -> np.ndarray:
    """48-bit source codes: an IPv4 address itself; an IPv6 address's hash, or a scoped
    (loopback) address's hash with its scope, top bit set."""
    codes = low & np.uint64(0xFFFF_FFFF)
    hashed = ~is_ipv4(high, low) | (scope != 0)
    if hashed.any():
        mixed = (high[hashed] * _HASH_MULTIPLIERS[0] ^ low[hashed] * _HASH_MULTIPLIERS[1]
                 ^ scope[hashed] * _HASH_MULTIPLIERS[2])
        mixed ^= mixed >> np.uint64(29)
        codes[hashed] = _IPV6_FLAG | (mixed >> np.uint64(17))
    return codes


def _other_source(entries: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Whether entry ``at + 1`` is another source than entry ``at`` (address or scope)."""
    return ((entries["high"][at] != entries["high"][at + 1])
            | (entries["low"][at] != entries["low"][at + 1])
            | (entries["scope"][at] != entries["scope"][at + 1]))


def _select(entries: np.ndarray, selector: np.ndarray) -> np.ndarray:
    """``entries[selector]`` (an index or a mask), copied as whole entries."""
    return entries.view(_ENTRY_BYTES)[selector].view(WINDOW_DTYPE)


class ScanDetector:
    """Finds port scans in the stream of new inbound connections, poll by poll.

    ``local``: when given, local clients are not scanners: a source on loopback,
    or inside the networks ``local()`` returns (this host's own, asked only when
    a scan is about to be reported), is not reported, as if reported already.
    """

    def __init__(self, ports: int = 3, window: float = 60.0, allow: AllowList | None = None,
                 max_entries: int = 2**19,
                 local: Callable[[], Iterable[IPNetwork]] | None = None) -> None:
        if not 1 <= ports <= MAX_SCAN_PORTS or not window > 0 or max_entries < 1:
            raise ValueError(f"ports must be from 1 to {MAX_SCAN_PORTS}, max_entries >= 1 "
                             "and window > 0")
        self.ports = ports
        self.window = float(window)
        self.allow = allow or AllowList()
        self.max_entries = max_entries
        self._local = local
        self.evicted = 0
        self._entries = np.zeros(0, dtype=WINDOW_DTYPE)
        self._exact_keys = True     # the window's keys alone tell its sources apart

    def __len__(self) -> int:
        """Entries, (source, local port) pairs, held in the window now."""
        return len(self._entries)

    def update(self, rows: np.ndarray, now: float) -> list[PortScan]:
        """Take one poll's new inbound rows (CONNECTION_DTYPE) seen at ``now`` (seconds).

        Returns the sources that now hold more than ``ports`` distinct local
        ports within the window and have a port not yet reported: a scan is
        reported when it crosses the threshold, again when it goes on to more
        ports, and again after a quiet window (its entries expire).
        """
        entries = _select(self._entries, self._entries["time"] > now - self.window)
        arrived = self._arrivals(rows, now)
        if len(arrived) == 0:
            self._entries = entries
            return []
        entries = self._fold(np.concatenate([entries.view(_ENTRY_BYTES),
                                             arrived.view(_ENTRY_BYTES)]).view(WINDOW_DTYPE))
        if len(entries) > self.max_entries:
            entries = self._evict_oldest(entries)
        self._entries = entries
        return self._report(entries)

    def _arrivals(self, rows: np.ndarray, now: float) -> np.ndarray:
        high, low = source_words(rows["remote_addr"], rows["family"])
        keep = ~self.allow.contains(high, low) if self.allow else slice(None)
        high, low = high[keep], low[keep]
        scope = np.where(_is_loopback(high, low), rows["netns"][keep], np.uint64(0))
        local_high, local_low = source_words(rows["local_addr"][keep], rows["family"][keep])
        arrived = np.empty(len(high), dtype=WINDOW_DTYPE)
        arrived["key"] = ((_source_codes(high, low, scope) << _PORT_BITS)
                          | rows["local_port"][keep])
        arrived["high"], arrived["low"], arrived["scope"] = high, low, scope
        arrived["local_high"], arrived["local_low"] = local_high, local_low
        arrived["time"] = now
        arrived["reported"] = False
        return arrived

    def _fold(self, entries: np.ndarray) -> np.ndarray:
        """Sort by source, keep one entry per (source, port): the latest, reported if any was.

        The stable sort keeps arrival order within a pair, so the last is the
        latest. Keys are exact for IPv4 sources; equal IPv6 codes are checked
        against the addresses and scopes, and a collision (two sources, one
        code) falls back to an exact sort on them for this poll.
        """
        entries = _select(entries, np.argsort(entries["key"], kind="stable"))
        key = entries["key"]
        code = key >> _PORT_BITS
        hashed_pairs = np.flatnonzero((code[1:] == code[:-1]) & (code[1:] >= _IPV6_FLAG))
        self._exact_keys = not _other_source(entries, hashed_pairs).any()
        if self._exact_keys:
            same_pair = key[1:] == key[:-1]
        else:
            entries = _select(entries, np.lexsort((key & _PORT_MASK, entries["scope"],
                                                   entries["low"], entries["high"])))
            key = entries["key"]
            same_pair = (~_other_source(entries, np.arange(len(entries) - 1))
                         & ((key[1:] & _PORT_MASK) == (key[:-1] & _PORT_MASK)))
        if not same_pair.any():
            return entries
        starts = np.flatnonzero(np.concatenate([[True], ~same_pair]))
        reported = np.logical_or.reduceat(entries["reported"], starts)
        folded = _select(entries, np.concatenate([starts[1:] - 1, [len(entries) - 1]]))
        folded["reported"] = reported
        return folded

    def _evict_oldest(self, entries: np.ndarray) -> np.ndarray:
        excess = len(entries) - self.max_entries
        oldest = np.argpartition(entries["time"], excess - 1)[:excess]
        keep = np.ones(len(entries), dtype=bool)
        keep[oldest] = False
        self.evicted += excess
        return _select(entries, keep)

    def _report(self, entries: np.ndarray) -> list[PortScan]:
        if self._exact_keys:
            code = entries["key"] >> _PORT_BITS
            new_source = code[1:] != code[:-1]
        else:
            new_source = _other_source(entries, np.arange(len(entries) - 1))
        starts = np.flatnonzero(np.concatenate([[True], new_source]))
        counts = np.diff(np.concatenate([starts, [len(entries)]]))
        unreported = np.logical_or.reduceat(~entries["reported"], starts)
        scanning = np.flatnonzero((counts > self.ports) & unreported)
        scans = []
        own: AllowList | None = None
        for start, count in zip(starts[scanning].tolist(), counts[scanning].tolist()):
            source = entries[start:start + count]
            entries["reported"][start:start + count] = True
            latest = source[np.argmax(source["time"])]
            remote = address_of(latest["high"], latest["low"])
            if self._local is not None:
                if remote.is_loopback:
                    continue
                if own is None:
                    own = AllowList(self._local())
                if remote in own:
                    continue
            ports = np.unique((source["key"] & _PORT_MASK).astype(np.uint16))
            scans.append(PortScan(
                remote=str(remote),
                local=str(address_of(latest["local_high"], latest["local_low"])),
                family=remote.version, ports=tuple(ports.tolist()), window=self.window))
        return scans
