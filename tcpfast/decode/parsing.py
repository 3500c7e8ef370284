"""The parser in use, and parsing whole tables or streams of text into rows."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from .. import backend
from ..schema import CONNECTION_DTYPE, concatenate_rows
from . import pureparse

ParseInto = Callable[[bytes | memoryview, int, np.ndarray, int, bool], "tuple[int, int, int]"]


class MalformedRowsWarning(UserWarning):
    """Rows that did not follow the kernel's format were skipped."""


_compiled = backend.compiled("_parse")

#: The parser in use: ``parse_into(data, family, out, start, final)``, see
#: :func:`tcpfast.decode.pureparse.parse_into`.
parse_into: ParseInto = _compiled.parse_into if _compiled else pureparse.parse_into


class RowCollector:
    """Parses table text, fed in chunks of any size, into one array of rows.

    Rows go into blocks, each twice the size of the one before; nothing needs
    to know in advance how many rows the text holds, and the text is never held
    whole. A first block sized from a hint (the last poll's count, or the size
    of the text: :meth:`reserve`) makes the usual case a single block, with no
    copy at the end; pages of a block that no row reaches are never touched, so
    never resident. Rows are copied as 64-bit words (numpy copies a structured
    dtype field by field, ~7x slower).
    """

    def __init__(self, parse_into_fn: ParseInto | None = None, first_block_rows: int = 0,
                 block_rows: int = 1 << 16) -> None:
        self.malformed = 0
        self._parse_into = parse_into_fn or parse_into
        self._full: list[np.ndarray] = []
        self._block = np.empty(max(first_block_rows, block_rows), dtype=CONNECTION_DTYPE)
        self._end = 0

    def feed(self, data: bytes | memoryview, family: int, final: bool) -> int:
        """Parse what ``data`` holds; returns the bytes used (the rest is a partial line)."""
        view = memoryview(data)
        used = 0
        while True:
            self._end, consumed, malformed = self._parse_into(
                view[used:], family, self._block, self._end, final)
            used += consumed
            self.malformed += malformed
            if self._end < len(self._block):      # the text ran out before the block
                return used
            self._full.append(self._block)
            self._block = np.empty(2 * len(self._block), dtype=CONNECTION_DTYPE)
            self._end = 0

    def reserve(self, more_rows: int) -> None:
        """Make room for ``more_rows`` rows beyond those parsed (a table's size says how
        many it holds, about), so that they go into one block."""
        wanted = self._end + more_rows
        if wanted <= len(self._block):
            return
        if self._end == 0:
            del self._block                       # not held while its successor is made
            self._block = np.empty(wanted, dtype=CONNECTION_DTYPE)
            return
        block = np.empty(wanted, dtype=CONNECTION_DTYPE)
        block[: self._end].view(np.uint64)[:] = self._block[: self._end].view(np.uint64)
        self._block = block

    def rows(self) -> np.ndarray:
        return concatenate_rows([*self._full, self._block[: self._end]])


def parse_counted(data: bytes, family: int,
                  parse_into_fn: ParseInto | None = None) -> tuple[np.ndarray, int]:
    """One table's text to ``(rows, malformed_line_count)``, with the parser in use
    (or ``parse_into_fn``)."""
    # Kernel rows are 150 bytes or more: this first block holds them all.
    collector = RowCollector(parse_into_fn, first_block_rows=len(data) // 128 + 1)
    collector.feed(data, family, final=True)
    return collector.rows(), collector.malformed


def warn_malformed(malformed: int, what: str, stacklevel: int = 3) -> None:
    """Say that rows were skipped: a library must not drop data silently."""
    if malformed:
        warnings.warn(f"{what}: skipped {malformed} malformed row(s)",
                      MalformedRowsWarning, stacklevel=stacklevel)


def _parse_and_warn(data: bytes, family: int, parse_into_fn: ParseInto | None) -> np.ndarray:
    rows, malformed = parse_counted(data, family, parse_into_fn)
    warn_malformed(malformed, f"tcp{'6' if family == 6 else ''} table", stacklevel=4)
    return rows


def parse(data: bytes, family: int) -> np.ndarray:
    """One /proc table's text to rows (compiled, unless the fallback is in use).

    ``family`` is 4 for /proc/net/tcp and 6 for /proc/net/tcp6. Malformed
    lines are skipped; a :class:`MalformedRowsWarning` says how many.
    """
    return _parse_and_warn(data, family, None)


def parse_pure(data: bytes, family: int) -> np.ndarray:
    """The same as :func:`parse`, always in pure Python."""
    return _parse_and_warn(data, family, pureparse.parse_into)
