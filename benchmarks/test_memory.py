"""Peak memory (RSS) of whole processes: the watcher polling a live 100k-row table
(without and with --process), psutil doing the same jobs (its parse alone, and
net_connections, which also walks every process's fds), and parsing a 1M-row table.
Reported in extra_info (peak_rss_mb): the kernel's VmHWM of the process, read from
/proc just before it ends (wait4's ru_maxrss would count the forking pytest process
too); a watcher's once it says (NOTIFY_SOCKET) that POLLS polls are done, the first
(every socket printed, every owner looked up) among them."""

import signal
import subprocess
import sys

import pytest
from watcher_process import Notifications

from benchmarks.tables import table

POLLS = 10


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


PRINT_PEAK = "\nprint(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"


def peak_rss_mb(command: list[str], polls: int | None = None) -> float:
    """Peak RSS of ``command``: a script (``-c``) prints its own at its end; a
    watcher's is read from /proc once it has done ``polls`` polls, then it is stopped."""
    if polls is None:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        out, err = child.communicate()
        assert child.returncode == 0, err
        return int(out.split()[-1]) / 1024
    notifications = Notifications()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=notifications.environment())
    try:
        notifications.wait_polls(polls, alive=lambda: child.poll() is None, timeout=600)
        peak = vm_hwm_mb(child.pid)
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate()
        notifications.close()
    assert child.returncode == 0, err
    return peak


def record(benchmark, group: str, command: list[str], polls: int | None = None):
    benchmark.group = group
    peak = benchmark.pedantic(peak_rss_mb, args=(command, polls), rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = round(peak, 1)
    print(f"\n{benchmark.name}: peak RSS {peak:.1f} MB")


def test_watcher_polling_live_100k(benchmark, live_100k):
    """POLLS polls (the first prints all 100k sockets), then SIGTERM."""
    record(benchmark, "peak RSS, live 100k rows",
           [sys.executable, "-m", "tcpfast", "--interval", "0.3"], polls=POLLS)


def test_watcher_with_process_polling_live_100k(benchmark, live_100k):
    """The same with every new socket's owner looked up (the first poll: all of them)."""
    record(benchmark, "peak RSS, live 100k rows",
           [sys.executable, "-m", "tcpfast", "--interval", "0.3", "--process"], polls=POLLS)


def test_psutil_polling_live_100k(benchmark, live_100k):
    """net_connections: its parse and the walk of every process's fds (the pids)."""
    pytest.importorskip("psutil")
    code = "import psutil\nfor _ in range(3): psutil.net_connections('tcp4')" + PRINT_PEAK
    record(benchmark, "peak RSS, live 100k rows", [sys.executable, "-c", code])


def test_psutil_parse_polling_live_100k(benchmark, live_100k):
    """psutil's parse alone, as net_connections does it but without the walk."""
    pytest.importorskip("psutil")
    code = ("import socket\nfrom psutil import _common, _pslinux\n"
            "sconn = getattr(_pslinux, 'ntp', _common).sconn\nfor _ in range(3):\n"
            "    {sconn(*row) for row in _pslinux.NetConnections.process_inet("
            "'/proc/net/tcp', socket.AF_INET, socket.SOCK_STREAM, {})}" + PRINT_PEAK)
    record(benchmark, "peak RSS, live 100k rows", [sys.executable, "-c", code])


def test_parse_1m_rows(benchmark, tmp_path):
    path = tmp_path / "tcp"
    path.write_bytes(table(1_000_000, 4))
    code = ("import sys\nfrom tcpfast.sources import read_table\n"
            "rows, bad = read_table(sys.argv[1], 4)\nassert len(rows) == 1_000_000 and not bad"
            + PRINT_PEAK)
    record(benchmark, "peak RSS, parse 1M rows", [sys.executable, "-c", code, str(path)])
