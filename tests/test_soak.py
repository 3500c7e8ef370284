"""Soak: memory stays flat over 10,000 polls of a churning 10k-row table.

Slow (about a minute): runs only with TCPFAST_SOAK=1, e.g.
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

pytestmark = pytest.mark.skipif(os.environ.get("TCPFAST_SOAK") != "1",
                                reason="slow soak test: set TCPFAST_SOAK=1 to run it")

ROWS, POLLS, VARIANTS = 10_000, 10_000, 25


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_rss_after_10000_polls_within_5_percent_of_after_100(tmp_path):
    # Each variant closes 1% of the sockets and opens as many new ones (new inodes);
    # the first variant, after the last, reopens the 24% the cycle changed.
    variants = []
    for v in range(VARIANTS):
        conns = [Conn("10.0.%d.%d" % (i // 250, i % 250), 1024 + i, "10.200.0.1", 443,
                      inode=1 + i + (ROWS if i % 100 <= v else 0))
                 for i in range(ROWS)]
        variants.append(table(conns[v % 100:] + conns[:v % 100], 4))
    (tmp_path / "net").mkdir()
    tcp = tmp_path / "net" / "tcp"
    watcher, sink, expected, reported = Watcher(), io.StringIO(), 0, 0
    for poll in range(1, POLLS + 1):
        tcp.write_bytes(variants[poll % VARIANTS])
        snapshot = read_snapshot(str(tmp_path), size_hint=expected)
        expected = len(snapshot.rows)
        new = watcher.update(snapshot, time.time()).new
        reported += len(new)
        sink.write("\n".join(report.text_lines(new, datetime.now(timezone.utc))))
        sink.seek(0)
        sink.truncate()
        if poll == 100:
            after_100 = rss_mb()
    after_all = rss_mb()
    print(f"\nRSS after 100 polls {after_100:.1f} MB, after {POLLS} polls {after_all:.1f} MB, "
          f"{reported} new connections reported")
    # The first poll reports every row; later ones 100 rows, 2,500 once a cycle.
    assert expected == ROWS and ROWS + 100 * (POLLS - 1) <= reported <= ROWS + 200 * POLLS
    assert abs(after_all - after_100) <= 0.05 * after_100
