"""Soak: memory stays flat while a churning 10k-row table is polled again and again.

The short run (300 polls, a few seconds) is part of the suite; the long one (10,000
polls, about a minute) runs with TCPFAST_SOAK=1:
    TCPFAST_SOAK=1 python -m pytest tests/test_soak.py -s
"""

import io
import os
import time
from datetime import datetime, timezone

import pytest
from kernel_format import Conn, table

from tcpfast.outputs import report
from tcpfast.sources import read_snapshot
from tcpfast.watch import Watcher

ROWS, VARIANTS = 10_000, 25
WARM_UP = 2 * VARIANTS
"""Polls before the first measure: every variant seen twice, so every size of array and
string the cycle needs has been allocated once."""


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def soak(tmp_path, polls: int) -> tuple[float, float, int, int, int]:
    """Poll a table that churns ``polls`` times: (RSS after WARM_UP polls, RSS at the end,
    connections reported, rows of the last poll, bytes of one poll's rows)."""
    # Each variant closes 1% of the sockets and opens as many new ones (new inodes);
    # the first variant, after the last, reopens the 24% the cycle changed.
    def lines(inode_base: int) -> list[bytes]:
        return table([Conn("10.0.%d.%d" % (i // 250, i % 250), 1024 + i, "10.200.0.1", 443,
                           inode=inode_base + i) for i in range(ROWS)], 4).splitlines(True)
    (header, *kept), (_, *reopened) = lines(1), lines(1 + ROWS)
    variants = []
    for v in range(VARIANTS):
        rows = [reopened[i] if i % 100 <= v else kept[i] for i in range(ROWS)]
        variants.append(b"".join([header, *rows[v % 100:], *rows[:v % 100]]))
    (tmp_path / "net").mkdir()
    tcp = tmp_path / "net" / "tcp"
    watcher, sink, expected, reported = Watcher(), io.StringIO(), 0, 0
    for poll in range(1, polls + 1):
        tcp.write_bytes(variants[poll % VARIANTS])
        snapshot = read_snapshot(str(tmp_path), size_hint=expected)
        expected = len(snapshot.rows)
        new = watcher.update(snapshot, time.time()).new
        reported += len(new)
        sink.write("\n".join(report.text_lines(new, datetime.now(timezone.utc))))
        sink.seek(0)
        sink.truncate()
        if poll == WARM_UP:
            warm = rss_mb()
    return warm, rss_mb(), reported, expected, snapshot.rows.nbytes


def check_reported(reported: int, expected: int, polls: int) -> None:
    # The first poll reports every row; later ones 100 rows, 2,500 once a cycle.
    assert expected == ROWS and ROWS + 100 * (polls - 1) <= reported <= ROWS + 200 * polls


def test_rss_after_300_polls_grew_less_than_one_polls_rows(tmp_path):
    """250 polls after the warm-up: a leak of a page a poll (or of any poll's rows,
    strings or arrays) would add more than one poll's rows take (800 KB)."""
    polls = 300
    warm, after, reported, expected, poll_bytes = soak(tmp_path, polls)
    print(f"\nRSS after {WARM_UP} polls {warm:.2f} MB, after {polls} {after:.2f} MB")
    check_reported(reported, expected, polls)
    assert after - warm < poll_bytes / 2**20


@pytest.mark.skipif(os.environ.get("TCPFAST_SOAK") != "1",
                    reason="slow soak test (10,000 polls): set TCPFAST_SOAK=1 to run it")
def test_rss_after_10000_polls_within_5_percent_of_after_warm_up(tmp_path):
    polls = 10_000
    warm, after, reported, expected, _ = soak(tmp_path, polls)
    print(f"\nRSS after {WARM_UP} polls {warm:.1f} MB, after {polls} polls {after:.1f} MB, "
          f"{reported} new connections reported")
    check_reported(reported, expected, polls)
    assert abs(after - warm) <= 0.05 * warm
