"""Which parser runs: the compiled one, or the pure-Python fallback.

``TCPFAST_PURE=1`` chooses the fallback on purpose. Without it the compiled
module is used when it imports; when it does not, the package still works and
says so once on stderr.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

from . import pureparse
from .schema import CONNECTION_DTYPE

ParseInto = Callable[[bytes, int, np.ndarray, int, bool], "tuple[int, int, int]"]

PURE_REQUESTED: bool = os.environ.get("TCPFAST_PURE", "") not in ("", "0")


class MalformedRowsWarning(UserWarning):
    """Rows that did not follow the kernel's format were skipped."""


def _load_compiled() -> ParseInto | None:
    if PURE_REQUESTED:
        return None
    try:
        from . import _parse
    except ImportError as error:
        warnings.warn(
            f"tcpfast: compiled parser unavailable ({error}); using the slower "
            "pure-Python parser (set TCPFAST_PURE=1 to choose it on purpose)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    size, offsets = _parse.row_layout()
    expected = {name: CONNECTION_DTYPE.fields[name][1] for name in CONNECTION_DTYPE.names}
    if size != CONNECTION_DTYPE.itemsize or offsets != expected:
        raise ImportError(f"tcpfast._parse was built for another row layout ({size} bytes, "
                          f"{offsets}): rebuild it with 'pip install .'")
    return _parse.parse_into


_compiled_parse_into = _load_compiled()

#: Whether the compiled parser is in use.
ACCELERATED: bool = _compiled_parse_into is not None

#: The parser in use: ``parse_into(data, family, out, start, final)``, see
#: :func:`tcpfast.pureparse.parse_into`.
parse_into: ParseInto = _compiled_parse_into or pureparse.parse_into


def _parse_with(parse_into_fn: ParseInto, data: bytes, family: int) -> tuple[np.ndarray, int]:
    out = np.empty(data.count(b"\n") + 1, dtype=CONNECTION_DTYPE)
    end, _, malformed = parse_into_fn(data, family, out, 0, True)
    return out[:end], malformed


def parse_counted(data: bytes, family: int) -> tuple[np.ndarray, int]:
    """One table's text to ``(rows, malformed_line_count)``, with the parser in use."""
    return _parse_with(parse_into, data, family)


def warn_malformed(malformed: int, what: str, stacklevel: int = 3) -> None:
    """Say that rows were skipped: a library must not drop data silently."""
    if malformed:
        warnings.warn(f"{what}: skipped {malformed} malformed row(s)",
                      MalformedRowsWarning, stacklevel=stacklevel)


def parse(data: bytes, family: int) -> np.ndarray:
    """One /proc table's text to rows (compiled, unless the fallback is in use).

    ``family`` is 4 for /proc/net/tcp and 6 for /proc/net/tcp6. Malformed
    lines are skipped; a :class:`MalformedRowsWarning` says how many.
    """
    rows, malformed = parse_counted(data, family)
    warn_malformed(malformed, f"tcp{'6' if family == 6 else ''} table")
    return rows


def parse_pure(data: bytes, family: int) -> np.ndarray:
    """The same as :func:`parse`, always in pure Python."""
    rows, malformed = _parse_with(pureparse.parse_into, data, family)
    warn_malformed(malformed, f"tcp{'6' if family == 6 else ''} table")
    return rows
