"""A poll's events as lines on standard output: text or JSON, in batches, written whole."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timezone

from ..events import Poll, Stopped
from . import alerts
from .lines import LineFormatter
from .writer import LineWriter

#: Lines are formatted and written this many at a time, so a first poll of a
#: million sockets never holds a million strings. The compiled formatter holds
#: no string a line (it writes into one reused buffer): its batches are larger.
BATCH_ROWS = 4096
COMPILED_BATCH_ROWS = 65536

EVENT_KINDS = ("new", "closed")
_KINDS = {"new_and_closed": ("new", "closed")}


class EventPrinter:
    """Prints the chosen kinds of connection events of each poll, one line each, then
    its port scans and blocks (there only when detection is on).

    ``cancelled`` is looked at before each batch: once it says so, printing
    stops there (raising ``Stopped``), so a stop is answered within one batch.
    """

    def __init__(self, writer: LineWriter, *, json: bool = False,
                 events: Collection[str] = ("new",), show_direction: bool = False,
                 show_bytes: bool = False, show_namespace: bool = False,
                 cancelled: Callable[[], bool] | None = None) -> None:
        self._writer = writer
        self._json = json
        self._events = events
        self._cancelled = cancelled
        self._lines = LineFormatter(json=json, show_direction=show_direction,
                                    show_bytes=show_bytes, show_namespace=show_namespace)
        self._batch_rows = COMPILED_BATCH_ROWS if self._lines.compiled else BATCH_ROWS
        self._due = 0                       # lines of the poll being printed not written yet

    def _alerts(self, poll: Poll, when: datetime) -> list[str]:
        if self._json:
            return (alerts.scan_json_lines(poll.scans, when)
                    + alerts.block_json_lines(poll.blocks, when))
        return alerts.scan_text_lines(poll.scans, when) + alerts.block_text_lines(poll.blocks, when)

    def __call__(self, poll: Poll) -> None:
        when = datetime.fromtimestamp(int(poll.time), timezone.utc)
        chosen = [events for events in (poll.new_and_closed, poll.new, poll.closed)
                  if any(kind in self._events   # new_and_closed is both: either asks for it
                         for kind in _KINDS.get(events.event, (events.event,)))]
        self._due = sum(map(len, chosen)) + len(poll.scans) + len(poll.blocks)
        for events in chosen:
            for start in range(0, len(events), self._batch_rows):
                self._lines.write(events[start:start + self._batch_rows], when, self._write)
        if poll.scans or poll.blocks:
            self._stop_if_asked()
            self._writer.write(self._alerts(poll, when))

    def _write(self, lines: memoryview) -> None:
        """A part of whole lines (a MiB at most): a stop is taken before each."""
        self._stop_if_asked()
        self._due -= self._writer.write_bytes(lines)

    def _stop_if_asked(self) -> None:
        if self._cancelled is not None and self._cancelled():
            raise Stopped(unwritten=self._due)
