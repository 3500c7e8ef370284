"""netlink (sock_diag) against /proc on ~90k live loopback sockets, in the benchmarks'
private network namespace (conftest.py), interleaved A, B, A, B, ... in one loop.

Each contender's median wall time and CPU time (user + system of this process: the
kernel's work for a read or a dump is charged to it) go to extra_info and are printed
with -s; ratios are recorded, not asserted (a shared machine's noise is not a
failure). The targets: a netlink poll (dump + decode + fold + diff) at most 0.6x a bare
read() of /proc/net/tcp (+tcp6 in the mixed load); on a table growing by ~400 rows/s
every poll ends within its interval and each new connection is reported once. With
``--benchmark-disable`` (CI: one run, timings off) only "each once" is asserted: one
run on a shared machine cannot prove a time.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from benchmarks.loadgen import LoadGenerator
from benchmarks.test_poll import bare_read
from tcpfast import CONNECTION_DTYPE, new_connections
from tcpfast.decode import netlink_pure
from tcpfast.decode.netlink_pure import INET_DIAG_INFO
from tcpfast.filters.states import ALL_STATES_MASK
from tcpfast.schema import CLOSE_INFO_DTYPE, STATE_CODES, TIMEWAIT_TIMER
from tcpfast.sources import proc, sockdiag
from tcpfast.sources.base import stop_reading_at
from tcpfast.sources.netlink import NetlinkSource
from tcpfast.watch import Watcher

try:
    from tcpfast.decode import _netlink
except ImportError:
    _netlink = None

ROWS = 90_000
LOADS = {"ipv4": 0.0, "mixed": 1 / 3}


@pytest.fixture(scope="module", params=sorted(LOADS))
def live_90k(request):
    try:
        with LoadGenerator(ROWS, ipv6_fraction=LOADS[request.param]) as load:
            yield request.param, load.rows
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot open {ROWS} loopback sockets here: {error}")


def interleaved(benchmark, rounds: int, **contenders) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds of each contender, run in turn ``rounds`` times."""
    times = {name: ([], []) for name in contenders}

    def one_round():
        for name, function in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            times[name][1].append(time.process_time() - cpu)
            times[name][0].append(time.perf_counter() - wall)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=1)
    medians = {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}
    for name, (wall, cpu) in medians.items():
        benchmark.extra_info[f"median_ms {name}"] = round(wall * 1e3, 2)
        benchmark.extra_info[f"median_cpu_ms {name}"] = round(cpu * 1e3, 2)
    return medians


def report(benchmark, medians, pairs) -> None:
    for slow, fast in pairs:
        for index, kind in enumerate(("wall", "cpu")):
            ratio = medians[fast][index] / medians[slow][index]
            benchmark.extra_info[f"ratio {fast} / {slow} {kind}"] = round(ratio, 3)
            print(f"\n{benchmark.name}: {fast} / {slow} ({kind}) = {ratio:.3f} "
                  f"({medians[fast][index] * 1e3:.1f} ms / {medians[slow][index] * 1e3:.1f} ms)")


def record_dump(diag: sockdiag.SockDiag, keep: bool = True) -> tuple[list[bytes], int]:
    """The raw replies of one dump, as recv() returned them (with ``keep``), and its
    sequence number: without ``keep``, what the kernel's dump costs by itself."""
    return dump_replies(diag, diag._legacy_request(ALL_STATES_MASK), keep)


def dump_replies(diag: sockdiag.SockDiag, request: bytes, keep: bool = True
                 ) -> tuple[list[bytes], int]:
    """The raw replies of one dump for ``request``, and its sequence number."""
    seq = int.from_bytes(request[8:12], sys.byteorder)
    diag._socket.sendall(request)
    replies = []
    buffer = bytearray(sockdiag.RECV_BYTES)
    while True:
        got = diag._socket.recv_into(buffer)
        if keep:
            replies.append(bytes(buffer[:got]))
        if buffer[4] == netlink_pure.NLMSG_DONE and got <= 20:
            return replies, seq


def test_n1_netlink_poll_against_bare_read(benchmark, live_90k):
    load, rows = live_90k
    benchmark.group = f"netlink {load} {rows:,} rows"
    benchmark.extra_info["rows"] = rows
    tables = ["/proc/net/tcp"] + (["/proc/net/tcp6"] if load == "mixed" else [])
    legacy = sockdiag.SockDiag(request=sockdiag.TCPDIAG_GETSOCK)
    by_family = sockdiag.SockDiag(request=sockdiag.SOCK_DIAG_BY_FAMILY)
    previous = legacy.dump().rows
    assert len(previous) >= rows
    assert len(by_family.dump().rows) == len(previous)
    with legacy, by_family:
        medians = interleaved(
            benchmark, 15,
            bare_read=lambda: bare_read(*tables),
            raw_dump=lambda: record_dump(legacy, keep=False),
            netlink_poll=lambda: new_connections(previous, legacy.dump(size_hint=rows).rows),
            netlink_poll_by_family=lambda: new_connections(
                previous, by_family.dump(size_hint=rows).rows),
            proc_poll=lambda: new_connections(previous, proc.read_snapshot(size_hint=rows).rows))
    report(benchmark, medians, [("bare_read", "raw_dump"), ("bare_read", "netlink_poll"),
                                ("bare_read", "netlink_poll_by_family"),
                                ("bare_read", "proc_poll")])


def test_n3_decoders(benchmark, live_90k):
    """Decoding one recorded dump of ~90k sockets: compiled against pure Python."""
    if _netlink is None:
        pytest.skip("compiled decoder not built")
    load, rows = live_90k
    benchmark.group = f"netlink {load} {rows:,} rows"
    benchmark.extra_info["rows"] = rows
    with sockdiag.SockDiag() as diag:
        replies, seq = record_dump(diag)
    out = np.empty(rows + rows // 4, dtype=CONNECTION_DTYPE)

    def decode_all(decode_into):
        end = 0
        for reply in replies:
            end = decode_into(reply, out, end, seq, sockdiag.TCPDIAG_GETSOCK)[0]
        assert end >= rows

    medians = interleaved(benchmark, 10, compiled=lambda: decode_all(_netlink.decode_into),
                          pure=lambda: decode_all(netlink_pure.decode_into))
    report(benchmark, medians, [("pure", "compiled")])


def info_request(diag: sockdiag.SockDiag) -> bytes:
    """The legacy dump request with the INET_DIAG_INFO extension (idiag_ext bit 1): a
    struct tcp_info per socket, as ``ss -i`` asks for."""
    payload = sockdiag._LEGACY_REQUEST.pack(socket.AF_INET, 0, 0, 1 << (INET_DIAG_INFO - 1),
                                            sockdiag._SOCKID_ZERO, ALL_STATES_MASK, 0)
    return diag._message(sockdiag.TCPDIAG_GETSOCK, payload)


def test_n4_tcp_info_costs_only_who_asks(benchmark, live_90k):
    """A dump carries INET_DIAG_INFO only when the request asks (idiag_ext); what asking
    costs the kernel (raw dumps) and the decoder (the same replies, with and without an
    info array), side by side. tcpfast's dumps never ask: destroy events carry it anyway."""
    if _netlink is None:
        pytest.skip("compiled decoder not built")
    load, rows = live_90k
    benchmark.group = f"netlink {load} {rows:,} rows, tcp_info"
    benchmark.extra_info["rows"] = rows
    with sockdiag.SockDiag() as diag:
        plain, plain_seq = record_dump(diag)
        with_info, info_seq = dump_replies(diag, info_request(diag))
        out = np.empty(rows + rows // 4, dtype=CONNECTION_DTYPE)
        info = np.empty(len(out), dtype=CLOSE_INFO_DTYPE)

        def decode(replies, seq, into):
            end = 0
            for reply in replies:
                end = _netlink.decode_into(reply, out, end, seq, sockdiag.TCPDIAG_GETSOCK,
                                           into)[0]
            return end

        listed = decode(plain, plain_seq, info)
        assert listed >= rows and not info["known"][:listed].any()        # none unasked
        listed = decode(with_info, info_seq, info)
        # One each, but for what has no tcp_info: a timewait entry, a pending handshake.
        full = ((out["timer"][:listed] != TIMEWAIT_TIMER)
                & (out["state"][:listed] != STATE_CODES["SYN_RECV"]))
        assert listed >= rows and full.sum() >= rows // 2 and (info["known"][:listed][full] != 0).all()
        benchmark.extra_info["reply_bytes plain"] = sum(map(len, plain))
        benchmark.extra_info["reply_bytes with_info"] = sum(map(len, with_info))
        medians = interleaved(
            benchmark, 15,
            raw_dump=lambda: record_dump(diag, keep=False),
            raw_dump_with_info=lambda: dump_replies(diag, info_request(diag), keep=False),
            decode=lambda: decode(plain, plain_seq, None),
            decode_info_replies=lambda: decode(with_info, info_seq, None),
            decode_info_replies_with_info=lambda: decode(with_info, info_seq, info))
    report(benchmark, medians, [("raw_dump", "raw_dump_with_info"), ("decode", "decode_info_replies"),
                                ("decode", "decode_info_replies_with_info")])


GROWTH_RATE = 400          # rows a second
GROWTH_SECONDS = 15
INTERVAL = 1.0


def test_n2_growing_table(benchmark, live_90k):
    """Polls every INTERVAL while the table grows: each ends in time, each new pair once."""
    load, rows = live_90k
    if load != "ipv4":
        pytest.skip("one growth run is enough")
    benchmark.group = f"netlink {load} {rows:,} rows, growing {GROWTH_RATE} rows/s"
    source = NetlinkSource()
    watcher = Watcher()
    watcher.update(source.read(), time.time())
    grower = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.grower", "--rate", str(GROWTH_RATE),
         "--seconds", str(GROWTH_SECONDS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    grower_port = int(grower.stdout.readline().split()[1])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(grower.stdout), daemon=True)
    reader.start()
    durations, reported, cut_short = [], [], []

    def poll(stop_reading=None) -> None:
        started = time.monotonic()
        snapshot = source.read(stop_reading=stop_reading)
        durations.append(time.monotonic() - started)
        cut_short.append(not snapshot.complete)
        new = watcher.update(snapshot, time.time()).new.rows
        reported.extend(new[new["remote_port"] == grower_port]["local_port"].tolist())

    def poll_during_growth():
        next_tick = time.monotonic()
        while time.monotonic() < start + GROWTH_SECONDS + 2 * INTERVAL:
            poll(stop_reading_at(time.monotonic() + INTERVAL))
            next_tick += INTERVAL
            time.sleep(max(0.0, next_tick - time.monotonic()))

    start = time.monotonic()
    try:
        benchmark.pedantic(poll_during_growth, rounds=1, iterations=1)
        polls_in_time = len(durations)
        poll()                               # a read to the end, whatever the cut ones missed
    finally:
        grower.stdin.close()
        grower.wait(timeout=30)
        reader.join(timeout=30)
        opened = [int(line.split()[0]) for line in lines]
        source.close()
    durations, cut_short = durations[:polls_in_time], cut_short[:polls_in_time]
    benchmark.extra_info.update({
        "polls": len(durations), "polls cut short": sum(cut_short), "pairs_opened": len(opened),
        "poll_median_ms": round(statistics.median(durations) * 1e3, 1),
        "poll_max_ms": round(max(durations) * 1e3, 1)})
    print(f"\n{benchmark.name}: {len(durations)} polls, median "
          f"{statistics.median(durations) * 1e3:.1f} ms, max {max(durations) * 1e3:.1f} ms; "
          f"{len(opened)} pairs opened, {len(reported)} reported")
    assert sorted(reported) == sorted(opened)          # each once, none missed
    if not benchmark.disabled:
        assert not any(cut_short) and max(durations) < INTERVAL
