"""A poll's events as lines on standard output: text or JSON, in batches, written whole."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone

from ..events import Poll, RowEvents
from . import alerts, report
from .writer import LineWriter

#: Lines are formatted and written this many at a time, so a first poll of a
#: million sockets never holds a million strings.
BATCH_ROWS = 4096

EVENT_KINDS = ("new", "closed")


class EventPrinter:
    """Prints the chosen kinds of connection events of each poll, one line each, then
    its port scans and blocks (there only when detection is on)."""

    def __init__(self, writer: LineWriter, *, json: bool = False,
                 events: Collection[str] = ("new",), show_direction: bool = False) -> None:
        self._writer = writer
        self._json = json
        self._events = events
        self._show_direction = show_direction

    def _lines(self, events: RowEvents, when: datetime) -> list[str]:
        if self._json:
            return report.json_lines(events, when)
        return report.text_lines(events, when, show_direction=self._show_direction)

    def __call__(self, poll: Poll) -> None:
        when = datetime.fromtimestamp(int(poll.time), timezone.utc)
        for events in (poll.new_and_closed, poll.new, poll.closed):
            kinds = ("new", "closed") if events.event == "new_and_closed" else (events.event,)
            if not any(kind in self._events for kind in kinds):   # it is both: either asks for it
                continue
            for start in range(0, len(events), BATCH_ROWS):
                self._writer.write(self._lines(events[start:start + BATCH_ROWS], when))
        if self._json:
            self._writer.write(alerts.scan_json_lines(poll.scans, when)
                               + alerts.block_json_lines(poll.blocks, when))
        else:
            self._writer.write(alerts.scan_text_lines(poll.scans, when)
                               + alerts.block_text_lines(poll.blocks, when))
