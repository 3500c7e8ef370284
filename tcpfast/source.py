"""Reading /proc/net/tcp and /proc/net/tcp6 into rows, parsing as the text streams in."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import keys, parsing

#: The tables of one network namespace, relative to a proc root, and their family.
TABLES: tuple[tuple[str, int], ...] = (("net/tcp", 4), ("net/tcp6", 6))

# Reads are gathered into a chunk this big before parsing: large enough that a
# parser call costs nothing per row, small enough to stay in cache.
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Snapshot:
    """One poll's rows, and what the reading had to skip or fold."""

    rows: np.ndarray
    malformed: int = 0
    duplicates: int = 0


def read_table(path: str, family: int) -> tuple[np.ndarray, int]:
    """Parse one table as it is read: ``(rows, malformed_line_count)``.

    The kernel hands /proc files out about a page per read(); reads are
    gathered into a reused chunk, and each full chunk is parsed at once, so
    the text of a large table is never held whole.
    """
    collector = parsing.RowCollector(family)
    chunk = bytearray(CHUNK_BYTES)
    filled = 0
    with open(path, "rb", buffering=0) as table:
        view = memoryview(chunk)
        while True:
            got = table.readinto(view[filled:])
            filled += got
            final = got == 0
            if filled < len(chunk) and not final:
                continue
            consumed = collector.feed(view[:filled], final)
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
    return collector.rows(), collector.malformed


def read_snapshot(proc_root: str = "/proc") -> Snapshot:
    """Both tables of one namespace, each connection once.

    A missing tcp6 table (a host without IPv6) is an empty one; a missing
    tcp table is an error. One read can list a row twice (the kernel reads
    page by page and drops its locks in between): it is kept once.
    """
    parts, malformed = [], 0
    for name, family in TABLES:
        try:
            rows, bad = read_table(os.path.join(proc_root, name), family)
        except FileNotFoundError:
            if family == 6:
                continue
            raise
        parts.append(rows)
        malformed += bad
    rows, duplicates = keys.unique(np.concatenate(parts))
    return Snapshot(rows, malformed, duplicates)


def snapshot(proc_root: str = "/proc") -> np.ndarray:
    """The TCP sockets of one network namespace (tcp and tcp6) as rows."""
    result = read_snapshot(proc_root)
    parsing.warn_malformed(result.malformed, os.path.join(proc_root, "net/tcp*"))
    return result.rows
