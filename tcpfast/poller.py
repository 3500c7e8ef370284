"""One poll from start to end: read the source, find the events, hand them on, say what went wrong.

The loop (``loop.run_every``) calls :meth:`Poller.poll`; the command line only
wires options to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .detect.scans import ScanDetector
from .enrich.direction import IN
from .enrich.owners import OwnerFinder
from .events import Poll, Stopped
from .outputs.firewall import Firewall
from .sources import Snapshot, read_snapshot
from .sources.netlink import NetlinkSource
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
    ``detector``, port scans are looked for among the inbound connections that
    appeared (whatever state they are in, whatever is printed), and with
    ``firewall`` their sources are blocked. Once ``cancelled`` says so (a stop
    signal), the read and the owner lookup end early and the poll is given up
    (``Stopped``), before anything of it is emitted.
    """

    def __init__(self, watcher: Watcher, emit: Callable[[Poll], None], warn: Warn, *,
                 proc_root: str = "/proc", read_timeout: float | None = None,
                 cancelled: Callable[[], bool] | None = None,
                 owners: OwnerFinder | None = None, detector: ScanDetector | None = None,
                 firewall: Firewall | None = None,
                 netlink: NetlinkSource | None = None,
                 destroyed: DestroyEvents | None = None) -> None:
        self._watcher = watcher
        self._owners = owners
        self._detector = detector
        self._firewall = firewall
        self._emit = emit
        self._warn = warn
        self._proc_root = proc_root
        self._read_timeout = read_timeout
        self._cancelled = cancelled
        self._netlink = netlink             # reads through sock_diag instead of the tables
        self._destroyed = destroyed         # sockets destroyed between polls
        self._expected_rows = 0
        self.cut_short_polls = 0            # all of them, since the start
        self._cut_in_a_row = 0
        self.polls = 0

    @property
    def where(self) -> str:
        if self._netlink is not None and self._netlink.using_netlink:
            return "the sock_diag dump"
        return f"{self._netlink.fallback_root if self._netlink else self._proc_root}/net/tcp*"

    def read(self) -> Snapshot:
        """One snapshot of the source, within the read timeout."""
        started = time.monotonic()
        deadline = None if self._read_timeout is None else started + self._read_timeout
        if self._netlink is not None:
            snapshot = self._netlink.read(size_hint=self._expected_rows, deadline=deadline,
                                          cancelled=self._cancelled)
        else:
            snapshot = read_snapshot(self._proc_root, size_hint=self._expected_rows,
                                     deadline=deadline, cancelled=self._cancelled)
        self._expected_rows = len(snapshot.rows)
        return snapshot

    def poll(self) -> Poll:
        """Read, diff, emit; OSError from the read propagates (the caller decides)."""
        # Drained before the read: a socket destroyed after it is judged next poll,
        # against a baseline that then holds it if this read listed it.
        destroyed = self._destroyed.drain() if self._destroyed is not None else None
        snapshot = self.read()
        self._stop_if_asked()
        self.polls += 1
        if snapshot.malformed:
            self._warn(f"skipped {snapshot.malformed} malformed row(s) in {self.where}")
        self._track_cut_short(snapshot)
        short_lived = (None if destroyed is None
                       else self._watcher.opened_and_closed(*destroyed, listeners=snapshot.rows))
        result = self._watcher.update(snapshot, time.time())
        if self._owners is not None:        # the closed sockets' fd numbers are the likeliest reused
            owners = self._owners.owners_of(result.new.rows, result.closed.rows,
                                            cancelled=self._cancelled)
            self._stop_if_asked()
            self._watcher.name_owners(owners)
            result = replace(result, new=replace(result.new, owners=owners))
        if short_lived is not None:
            result = replace(result, new_and_closed=short_lived)
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
