"""--all-netns at the scale of a node: 100 network namespaces holding 100 connections each,
and 50,000 sockets in another namespace sharing the kernel's socket hash (a host's own
load, as container runtimes leave every namespace on the one hash).

One poll over every namespace the procfs's processes are in (discovery, a read of
each, the watcher's diff), through netlink and through /proc, against the sum of bare
reads of the same namespaces' tables in the same run (a dump without decoding it, a
read() of tcp and tcp6 without parsing it). Targets: the netlink poll <= 1.2x its bare
reads. Per-namespace costs are the medians divided by the namespaces read.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

import pytest

from benchmarks.test_poll import bare_read
from tcpfast.filters.states import ALL_STATES_MASK
from tcpfast.sources import sockdiag
from tcpfast.sources.discovery import NamespaceFinder
from tcpfast.sources.namespaces import AllNamespaces
from tcpfast.watch import Watcher

NAMESPACES = 100
PAIRS = 50                      # 100 connections: 50 pairs, both ends of each in the namespace
HOST_SOCKETS = 50_000
ROUNDS = 7

# A process in a network namespace of its own (unshare -n): loopback up, PAIRS connected
# pairs to its listener, then it holds them until its stdin closes.
HOLDER = """
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1024)
held = [server]
for _ in range(int(sys.argv[1])):
    client = socket.create_connection(server.getsockname())
    held += [client, server.accept()[0]]
print("ready", flush=True)
sys.stdin.read()
"""


class Holders:
    """NAMESPACES processes, each in a namespace of its own with PAIRS connections."""

    def __init__(self, count: int, pairs: int, *prefix: str) -> None:
        self.processes = []
        try:
            for _ in range(count):
                process = subprocess.Popen([*prefix, "unshare", "--net", sys.executable, "-c",
                                            HOLDER, str(pairs)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.processes.append(process)
            for process in self.processes:
                assert process.stdout is not None
                if process.stdout.readline().strip() != "ready":
                    raise RuntimeError("a namespace holder did not start")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare(1) and ip(8) to make namespaces")
    load = subprocess.Popen(["unshare", "--net", "sh", "-c",
                             f"ip link set lo up && exec {sys.executable} -m benchmarks.loadgen "
                             f"--rows {HOST_SOCKETS}"],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert load.stdout is not None
        if not load.stdout.readline().startswith("ready"):
            pytest.skip(f"cannot hold {HOST_SOCKETS:,} sockets: {load.stderr.read().strip()}")
        try:
            holders = Holders(NAMESPACES, PAIRS)
        except (RuntimeError, OSError) as error:
            pytest.skip(f"cannot make {NAMESPACES} namespaces: {error}")
        try:
            yield holders
        finally:
            holders.close()
    finally:
        load.terminate()
        load.wait(timeout=60)


def raw_dump(sock: socket.socket, buffer: bytearray) -> int:
    """A dump's bytes, received and not decoded: what any sock_diag reader pays."""
    request = sockdiag.SockDiag.__new__(sockdiag.SockDiag)
    request._seq = 0
    message = request._legacy_request(ALL_STATES_MASK)
    sock.sendall(message)
    size = 0
    while True:
        got = sock.recv_into(buffer)
        size += got
        if int.from_bytes(buffer[4:6], sys.byteorder) == 3:        # NLMSG_DONE
            return size


def _read_or_skip(tables: tuple[str, str]) -> int:
    """A bare read of a namespace's tables; 0 for one gone since it was found (the host's
    other processes come and go: the poll skips those too)."""
    try:
        return bare_read(*tables)
    except OSError:
        return 0


def test_one_poll_of_every_namespace(benchmark, node):
    finder = NamespaceFinder()
    found = finder.scan().namespaces.values()
    namespaces = [namespace for namespace in found if namespace.openable]
    assert len(namespaces) >= NAMESPACES
    benchmark.group = f"--all-netns: {len(namespaces)} namespaces, {HOST_SOCKETS:,} sockets beside"
    sockets = []
    for namespace in namespaces:                 # opened once, as the source keeps its own
        sockets.append(sockdiag.open_in_namespace(namespace.netns_path, sockdiag._new_socket))
    buffer = bytearray(sockdiag.RECV_BYTES)
    tables = [(f"{namespace.proc_root}/net/tcp", f"{namespace.proc_root}/net/tcp6")
              for namespace in namespaces]
    polls = {}
    for kind in ("netlink", "proc"):
        source = AllNamespaces(warn=lambda message: None, netlink=kind == "netlink")
        watcher = Watcher()
        watcher.update(source.read(), time.time())

        def poll(source=source, watcher=watcher):
            snapshot = source.read()
            assert snapshot.namespaces >= NAMESPACES
            watcher.update(snapshot, time.time())
        polls[kind] = (poll, source)
    contenders = {
        "netlink poll": polls["netlink"][0],
        "netlink bare dumps": lambda: [raw_dump(sock, buffer) for sock in sockets],
        "proc poll": polls["proc"][0],
        "proc bare reads": lambda: [_read_or_skip(pair) for pair in tables],
        "discovery": finder.scan,
    }
    times = {name: [] for name in contenders}

    def one_round():
        for name, function in contenders.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else ROUNDS, iterations=1)
    for sock in sockets:
        sock.close()
    for _, source in polls.values():
        source.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {"netlink": medians["netlink poll"] / medians["netlink bare dumps"],
              "proc": medians["proc poll"] / medians["proc bare reads"]}
    count = len(namespaces)
    benchmark.extra_info.update({f"median_ms {name}": round(value * 1e3, 2)
                                 for name, value in medians.items()})
    benchmark.extra_info.update({f"per_namespace_ms {name}": round(value * 1e3 / count, 3)
                                 for name, value in medians.items() if name != "discovery"})
    benchmark.extra_info.update({f"ratio {kind} poll / bare": round(value, 3)
                                 for kind, value in ratios.items()})
    print(f"\n{benchmark.group}: " + ", ".join(f"{name} {value * 1e3:.1f} ms "
                                                 f"({value * 1e3 / count:.2f} ms a namespace)"
                                                 for name, value in medians.items())
          + "; " + ", ".join(f"{kind} poll / bare {value:.3f}" for kind, value in ratios.items()))
    if not benchmark.disabled:
        assert ratios["netlink"] <= 1.2
