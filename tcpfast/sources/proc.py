"""A namespace's /proc/net/tcp and /proc/net/tcp6 as a source, parsed as the text streams in."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..decode import parsing
from ..diff import keys
from .base import Snapshot, StopReading, Warn, stop_reading_at
from .netns import namespace_id
from .snmp import SnmpCounters

if TYPE_CHECKING:
    from .netlink_events import DestroyEvents

#: The tables of one network namespace, relative to a proc root, and their family.
TABLES: tuple[tuple[str, int], ...] = (("net/tcp", 4), ("net/tcp6", 6))

# Reads are gathered into a chunk this big before parsing: large enough that a
# parser call costs nothing per row, small enough to stay in cache.
CHUNK_BYTES = 256 * 1024

# Kernel rows are 150 bytes or more: a recorded table of this many bytes per row
# holds no more rows than are reserved for it.
MIN_ROW_BYTES = 128


class NamespaceMoved(OSError):
    """A table opened is not the namespace's it was meant to be (its process moved or
    exited, and its pid went to another): nothing of it was read."""


def _read_into(collector: parsing.RowCollector, path: str, family: int,
               stop_reading: StopReading | None, expect: tuple[int, int] | None = None) -> bool:
    """Parse one table into ``collector`` as it is read; False if cut short.

    The kernel hands /proc files out about a page per read(); reads are
    gathered into a reused chunk, and each full chunk is parsed at once, so
    the text of a large table is never held whole. ``stop_reading()`` is
    asked after every read(); once it is true, the lines in hand are parsed
    and reading stops. ``expect``: the (st_dev, st_ino) the opened table must have
    (NamespaceMoved otherwise).
    """
    chunk = bytearray(CHUNK_BYTES)
    filled = 0
    complete = True
    with open(path, "rb", buffering=0) as table:
        if expect is not None:
            opened = os.fstat(table.fileno())
            if (opened.st_dev, opened.st_ino) != expect:
                raise NamespaceMoved(errno.ESTALE, f"{path} is another namespace's now")
        size = os.fstat(table.fileno()).st_size    # 0 in /proc; a recorded table's size
        if size:
            collector.reserve(size // MIN_ROW_BYTES + 1)
        view = memoryview(chunk)
        while True:
            got = table.readinto(view[filled:])
            filled += got
            final = got == 0
            if not final and stop_reading is not None and stop_reading():
                final, complete = True, False
                filled = chunk.rfind(b"\n", 0, filled) + 1      # whole lines only
            if filled < len(chunk) and not final:
                continue
            consumed = collector.feed(view[:filled], family, final)
            if final:
                break
            if consumed == 0:                  # one line longer than the chunk: widen it
                view.release()
                chunk.extend(bytes(len(chunk)))
                view = memoryview(chunk)
            else:                              # keep the partial last line for the next parse
                chunk[: filled - consumed] = chunk[consumed:filled]
                filled -= consumed
        view.release()
    return complete


def read_table(path: str, family: int) -> tuple[np.ndarray, int]:
    """One table's rows and its count of malformed lines."""
    collector = parsing.RowCollector()
    _read_into(collector, path, family, stop_reading=None)
    return collector.rows(), collector.malformed


def read_snapshot(proc_root: str = "/proc", *, size_hint: int = 0,
                  deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                  families: tuple[int, ...] = (4, 6)) -> Snapshot:
    """Both tables of one namespace, each connection once.

    A missing tcp6 table (a host without IPv6) is an empty one; a missing
    tcp table is an error. One read can list a row twice (the kernel reads
    page by page and drops its locks in between): it is kept once.
    ``size_hint`` (rows expected, e.g. the last poll's) saves copies;
    ``deadline`` (time.monotonic()) bounds the time spent reading: each table
    stops there, after at least its first chunk, and the snapshot says so;
    so it does as soon as ``cancelled()`` is true (a stop signal, say).
    ``families=(4,)`` reads only /proc/net/tcp (tcp6 costs a walk of every socket).
    Rows carry the namespace's identifier (:func:`tcpfast.sources.netns.namespace_id`).
    """
    return read_tables(proc_root, size_hint=size_hint,
                       stop_reading=stop_reading_at(deadline, cancelled), families=families,
                       netns=namespace_id(proc_root))


def read_tables(proc_root: str, *, size_hint: int = 0, stop_reading: StopReading | None = None,
                families: tuple[int, ...] = (4, 6), netns: int = 0,
                table_key: tuple[int, int] | None = None) -> Snapshot:
    """read_snapshot's work, stopped by ``stop_reading()`` (see ProcTables.read); rows
    get ``netns`` (when not 0). With ``table_key`` (the namespace's net/tcp, as
    discovery found it), tcp6 is read first and tcp must still be that table: a
    process moves from namespace to namespace one way, so both were its namespace's."""
    collector = parsing.RowCollector(first_block_rows=size_hint + size_hint // 8)
    complete = True
    for name, family in reversed(TABLES) if table_key else TABLES:
        if family not in families:
            continue
        try:
            complete &= _read_into(collector, os.path.join(proc_root, name), family, stop_reading,
                                   table_key if family == 4 else None)
        except FileNotFoundError:
            if family == 4:
                raise
    rows = collector.rows()
    malformed = collector.malformed
    del collector                        # its blocks, once joined, are not held through unique()
    rows, duplicates = keys.unique(rows, in_place=True)
    if netns:
        rows["netns"] = netns
    return Snapshot(rows, malformed, duplicates, complete)


def snapshot(proc_root: str = "/proc") -> np.ndarray:
    """The TCP sockets of one network namespace (tcp and tcp6) as rows."""
    result = read_snapshot(proc_root)
    parsing.warn_malformed(result.malformed, os.path.join(proc_root, "net/tcp*"))
    return result.rows


class ProcTables:
    """The tables of the namespace ``proc_root`` lists (``/proc``: ours; ``/proc/PID``: that
    process's), read whole at each call (see :func:`read_snapshot`).

    Rows are stamped with ``netns``, the namespace's identifier (None: as
    :func:`tcpfast.sources.netns.namespace_id` finds it; 0: none, as for a
    directory of recorded tables); ``table_key``: see :func:`read_tables`.
    """

    kind = "proc"

    def __init__(self, proc_root: str = "/proc", *, families: tuple[int, ...] = (4, 6),
                 netns: int | None = None, table_key: tuple[int, int] | None = None) -> None:
        self.proc_root = proc_root
        self.netns = namespace_id(proc_root) if netns is None else netns
        self._families = families
        self._table_key = table_key
        self._counters: SnmpCounters | None = None

    @property
    def where(self) -> str:
        return f"{self.proc_root}/net/tcp*"

    def read(self, *, size_hint: int = 0, stop_reading: StopReading | None = None) -> Snapshot:
        return read_tables(self.proc_root, size_hint=size_hint, stop_reading=stop_reading,
                           families=self._families, netns=self.netns, table_key=self._table_key)

    def destroy_events(self, warn: Warn) -> DestroyEvents | None:
        """None: a poll of the tables sees what they list (TIME_WAIT included)."""
        return None

    def opened(self) -> int | None:
        if not self.netns:                    # recorded tables: no namespace counts them
            return None
        if self._counters is None:
            self._counters = SnmpCounters(self.proc_root)
        return self._counters.read().opened

    def close(self) -> None:
        if self._counters is not None:
            self._counters.close()
            self._counters = None
