"""The targets' ratios, measured interleaved: A, B, A, B, ... in one loop, so drift
on a shared machine hits both sides alike. Medians and ratios go to extra_info
(and are printed with -s); the benchmark's own timing is of the first callable."""

import math
import socket
import statistics
import time

import pytest

from benchmarks import naive
from benchmarks.tables import table
from benchmarks.test_poll import bare_read
from tcpfast import new_connections, read_snapshot
from tcpfast.decode import parsing, pureparse
from tcpfast.enrich.owners import OwnerFinder
from tcpfast.watch import Watcher

try:
    from tcpfast.decode import _parse
except ImportError:
    _parse = None


def interleaved(benchmark, rounds: int, **contenders) -> dict[str, float]:
    """Median seconds of each contender, run in turn ``rounds`` times."""
    times = {name: [] for name in contenders}

    def one_round():
        for name, function in contenders.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=1)
    medians = {name: statistics.median(values) for name, values in times.items()}
    benchmark.extra_info.update({f"median_ms {name}": round(value * 1e3, 3)
                                 for name, value in medians.items()})
    return medians


def report(benchmark, medians, pairs):
    for slow, fast in pairs:
        ratio = medians[slow] / medians[fast]
        benchmark.extra_info[f"ratio {slow} / {fast}"] = round(ratio, 3)
        print(f"\n{benchmark.name}: {slow} / {fast} = {ratio:.3f} "
              f"({medians[slow] * 1e3:.2f} ms / {medians[fast] * 1e3:.2f} ms)")


@pytest.mark.parametrize("family", [4, 6])
def test_p1_parse_100k(benchmark, family):
    if _parse is None:
        pytest.skip("compiled parser not built")
    data = table(100_000, family)
    benchmark.group = "ratios"
    benchmark.extra_info["rows"] = 100_000
    medians = interleaved(
        benchmark, 10,
        compiled=lambda: parsing.parse_counted(data, family, _parse.parse_into),
        pure=lambda: parsing.parse_counted(data, family, pureparse.parse_into),
        naive=lambda: naive.parse(data, family))
    benchmark.extra_info["compiled_ns_per_row"] = round(medians["compiled"] / 1e5 * 1e9, 1)
    report(benchmark, medians, [("naive", "compiled"), ("pure", "naive")])



def test_p2_poll_against_bare_read(benchmark, live_100k):
    benchmark.group = "ratios"
    benchmark.extra_info["rows"] = live_100k
    previous_tcp = read_snapshot(families=(4,)).rows
    previous = read_snapshot().rows
    watcher = Watcher()                      # the command's poll: new, closed, directions
    watcher.update(read_snapshot(), time.time())
    medians = interleaved(
        benchmark, 20,
        poll_tcp=lambda: new_connections(previous_tcp, read_snapshot(families=(4,)).rows),
        bare_tcp=lambda: bare_read("/proc/net/tcp"),
        poll_both=lambda: new_connections(previous, read_snapshot().rows),
        watch_both=lambda: watcher.update(read_snapshot(), time.time()),
        bare_both=lambda: bare_read("/proc/net/tcp", "/proc/net/tcp6"))
    report(benchmark, medians, [("poll_tcp", "bare_tcp"), ("poll_both", "bare_both"),
                                ("watch_both", "bare_both"), ("watch_both", "poll_both")])


def psutil_parse(psutil) -> set:
    """What psutil.net_connections("tcp4") does but the walk of every /proc/PID/fd: its
    own parse of /proc/net/tcp (NetConnections.process_inet, no inode -> pid map),
    each row made a connection tuple, as net_connections makes them."""
    from psutil import _common, _pslinux
    sconn = getattr(_pslinux, "ntp", _common).sconn     # psutil 7 moved it to _ntuples
    rows = _pslinux.NetConnections.process_inet("/proc/net/tcp", socket.AF_INET,
                                                socket.SOCK_STREAM, {})
    return {sconn(*row) for row in rows}


def snapshot_with_owners() -> list:
    """tcpfast's answer to the same question as psutil's walk: every row of the IPv4
    table with the process holding it (a new OwnerFinder, nothing cached, no budget)."""
    rows = read_snapshot(families=(4,)).rows
    return OwnerFinder(budget=math.inf).owners_of(rows)


def test_p3_snapshot_against_psutil(benchmark, live_100k):
    """Like with like: the table's parse against psutil's parse (no fd walk), and the
    parse with every socket's owner (tcpfast --process's search, from an empty cache)
    against psutil.net_connections, which walks every process's fds."""
    psutil = pytest.importorskip("psutil")
    benchmark.group = "ratios"
    benchmark.extra_info["rows"] = live_100k
    assert len(psutil_parse(psutil)) >= live_100k // 2           # IPv4 only: tcp4's rows
    medians = interleaved(benchmark, 3,
                          psutil_parse=lambda: psutil_parse(psutil),
                          snapshot_tcp=lambda: read_snapshot(families=(4,)),
                          psutil_with_pids=lambda: psutil.net_connections("tcp4"),
                          snapshot_with_owners=snapshot_with_owners)
    report(benchmark, medians, [("psutil_parse", "snapshot_tcp"),
                                ("psutil_with_pids", "snapshot_with_owners")])
