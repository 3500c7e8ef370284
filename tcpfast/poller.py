"""One poll from start to end: read the source, find the events, hand them on, say what went wrong.

The loop (``loop.run_every``) calls :meth:`Poller.poll`; the command line only
wires options to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .detect.coverage import Coverage
from .detect.scans import ScanDetector
from .enrich.containers import HolderLookup
from .enrich.direction import IN
from .enrich.owners import OwnerFinder
from .events import Poll, RowEvents, Stopped
from .filters import Filter
from .outputs.firewall import Firewall
from .sources import Snapshot, Source
from .sources.base import stop_reading_at
from .sources.netlink_events import DestroyEvents
from .watch import Watcher

Warn = Callable[[str], None]


class Poller:
    """Reads one snapshot per call, turns it into events, passes them to ``emit``.

    A read stops at ``read_timeout`` seconds (None: reads to the end). A poll
    cut short that way is counted; the first of a run of them is reported
    once on ``warn``, and so is the first complete poll after them. What a cut
    poll did not reach is reported by the next poll that reaches it.
    With ``owners``, each new connection's holding process is looked up; with
    ``holders``, the container or pod of each event's connection; with
    ``selection``, only the connections it keeps are reported (port-scan
    detection still sees every one); with
    ``detector``, port scans are looked for among the inbound connections that
    appeared (whatever state they are in, whatever is printed), and with
    ``firewall`` their sources are blocked. Once ``cancelled`` says so (a stop
    signal), the read and the owner lookup end early and the poll is given up
    (``Stopped``), before anything of it is emitted.
    """

    def __init__(self, watcher: Watcher, emit: Callable[[Poll], None], warn: Warn, *,
                 source: Source, read_timeout: float | None = None,
                 cancelled: Callable[[], bool] | None = None,
                 owners: OwnerFinder | None = None, detector: ScanDetector | None = None,
                 firewall: Firewall | None = None,
                 destroyed: DestroyEvents | None = None,
                 holders: HolderLookup | None = None,
                 selection: Filter | None = None,
                 coverage: Coverage | None = None) -> None:
        self._watcher = watcher
        self._owners = owners
        self._detector = detector
        self._firewall = firewall
        self._emit = emit
        self._warn = warn
        self.source = source
        self._read_timeout = read_timeout
        self._cancelled = cancelled
        self._destroyed = destroyed         # sockets destroyed between polls
        self._holders = holders             # which container or pod holds each connection
        self._selection = selection or None  # which connections are reported
        self._coverage = coverage           # the kernel's count of opens against what was seen
        self._lost_seen = 0                 # destroy events' losses counted so far
        self._losing = False                # the last poll's drain found new losses
        self._failure_said = False
        self._expected_rows = 0
        self.cut_short_polls = 0            # all of them, since the start
        self._unread_in_a_row = 0
        self._cut_in_a_row = 0
        self.polls = 0

    @property
    def where(self) -> str:
        return self.source.where

    def read(self) -> Snapshot:
        """One snapshot of the source, within the read timeout."""
        deadline = None if self._read_timeout is None else time.monotonic() + self._read_timeout
        snapshot = self.source.read(size_hint=self._expected_rows,
                                    stop_reading=stop_reading_at(deadline, self._cancelled))
        self._expected_rows = len(snapshot.rows)
        return snapshot

    def poll(self) -> Poll:
        """Read, diff, emit; OSError from the read propagates (the caller decides)."""
        if self._coverage is not None:
            self._coverage.sample()
        snapshot = self.read()
        # Drained after the read: every socket destroyed before it is heard of now, so a
        # socket the read did not list (gone already) is never left for a later poll.
        destroyed = self._destroyed.drain_with_info() if self._destroyed is not None else None
        self._stop_if_asked()
        self.polls += 1
        if snapshot.malformed:
            self._warn(f"skipped {snapshot.malformed} malformed row(s) in {self.where}")
        self._track_cut_short(snapshot)
        self._track_unread(snapshot)
        lost = self._track_destroy_events()
        result = self._watcher.update(snapshot, time.time(), destroyed)
        result = replace(result, events_lost=lost, counted=None if self._coverage is None
                         else self._coverage.count(result.established))
        kept = None
        if self._selection is not None:      # before owners: only what is reported is looked up
            kept = self._selection.mask(result.new.rows, result.new.direction)
            result = replace(result, new=result.new.where(kept),
                             closed=self._select(result.closed),
                             new_and_closed=self._select(result.new_and_closed))
        if self._owners is not None:        # the closed sockets' fd numbers are the likeliest reused
            owners = self._owners.owners_of(result.new.rows, result.closed.rows,
                                            cancelled=self._cancelled)
            self._stop_if_asked()
            self._watcher.name_owners(owners, kept)
            result = replace(result, new=replace(result.new, owners=owners))
        if self._holders is not None:
            self._holders.update()
            result = replace(result, new=self._holders.annotate(result.new),
                             closed=self._holders.annotate(result.closed),
                             new_and_closed=self._holders.annotate(result.new_and_closed))
        if self._detector is not None and not result.first:
            # Inbound connections that appeared, or came and went between polls (a
            # connect() scan closes each probe at once: only netlink's events see those).
            inbound = [events.rows[events.direction == IN]
                       for events in (result.appeared, result.new_and_closed)]
            scans = self._detector.update(np.concatenate(inbound), result.time)
            blocks = self._firewall.block_scanners(scans, self._warn) if self._firewall else []
            result = replace(result, scans=tuple(scans), blocks=tuple(blocks))
        self._emit(result)
        return result

    def _select(self, events: RowEvents) -> RowEvents:
        assert self._selection is not None
        return events.where(self._selection.mask(events.rows, events.direction))

    def _track_unread(self, snapshot: Snapshot) -> None:
        """Namespaces found but not read (gone, moved or refused between the scan and
        the read): said at the first poll of a run of them, and when it ends."""
        if snapshot.unread:
            if not self._unread_in_a_row:
                self._warn(f"could not read {snapshot.unread} network namespace(s) of "
                           f"{self.where}: their connections are kept as they were until a "
                           "poll reads them or finds them gone (said once until all are read)")
            self._unread_in_a_row += 1
        elif self._unread_in_a_row:
            self._warn(f"every namespace read again after {self._unread_in_a_row} poll(s)")
            self._unread_in_a_row = 0

    def _track_destroy_events(self) -> int:
        """Destroy events the kernel dropped (a full receive buffer) or that waited past
        their cap, and a receiving thread that died: said once a run, never silent.
        Returns the losses since the last poll."""
        events = self._destroyed
        if events is None:
            return 0
        lost = events.lost - self._lost_seen
        losing = lost > 0
        if losing and not self._losing:
            self._warn("destroyed-socket events were lost (the receive buffer was full): "
                       "connections that opened and closed meanwhile may be missed (said "
                       "once until a poll loses none; tcpfast_destroy_events_lost_total "
                       "counts them)")
        self._lost_seen, self._losing = events.lost, losing
        if events.failure and not self._failure_said:
            self._failure_said = True
            self._warn(f"destroyed-socket events stopped ({events.failure}): connections "
                       "shorter than the interval are not seen from now on")
        return lost

    def _stop_if_asked(self) -> None:
        if self._cancelled is not None and self._cancelled():
            raise Stopped

    def _track_cut_short(self, snapshot: Snapshot) -> None:
        if not snapshot.complete:             # by the timeout: a stop raised Stopped before
            self.cut_short_polls += 1
            self._cut_in_a_row += 1
            if self._cut_in_a_row == 1:
                self._warn(f"reading {self.where} took over {self._read_timeout:g} s "
                           f"(--read-timeout): cut short after {len(snapshot.rows)} rows; "
                           "connections past the cut are reported when a later poll reaches "
                           "them (said once until polls complete again)")
        elif snapshot.complete and self._cut_in_a_row:
            self._warn(f"reads of {self.where} complete again after "
                       f"{self._cut_in_a_row} poll(s) cut short")
            self._cut_in_a_row = 0
