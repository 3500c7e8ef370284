"""A poll's events as lines on standard output: text or JSON, in batches, written whole."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timezone

from ..events import Poll, RowEvents, Stopped
from . import alerts, report
from .writer import LineWriter

#: Lines are formatted and written this many at a time, so a first poll of a
#: million sockets never holds a million strings.
BATCH_ROWS = 4096

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
                 cancelled: Callable[[], bool] | None = None) -> None:
        self._writer = writer
        self._json = json
        self._events = events
        self._show_direction = show_direction
        self._cancelled = cancelled

    def _lines(self, events: RowEvents, when: datetime) -> list[str]:
        if self._json:
            return report.json_lines(events, when)
        return report.text_lines(events, when, show_direction=self._show_direction)

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
        due = sum(map(len, chosen)) + len(poll.scans) + len(poll.blocks)
        for events in chosen:
            for start in range(0, len(events), BATCH_ROWS):
                self._stop_if_asked(due)
                batch = self._lines(events[start:start + BATCH_ROWS], when)
                self._writer.write(batch)
                due -= len(batch)
        if poll.scans or poll.blocks:
            self._stop_if_asked(due)
            self._writer.write(self._alerts(poll, when))

    def _stop_if_asked(self, due: int) -> None:
        """``due``: the poll's lines not written yet."""
        if self._cancelled is not None and self._cancelled():
            raise Stopped(unwritten=due)
