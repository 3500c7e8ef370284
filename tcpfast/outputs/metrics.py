"""Prometheus metrics (``--metrics [ADDR:]PORT``): counters, a state gauge, a poll histogram.

No label holds an address or a port, so the number of series is fixed:
directions x families for connections, the kernel's states for sockets.
Counting is vectorised (one ``bincount`` a poll), never a loop over rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)

from .. import __version__, backend
from ..enrich.direction import DIRECTION_NAMES
from ..events import Poll, RowEvents
from ..schema import KNOWN_BYTES_RECEIVED, KNOWN_BYTES_SENT, STATE_NAMES
from ..sources import Snapshot

FAMILIES = (4, 6)
DEFAULT_ADDRESS = "127.0.0.1"
#: Poll durations from a tiny table (~1 ms) to a million sockets cut short (tens of s).
POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0)
#: Connection lifetimes, from a request (~10 ms) to a day-long session.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
                    14400.0, 86400.0)


def parse_listen_address(text: str) -> tuple[str, int]:
    """``PORT``, ``ADDR:PORT`` or ``[IPV6]:PORT`` -> (address, port); ValueError if not."""
    address, _, port_text = text.rpartition(":")
    address = address.strip("[]") or DEFAULT_ADDRESS
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected [ADDR:]PORT with a port from 1 to 65535, not {text!r}")
    return address, int(port_text)


class Metrics:
    """tcpfast's metrics in a registry of their own (several watchers can share a process)."""

    def __init__(self, source: str = "proc", registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()        # no *_created series: half the output, no use here
        self.registry = registry or CollectorRegistry()
        labels = ("direction", "family")
        self.new = Counter("tcpfast_new_connections", "Connections seen opening, after the "
                           "first poll (those were open before tcpfast started).", labels,
                           registry=self.registry)
        self.closed = Counter("tcpfast_closed_connections", "Connections seen closing.",
                              labels, registry=self.registry)
        for direction in DIRECTION_NAMES.values():
            for family in FAMILIES:
                self.new.labels(direction, str(family))
                self.closed.labels(direction, str(family))
        self.port_scans = Counter("tcpfast_port_scans", "Port scans reported.",
                                  registry=self.registry)
        self.blocks = Counter("tcpfast_blocks", "Source addresses added to the nftables "
                              "block sets.", registry=self.registry)
        self.malformed = Counter("tcpfast_malformed_rows", "Rows of /proc/net/tcp* that "
                                 "could not be parsed and were skipped.",
                                 registry=self.registry)
        self.cut_short = Counter("tcpfast_cut_short_polls", "Polls whose read --read-timeout "
                                 "cut short (rows past the cut are reported by a later poll "
                                 "that reaches them).", registry=self.registry)
        self.polls = Counter("tcpfast_polls", "Polls done.", registry=self.registry)
        self.kernel_opened = Counter(
            "tcpfast_kernel_opened_connections", "Sockets the kernel's TCP counters say were "
            "established (ActiveOpens + PassiveOpens - AttemptFails of each namespace "
            "watched), after the first poll.", registry=self.registry)
        self.missed = Counter(
            "tcpfast_connections_missed", "Of those, the sockets no poll saw (opened and "
            "closed between polls, unheard of): the kernel's count minus tcpfast's, a "
            "poll's shortfall settled by the polls of the next 1.5 s, never below 0.", registry=self.registry)
        self.events_lost = Counter(
            "tcpfast_destroy_events_lost", "Times destroyed-socket events were dropped (the "
            "kernel's receive buffer full, or too many waiting for a poll).",
            registry=self.registry)
        self.namespaces = Gauge("tcpfast_watched_namespaces", "Network namespaces read at the "
                                "last poll (more than one with --all-netns).",
                                registry=self.registry)
        self.unread = Counter("tcpfast_unread_namespaces", "Network namespaces found but not "
                              "read (gone, moved or refused since they were found), summed "
                              "over polls.", registry=self.registry)
        self.bytes_sent = Counter("tcpfast_closed_connection_sent_bytes", "Bytes sent by "
                                  "closed connections as the kernel counts them "
                                  "(tcpi_bytes_acked: the opener's SYN and a FIN count one "
                                  "each), where known (netlink's destroy events).", labels,
                                  registry=self.registry)
        self.bytes_received = Counter("tcpfast_closed_connection_received_bytes", "Bytes "
                                      "received by closed connections as the kernel counts "
                                      "them (tcpi_bytes_received: the peer's FIN counts one "
                                      "when it arrived), where known.", labels,
                                      registry=self.registry)
        self.bytes_unknown = Counter("tcpfast_closed_connections_unknown_bytes", "Closed "
                                     "connections whose bytes are not known (the /proc "
                                     "source, a missed destroy event, a reset that cleared "
                                     "them): left out of the byte counters.", labels,
                                     registry=self.registry)
        for counter in (self.bytes_sent, self.bytes_received, self.bytes_unknown):
            for direction in DIRECTION_NAMES.values():
                for family in FAMILIES:
                    counter.labels(direction, str(family))
        self.lifetimes = Histogram("tcpfast_closed_connection_duration_seconds", "How long "
                                   "closed connections were seen open (from the poll that "
                                   "first listed them: at most one interval short), where "
                                   "known.", buckets=DURATION_BUCKETS, registry=self.registry)
        self.sockets = Gauge("tcpfast_tcp_connection_states", "TCP sockets by state at the "
                             "last poll (as node_tcp_connection_states).", ("state",),
                             registry=self.registry)
        self.last_poll = Gauge("tcpfast_last_poll_timestamp_seconds", "Unix time of the last "
                               "poll: a watcher that stopped polling stops moving it.",
                               registry=self.registry)
        self.poll_seconds = Histogram("tcpfast_poll_duration_seconds", "Time to read and "
                                      "diff one poll.", buckets=POLL_BUCKETS,
                                      registry=self.registry)
        Info("tcpfast_build", "Version, compiled or pure-Python code, and the socket source.",
             registry=self.registry).info({
                 "version": __version__,
                 "implementation": "compiled" if backend.ACCELERATED else "pure",
                 "source": source})
        self._state_codes = np.array(sorted(STATE_NAMES), dtype=np.intp)

    def serve(self, address: str, port: int) -> None:
        """Serve /metrics on a daemon thread; OSError if the address cannot be bound."""
        start_http_server(port, addr=address, registry=self.registry)

    def record_snapshot(self, snapshot: Snapshot) -> None:
        """A poll's read: the sockets by state, the rows it skipped, whether it was cut."""
        self.polls.inc()
        self.last_poll.set(time.time())
        self.malformed.inc(snapshot.malformed)
        self.namespaces.set(snapshot.namespaces)
        self.unread.inc(snapshot.unread)
        if not snapshot.complete:
            self.cut_short.inc()
        counts = np.bincount(snapshot.rows["state"], minlength=256)[self._state_codes]
        for code, count in zip(self._state_codes.tolist(), counts.tolist()):
            self.sockets.labels(STATE_NAMES[code].lower()).set(count)

    def record(self, poll: Poll) -> None:
        """A poll's sockets and events; the first poll's sockets are not new connections
        (they were open before tcpfast started: a restart is not a burst in ``rate()``)."""
        self.record_snapshot(poll.snapshot)
        if not poll.first:
            self._count(self.new, poll.new.rows, poll.new.direction)
        self._count(self.closed, poll.closed.rows, poll.closed.direction)
        for counter in (self.new, self.closed):           # opened and closed between polls
            self._count(counter, poll.new_and_closed.rows, poll.new_and_closed.direction)
        for events in (poll.closed, poll.new_and_closed):
            self.record_closed(events)
        if poll.counted is not None:
            self.kernel_opened.inc(poll.counted.opened)
            self.missed.inc(poll.counted.missed)
        self.events_lost.inc(poll.events_lost)
        self.port_scans.inc(len(poll.scans))
        self.blocks.inc(len(poll.blocks))

    def record_closed(self, events: RowEvents) -> None:
        """What closed connections (``closed`` or ``new_and_closed`` events) carried: their
        bytes by direction and family where ``info`` knows them, their durations where
        known (not NaN)."""
        if not len(events):
            return
        if events.info is None:
            self._count(self.bytes_unknown, events.rows, events.direction)
        else:
            known = events.info["known"]
            for counter, field, bit in ((self.bytes_sent, "bytes_sent", KNOWN_BYTES_SENT),
                                        (self.bytes_received, "bytes_received",
                                         KNOWN_BYTES_RECEIVED)):
                self._count(counter, events.rows, events.direction,
                            np.where(known & bit, events.info[field], 0))
            unknown = (known & (KNOWN_BYTES_SENT | KNOWN_BYTES_RECEIVED)) == 0
            self._count(self.bytes_unknown, events.rows[unknown], events.direction[unknown])
        if events.duration is not None:
            for duration in events.duration[~np.isnan(events.duration)].tolist():
                self.lifetimes.observe(duration)

    def timed(self, poll: Callable[[], Poll]) -> Callable[[], Poll]:
        """``poll`` that also observes how long each call takes (read, diff and output)."""
        def timed_poll() -> Poll:
            started = time.monotonic()
            try:
                return poll()
            finally:
                self.poll_seconds.observe(time.monotonic() - started)
        return timed_poll

    @staticmethod
    def _count(counter: Counter, rows: np.ndarray, directions: np.ndarray,
               amounts: np.ndarray | None = None) -> None:
        """Add each row's amount (None: 1) to its direction's and family's series."""
        ipv6 = (rows["family"] == 6).astype(np.intp)
        cells = directions.astype(np.intp) * 2 + ipv6
        if amounts is None:
            totals = np.bincount(cells, minlength=2 * len(DIRECTION_NAMES)).tolist()
        else:                    # integer sums: bincount's float weights round past 2**53
            sums = np.zeros(2 * len(DIRECTION_NAMES), dtype=np.uint64)
            np.add.at(sums, cells, amounts.astype(np.uint64))
            totals = sums.tolist()
        for cell, total in enumerate(totals):
            if total:
                direction, family = divmod(cell, 2)
                counter.labels(DIRECTION_NAMES[direction], str(FAMILIES[family])).inc(total)
