"""Filters at ~90k live sockets: ``--remote-port P`` where 1% of the rows match, a poll with
the kernel filtering netlink's dump against netlink unfiltered (the mask on arrival) and
/proc, interleaved in one run. Target: the kernel-filtered poll <= 0.5x the unfiltered one.

The load: 45,000 connections over 50 listeners (LoadGenerator(listeners=50)), so the
clients of one listener are 1% of the rows; P is that listener's port.
"""

import statistics
import time

import pytest

from benchmarks.loadgen import LoadGenerator
from tcpfast.filters import Filter, kernel_filter
from tcpfast.sources import ProcTables
from tcpfast.sources.netlink import NetlinkSource
from tcpfast.watch import Watcher

LISTENERS = 50
ROWS = 90_000 + LISTENERS
ROUNDS = 15


@pytest.fixture(scope="module")
def fifty_listeners():
    try:
        with LoadGenerator(ROWS, listeners=LISTENERS) as load:
            yield load
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot open {ROWS:,} loopback sockets here: {error}")


def poller(source, selection: Filter):
    """One poll as tcpfast makes it: read, watch, keep what the selection keeps."""
    watcher = Watcher()
    watcher.update(source.read(), time.time())
    kept: list[int] = []

    def poll():
        result = watcher.update(source.read(size_hint=ROWS), time.time())
        kept.append(int(selection.mask(result.new.rows, result.new.direction).sum()))
    return poll, kept


def test_remote_port_filtered_by_the_kernel(benchmark, fifty_listeners):
    port = fifty_listeners.listen_addresses[0][1]
    selection = Filter(remote_ports={port})
    benchmark.group = f"filters: --remote-port at {ROWS:,} rows, 1% matching"
    contenders = {"netlink, kernel filter": NetlinkSource(kernel=kernel_filter(selection)),
                  "netlink, mask on arrival": NetlinkSource(), "proc, mask on arrival": ProcTables()}
    matching = contenders["netlink, mask on arrival"].read().rows
    share = (matching["remote_port"] == port).mean()
    assert 0.005 < share < 0.02, share
    polls = {name: poller(source, selection) for name, source in contenders.items()}
    times = {name: [] for name in contenders}

    def one_round():
        for name, (poll, _) in polls.items():
            started = time.perf_counter()
            poll()
            times[name].append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else ROUNDS, iterations=1)
    for source in contenders.values():
        source.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["netlink, kernel filter"] / medians["netlink, mask on arrival"]
    benchmark.extra_info.update({f"median_ms {name}": round(value * 1e3, 2)
                                 for name, value in medians.items()})
    benchmark.extra_info["ratio kernel filter / mask on arrival"] = round(ratio, 3)
    benchmark.extra_info["matching share"] = round(float(share), 4)
    print(f"\n{benchmark.group}: " + ", ".join(f"{name} {value * 1e3:.1f} ms"
                                                 for name, value in medians.items())
          + f"; kernel filter / on arrival = {ratio:.3f}")
    assert all(kept == [0] * len(kept) for _, kept in polls.values())   # nothing new: no churn
    if not benchmark.disabled:
        assert ratio <= 0.5
