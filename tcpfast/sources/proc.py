"""Reading /proc/net/tcp and /proc/net/tcp6 into rows, parsing as the text streams in."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..decode import parsing
from ..diff import keys

#: The tables of one network namespace, relative to a proc root, and their family.
TABLES: tuple[tuple[str, int], ...] = (("net/tcp", 4), ("net/tcp6", 6))

# Reads are gathered into a chunk this big before parsing: large enough that a
# parser call costs nothing per row, small enough to stay in cache.
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Snapshot:
    """One poll's rows, and what the reading had to skip, fold or cut short."""

    rows: np.ndarray
    malformed: int = 0
    duplicates: int = 0
    complete: bool = True     # False: the read hit its deadline, rows may be missing


def _read_into(collector: parsing.RowCollector, path: str, family: int,
               stop_reading: Callable[[], bool] | None) -> bool:
    """Parse one table into ``collector`` as it is read; False if cut short.

    The kernel hands /proc files out about a page per read(); reads are
    gathered into a reused chunk, and each full chunk is parsed at once, so
    the text of a large table is never held whole. ``stop_reading()`` is
    asked after every read(); once it is true, the lines in hand are parsed
    and reading stops.
    """
    chunk = bytearray(CHUNK_BYTES)
    filled = 0
    complete = True
    with open(path, "rb", buffering=0) as table:
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
    """
    collector = parsing.RowCollector(first_block_rows=size_hint + size_hint // 8)

    def stop_reading() -> bool:
        return ((deadline is not None and time.monotonic() > deadline)
                or (cancelled is not None and cancelled()))

    complete = True
    for name, family in TABLES:
        if family not in families:
            continue
        try:
            complete &= _read_into(collector, os.path.join(proc_root, name), family, stop_reading)
        except FileNotFoundError:
            if family == 4:
                raise
    rows, duplicates = keys.unique(collector.rows())
    return Snapshot(rows, collector.malformed, duplicates, complete)


def snapshot(proc_root: str = "/proc") -> np.ndarray:
    """The TCP sockets of one network namespace (tcp and tcp6) as rows."""
    result = read_snapshot(proc_root)
    parsing.warn_malformed(result.malformed, os.path.join(proc_root, "net/tcp*"))
    return result.rows
