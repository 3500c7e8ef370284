"""An event batch's lines as bytes, whole lines, ready to write: the compiled formatter
(``_format``) when the compiled modules are in use, else report's, the reference."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from types import ModuleType

import numpy as np

from .. import backend
from ..events import RowEvents
from . import report
from .writer import encode_lines

#: The compiled formatter's buffer, reused call after call (fresh memory is slow to
#: touch); it grows only for a line longer than itself.
BUFFER_BYTES = 1 << 20

#: The compiled formatter when the compiled modules are in use, else None.
IN_USE: ModuleType | None = backend.compiled("_format")


def _utc_seconds(when: datetime) -> int:
    """The whole second of ``when``, a UTC time (the only zone the compiled formatter writes)."""
    if when.utcoffset() != timedelta(0):
        raise ValueError(f"the poll's time must be UTC, not {when.isoformat()}")
    return int(when.replace(microsecond=0).timestamp())


class LineFormatter:
    """Formats event batches as text lines, or JSON lines (``json``), with the text
    line's optional parts as asked (``report.text_lines``). ``compiled``: the compiled
    formatter to use (by default the one in use, if any); None: the reference.
    ``buffer_bytes``: where the compiled formatter writes, reused call after call."""

    def __init__(self, *, json: bool = False, show_direction: bool = False,
                 show_bytes: bool = False, show_namespace: bool = False,
                 compiled: ModuleType | None = IN_USE,
                 buffer_bytes: int = BUFFER_BYTES) -> None:
        self.json = json
        self.show_direction = show_direction
        self.show_bytes = show_bytes
        self.show_namespace = show_namespace
        self._module = compiled
        self._buffer_bytes = buffer_bytes
        self._buffer = np.empty(0, np.uint8)

    @property
    def compiled(self) -> bool:
        """Whether lines come from the compiled formatter."""
        return self._module is not None

    def write(self, events: RowEvents, when: datetime, write: Callable[[memoryview], None]) -> None:
        """Hand the lines of ``events`` to ``write`` in one or more parts of whole lines;
        ``when``: the poll's time, for events without one of their own. A part is valid
        only during the call that receives it (its memory is reused)."""
        if self._module is None:
            write(memoryview(self._reference_bytes(events, when)))
            return
        seconds = _utc_seconds(when)              # (the compiled formatter checks the columns)
        if len(self._buffer) == 0:
            self._buffer = np.empty(self._buffer_bytes, np.uint8)
        start = 0
        while start < len(events):
            done, size = self._module.format_into(
                self._buffer, events.rows, events.event, events.direction, start,
                json_lines=self.json, poll_time=seconds, duration=events.duration,
                times=events.times, unknown=events.unknown, info=events.info,
                holder=events.holder, holders=events.holders, owners=events.owners,
                show_direction=self.show_direction, show_bytes=self.show_bytes,
                show_namespace=self.show_namespace)
            if done == start:                  # not one line fits
                self._buffer = np.empty(2 * len(self._buffer), np.uint8)
                continue
            write(self._buffer.data[:size])
            start = done

    def format(self, events: RowEvents, when: datetime) -> bytes:
        """The lines of ``events`` as one bytes object (a copy: ``write`` is for output)."""
        parts: list[bytes] = []
        self.write(events, when, lambda part: parts.append(bytes(part)))
        return b"".join(parts)

    def _reference_bytes(self, events: RowEvents, when: datetime) -> bytes:
        if self.json:
            lines = report.json_lines(events, when)
        else:
            lines = report.text_lines(events, when, show_direction=self.show_direction,
                                      show_bytes=self.show_bytes,
                                      show_namespace=self.show_namespace)
        return encode_lines(lines)
