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
count can be off by a few sockets either way at one poll and right over two:
a socket opened between the sample and the read is seen at this poll and
counted by the kernel at the next; a connect() is counted when its SYN is sent
(and taken back if it fails), so a handshake in flight at the sample is counted
now and seen at the next poll; and a destroy event the kernel sends a moment
after the poll's drain is heard at the next poll too. So a poll's surplus (seen,
not yet counted) is carried to the next poll, at most what that poll saw, and a
poll's shortfall is settled one poll later: what the next poll saw beyond its own
count pays it back first, and only the rest is missed. Missed is never negative,
and is counted one poll after the interval it happened in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: A poll that missed more than this share of what the kernel opened is said on stderr.
SAY_ABOVE = 0.01


@dataclass(frozen=True)
class Counted:
    """One poll's count: what the kernel opened since the last poll, and what was missed
    in the interval before it (a shortfall is settled one poll later)."""

    opened: int
    missed: int


class Coverage:
    """Compares ``opened()`` (the kernel's running total, or None where there is none) with
    each poll's ``established``; says on ``warn``, once per run of such polls, when a
    poll missed more than SAY_ABOVE of what the kernel opened, and ``hint`` what sees
    more. A source whose counters cannot be read is said once, and not counted."""

    def __init__(self, opened: Callable[[], int | None], warn: Callable[[str], None],
                 hint: str) -> None:
        self._opened = opened
        self._warn = warn
        self._hint = hint
        self._total: int | None = None   # sampled before this poll's read
        self._last: int | None = None
        self._ahead = 0                  # seen by the last poll, not yet counted by the kernel
        self._owed = 0                   # counted by the kernel, not seen by the last poll
        self._owed_of = 0                # ... of what the kernel opened then
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
        counters): what the kernel opened since the last poll, and what was missed in
        the interval before (the part of its shortfall this poll did not pay back)."""
        total, self._total = self._total, None
        if self._broken or total is None:
            return None
        last, self._last = self._last, total
        if last is None:
            return None
        opened = max(0, total - last)
        surplus = established + self._ahead - opened
        owed, owed_of = self._owed, self._owed_of
        paid = min(max(0, surplus), owed)
        missed = owed - paid
        self._ahead = min(max(0, surplus - paid), established)
        self._owed, self._owed_of = max(0, -surplus), opened
        self.opened += opened
        self.missed += missed
        if missed > SAY_ABOVE * owed_of:
            if not self._missing:
                self._warn(f"{missed} of the {owed_of} connections the kernel opened between "
                           f"two polls were not seen ({100 * missed / owed_of:.1f} %): they "
                           f"opened and closed between polls; {self._hint} (said once until "
                           "a poll misses none)")
            self._missing = True
        elif not missed:
            self._missing = False
        return Counted(opened, missed)
