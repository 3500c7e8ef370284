"""A poll's events as lines on standard output: text or JSON, in batches, written whole."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone

from ..events import Poll
from . import alerts
from .lines import LineFormatter
from .writer import LineWriter

#: Lines are formatted and written this many at a time, so a first poll of a
#: million sockets never holds a million strings. The compiled formatter holds
#: no string a line (it writes into one reused buffer): its batches are larger.
BATCH_ROWS = 4096
COMPILED_BATCH_ROWS = 65536

EVENT_KINDS = ("new", "closed")


class EventPrinter:
    """Prints the chosen kinds of connection events of each poll, one line each, then
    its port scans and blocks (there only when detection is on)."""

    def __init__(self, writer: LineWriter, *, json: bool = False,
                 events: Collection[str] = ("new",), show_direction: bool = False,
                 show_bytes: bool = False, show_namespace: bool = False) -> None:
        self._writer = writer
        self._json = json
        self._events = events
        self._lines = LineFormatter(json=json, show_direction=show_direction,
                                    show_bytes=show_bytes, show_namespace=show_namespace)
        self._batch_rows = COMPILED_BATCH_ROWS if self._lines.compiled else BATCH_ROWS

    def __call__(self, poll: Poll) -> None:
        when = datetime.fromtimestamp(int(poll.time), timezone.utc)
        for events in (poll.new_and_closed, poll.new, poll.closed):
            kinds = ("new", "closed") if events.event == "new_and_closed" else (events.event,)
            if not any(kind in self._events for kind in kinds):   # it is both: either asks for it
                continue
            for start in range(0, len(events), self._batch_rows):
                self._lines.write(events[start:start + self._batch_rows], when,
                                  self._writer.write_bytes)
        if self._json:
            self._writer.write(alerts.scan_json_lines(poll.scans, when)
                               + alerts.block_json_lines(poll.blocks, when))
        else:
            self._writer.write(alerts.scan_text_lines(poll.scans, when)
                               + alerts.block_text_lines(poll.blocks, when))
