"""How much a poller missed: the kernel's count of connections established, against what the polls saw.

Each poll, the sources' TCP counters (``Source.opened``: ActiveOpens +
PassiveOpens - AttemptFails of each namespace, tcpfast.sources.snmp) say how
many sockets reached ESTABLISHED since the last poll; the watcher says how many
of those it saw (``Poll.established``: listed past the handshake for the first
time, or heard of destroyed). What the kernel counted and no poll saw was
missed: a connection that opened and closed between two polls leaves nothing
in a table (but the TIME_WAIT row of the side that closed first, which the
watcher counts). The first poll is the baseline.

The counters are sampled just before each poll's read (``sample``), so what the
read lists and the destroy events drained after it may run ahead of the
kernel's count: a socket opened between the sample and the read is seen at
this poll and counted by the kernel at the next. What a poll saw beyond the
kernel's count is carried to the next poll (at most what that poll saw), so
churn alone never reads as a miss. Handshakes in flight make one poll's count
off by them too (a connect() counts when its SYN is sent, and is taken back
if it fails); missed is never negative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: A poll that missed more than this share of what the kernel opened is said on stderr.
SAY_ABOVE = 0.01


@dataclass(frozen=True)
class Counted:
    """One poll's count: what the kernel opened since the last poll, and what was missed."""

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
        """This poll's count against the last sample (None: the baseline, or no counters)."""
        total, self._total = self._total, None
        if self._broken or total is None:
            return None
        last, self._last = self._last, total
        if last is None:
            return None
        opened = max(0, total - last)
        seen = established + self._ahead
        missed = max(0, opened - seen)
        self._ahead = min(max(0, seen - opened), established)
        self.opened += opened
        self.missed += missed
        if missed > SAY_ABOVE * opened:
            if not self._missing:
                self._warn(f"{missed} of the {opened} connections the kernel opened since the "
                           f"last poll were not seen ({100 * missed / opened:.1f} %): they "
                           f"opened and closed between polls; {self._hint} (said once until "
                           "a poll misses none)")
            self._missing = True
        elif not missed:
            self._missing = False
        return Counted(opened, missed)
