"""How much a poller missed: the kernel's count of connections established, against what the polls saw.

Each poll, the sources' TCP counters (``Source.opened``: ActiveOpens +
PassiveOpens - AttemptFails of each namespace, tcpfast.sources.snmp) say how
many sockets reached ESTABLISHED since the last poll; the watcher says how many
of those it saw (``Poll.established``: listed past the handshake for the first
time, or heard of destroyed). What the kernel counted and no poll saw was
missed: a connection that opened and closed between two polls leaves nothing
in a table (but the TIME_WAIT row of the side that closed first, which the
watcher counts). The first poll is the baseline. How exact the estimate is:
the counters count a connect() when its SYN is sent and take a failure away
when it fails, so handshakes in flight at a poll make one poll's count off by
them (and the next's, the other way): missed is never negative, a poll's
excess is not carried over.
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
        self._last: int | None = None
        self._missing = False           # in a run of polls that missed
        self._broken = False            # the counters cannot be read: said, given up
        self.opened = 0
        self.missed = 0

    def count(self, established: int) -> Counted | None:
        """This poll's count (None: the baseline, or no counters)."""
        if self._broken:
            return None
        try:
            total = self._opened()
        except (OSError, ValueError) as error:
            self._broken = True
            self._warn(f"cannot count the connections missed between polls: {error}")
            return None
        if total is None:
            return None
        last, self._last = self._last, total
        if last is None:
            return None
        opened = max(0, total - last)
        missed = max(0, opened - established)
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
