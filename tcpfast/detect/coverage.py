"""How much a poller missed: the kernel's count of connections established, against what the polls saw.

Each poll, the sources' TCP counters (``Source.opened``: ActiveOpens +
PassiveOpens - AttemptFails of each namespace, tcpfast.sources.snmp) say how
many sockets reached ESTABLISHED since the last poll; the watcher says how many
of those it saw (``Poll.established``: listed past the handshake for the first
time, or heard of destroyed). What the kernel counted and no poll saw was
missed: a connection that opened and closed between two polls leaves nothing
in a table (but the TIME_WAIT row of the side that closed first, which the
watcher counts). The first poll is the baseline.

The counters are sampled just before each poll's read (``sample``), and the
count can be off by a few sockets either way at one poll and right over a few:
a socket opened between the sample and the read is seen at this poll and
counted by the kernel at the next; a connect() is counted when its SYN is sent
(and taken back if it fails), so a handshake in flight at the sample is counted
now and seen at the next poll; and a destroy event is sent from a kernel work
queue, a moment after the socket is gone (on a busy host, several short polls
later), so it may be heard after the poll its connection was counted at. So a
poll's surplus (seen, not yet counted) is carried to the next poll, at most what
that poll saw, and a poll's shortfall is settled by the polls of the next
SETTLE_SECONDS (at least the next one): what they saw beyond their own count
pays back the oldest shortfall first, and only what is left once the time is up
is missed. Missed is never negative, and is counted at the poll that settles it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: A poll that missed more than this share of what the kernel opened is said on stderr.
SAY_ABOVE = 0.01
#: How long a poll's shortfall may be paid back by later polls (destroy events that
#: came late) before it is missed: at least the next poll, whatever the interval.
SETTLE_SECONDS = 1.5


@dataclass
class _Shortfall:
    """What one poll's count said the kernel opened that the poll did not see."""

    owed: int          # not seen, not paid back yet
    of: int            # ... of what the kernel opened in that poll's interval
    since: float       # the clock at that poll


@dataclass(frozen=True)
class Counted:
    """One poll's count: what the kernel opened since the last poll, and what was missed
    of what it opened in earlier intervals (a shortfall is settled later)."""

    opened: int
    missed: int


class Coverage:
    """Compares ``opened()`` (the kernel's running total, or None where there is none) with
    each poll's ``established``; says on ``warn``, once per run of such polls, when a
    poll missed more than SAY_ABOVE of what the kernel opened, and ``hint`` what sees
    more. A source whose counters cannot be read is said once, and not counted.
    ``clock`` (seconds) times how long a shortfall may still be paid back."""

    def __init__(self, opened: Callable[[], int | None], warn: Callable[[str], None],
                 hint: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._opened = opened
        self._warn = warn
        self._hint = hint
        self._clock = clock
        self._total: int | None = None   # sampled before this poll's read
        self._last: int | None = None
        self._ahead = 0                  # seen by the last poll, not yet counted by the kernel
        self._owed: deque[_Shortfall] = deque()   # counted by the kernel, not seen yet: oldest first
        self._missing = False           # in a run of polls that missed
        self._broken = False            # the counters cannot be read: said, given up
        self.opened = 0
        self.missed = 0

    def sample(self) -> None:
        """Read the kernel's running total: call it just before each poll's read."""
        if self._broken:
            return
        try:
            self._total = self._opened()
        except (OSError, ValueError) as error:
            self._broken = True
            self._total = None
            self._warn(f"cannot count the connections missed between polls: {error}")

    def count(self, established: int) -> Counted | None:
        """This poll's count against the last sample (None: the baseline, or no
        counters): what the kernel opened since the last poll, and what was missed of
        earlier polls' shortfalls (what was not paid back within SETTLE_SECONDS)."""
        total, self._total = self._total, None
        if self._broken or total is None:
            return None
        last, self._last = self._last, total
        if last is None:
            return None
        now = self._clock()
        opened = max(0, total - last)
        surplus = established + self._ahead - opened
        spare = max(0, surplus)
        while spare and self._owed:               # late sightings pay the oldest first
            oldest = self._owed[0]
            paid = min(spare, oldest.owed)
            oldest.owed -= paid
            spare -= paid
            if not oldest.owed:
                self._owed.popleft()
        self._ahead = min(spare, established)
        missed = missed_of = 0
        while self._owed and now - self._owed[0].since >= SETTLE_SECONDS:
            settled = self._owed.popleft()
            missed += settled.owed
            missed_of += settled.of
        if surplus < 0:
            self._owed.append(_Shortfall(-surplus, opened, now))
        self.opened += opened
        self.missed += missed
        if missed > SAY_ABOVE * missed_of:
            if not self._missing:
                self._warn(f"{missed} of the {missed_of} connections the kernel opened between "
                           f"two polls were not seen ({100 * missed / missed_of:.1f} %): they "
                           f"opened and closed between polls; {self._hint} (said once until "
                           "a poll misses none)")
            self._missing = True
        elif not missed and not self._owed:
            self._missing = False
        return Counted(opened, missed)
