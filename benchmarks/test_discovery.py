"""Namespace discovery, and what each found namespace then costs to read, interleaved in one run.

d1: ``NamespaceFinder.scan()`` over ~1,000 idle processes in 10 network namespaces of
their own (benchmarks/sleepers.py), plus the host's: a scan of a finder that has seen
them (what each poll costs: target <= 5 ms), a scan that stats every process
(``recheck_every=1``), and the first scan of a new finder.

d2: the tables of 100 empty network namespaces, each read the two ways an
all-namespaces watcher can: ``/proc/PID/net/tcp`` + ``tcp6`` (bare reads, and tcpfast's
reader) against a sock_diag dump in the namespace (a socket made there once, after
setns; root only), with no other sockets and with 50,000 sockets in another namespace
that shares the kernel's socket hash (as the host's namespace does: the /proc reader
walks every bucket of it, whoever the sockets belong to). The benchmarks' own private
namespace has a hash table of its own (conftest.py), so the load is put in a namespace
made for it. TCP sockets allocated host-wide (``/proc/net/sockstat``'s alloc) are
recorded: other processes' sockets in the shared hash count too.

Sizes: TCPFAST_BENCH_PROCESSES (default 1000), TCPFAST_BENCH_NAMESPACES (100),
TCPFAST_BENCH_HOST_ROWS (50000).

Run as root:  python -m pytest benchmarks/test_discovery.py -s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from benchmarks.sleepers import Sleepers
from benchmarks.test_netlink import interleaved, record_dump, report
from tcpfast.sources import proc, sockdiag
from tcpfast.sources.discovery import NamespaceFinder

PROCESSES = int(os.environ.get("TCPFAST_BENCH_PROCESSES", "1000"))
DISCOVERY_NAMESPACES = 10
NAMESPACES = int(os.environ.get("TCPFAST_BENCH_NAMESPACES", "100"))
HOST_ROWS = int(os.environ.get("TCPFAST_BENCH_HOST_ROWS", "50000"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tcp_allocated() -> int:
    """TCP sockets allocated on the whole host (sockstat's alloc is not per namespace)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("alloc") + 1])
    return -1


def test_d1_discovery(benchmark):
    try:
        sleepers = Sleepers(PROCESSES, DISCOVERY_NAMESPACES)
        sleepers.__enter__()
    except RuntimeError as error:
        pytest.skip(str(error))
    try:
        benchmark.group = f"discovery, {PROCESSES:,} processes in {DISCOVERY_NAMESPACES} namespaces"
        kept, full = NamespaceFinder(), NamespaceFinder(recheck_every=1)
        scan = kept.scan()
        for group in sleepers.groups:                      # each namespace once, whole
            namespace = next(namespace for namespace in scan.namespaces.values()
                             if group[0] in namespace.pids)
            assert namespace.pids == tuple(sorted(group))
        full.scan()
        medians = interleaved(benchmark, 30, kept_finder=kept.scan, every_process=full.scan,
                              first_scan=lambda: NamespaceFinder().scan())
        last = kept.scan()
        benchmark.extra_info.update({
            "processes": last.processes, "namespaces": len(last.namespaces),
            "checked_by_kept_finder": last.checked,
            "us_per_process every_process": round(medians["every_process"][0] * 1e6 / last.processes, 2)})
        for name, (wall, cpu) in medians.items():
            print(f"\n{benchmark.name}: {name}: {wall * 1e3:.2f} ms (cpu {cpu * 1e3:.2f} ms) for "
                  f"{last.processes} processes, {len(last.namespaces)} namespaces")
        report(benchmark, medians, [("every_process", "kept_finder")])
    finally:
        sleepers.__exit__(None, None, None)


@pytest.fixture(scope="module", params=[0, HOST_ROWS], ids=["no other sockets", "with host load"])
def shared_hash_load(request):
    """``rows`` rows of loopback sockets in a namespace sharing the kernel's socket hash."""
    rows = request.param
    if rows == 0:
        yield 0
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a namespace sharing the kernel's socket hash")
    load = subprocess.Popen(
        ["unshare", "--net", "sh", "-c",
         f'ip link set lo up && exec "{sys.executable}" -m benchmarks.loadgen --rows {rows}'],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = load.stdout.readline()
    if not line.startswith("ready"):
        load.kill()
        load.wait()
        pytest.skip(f"cannot hold {rows} sockets in a namespace of their own: {line!r}")
    try:
        yield rows
    finally:
        load.terminate()
        load.wait(timeout=60)


def bare_read(root: str) -> int:
    size = 0
    for table in ("net/tcp", "net/tcp6"):
        with open(os.path.join(root, table), "rb", buffering=0) as file:
            while chunk := file.read(256 * 1024):
                size += len(chunk)
    return size


def test_d2_tables_of_empty_namespaces(benchmark, shared_hash_load):
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces of their own, and setns for the netlink dumps")
    benchmark.group = f"{NAMESPACES} empty namespaces, {shared_hash_load:,} rows elsewhere"
    try:
        sleepers = Sleepers(NAMESPACES, NAMESPACES)
        sleepers.__enter__()
    except RuntimeError as error:
        pytest.skip(str(error))
    diags: list[sockdiag.SockDiag] = []
    try:
        roots = [f"/proc/{group[0]}" for group in sleepers.groups]
        diags = [sockdiag.SockDiag(f"{root}/ns/net") for root in roots]
        assert all(len(diag.dump().rows) == 0 for diag in diags)
        assert all(len(proc.read_snapshot(root).rows) == 0 for root in roots)
        allocated = benchmark.extra_info["tcp_sockets_allocated_host_wide"] = tcp_allocated()
        print(f"\n{benchmark.name}: {allocated:,} TCP sockets allocated host-wide")
        medians = interleaved(
            benchmark, 5,
            bare_read=lambda: [bare_read(root) for root in roots],
            proc_read=lambda: [proc.read_snapshot(root) for root in roots],
            raw_dump=lambda: [record_dump(diag, keep=False) for diag in diags],
            netlink_dump=lambda: [diag.dump() for diag in diags])
        for name, (wall, cpu) in medians.items():
            benchmark.extra_info[f"per_namespace_ms {name}"] = round(wall * 1e3 / NAMESPACES, 3)
            print(f"\n{benchmark.name}: {name}: {wall * 1e3:.1f} ms for {NAMESPACES} namespaces "
                  f"(cpu {cpu * 1e3:.1f} ms), {wall * 1e3 / NAMESPACES:.2f} ms each")
        report(benchmark, medians, [("bare_read", "netlink_dump"), ("proc_read", "netlink_dump"),
                                    ("bare_read", "proc_read")])
    finally:
        for diag in diags:
            diag.close()
        sleepers.__exit__(None, None, None)
