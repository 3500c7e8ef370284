"""Peak memory (RSS) of whole processes: the watcher polling a live 100k-row table,
psutil doing the same job, and parsing a 1M-row table. Reported in extra_info
(peak_rss_mb): the kernel's VmHWM of the process, read from /proc just before
it ends (wait4's ru_maxrss would count the forking pytest process too)."""

import signal
import subprocess
import sys
import time

import pytest

from benchmarks.tables import table


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


PRINT_PEAK = "\nprint(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"


def peak_rss_mb(command: list[str], run_for: float | None = None) -> float:
    """Peak RSS of ``command``: a script (``-c``) prints its own at its end; a
    long-running one is read from /proc after ``run_for`` s, then stopped."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE if run_for is None else
                             subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run_for is None:
        out, err = child.communicate()
        assert child.returncode == 0, err
        return int(out.split()[-1]) / 1024
    time.sleep(run_for)
    peak = vm_hwm_mb(child.pid)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate()
    assert child.returncode == 0, err
    return peak



def record(benchmark, group: str, command: list[str], run_for: float | None = None):
    benchmark.group = group
    peak = benchmark.pedantic(peak_rss_mb, args=(command, run_for), rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = round(peak, 1)
    print(f"\n{benchmark.name}: peak RSS {peak:.1f} MB")


def test_watcher_polling_live_100k(benchmark, live_100k):
    """Ten polls or so (the first prints all 100k sockets), then SIGTERM."""
    record(benchmark, "peak RSS, live 100k rows",
           [sys.executable, "-m", "tcpfast", "--interval", "0.3"], run_for=4.0)


def test_psutil_polling_live_100k(benchmark, live_100k):
    pytest.importorskip("psutil")
    code = "import psutil\nfor _ in range(3): psutil.net_connections('tcp4')" + PRINT_PEAK
    record(benchmark, "peak RSS, live 100k rows", [sys.executable, "-c", code])


def test_parse_1m_rows(benchmark, tmp_path):
    path = tmp_path / "tcp"
    path.write_bytes(table(1_000_000, 4))
    code = ("import sys\nfrom tcpfast.sources import read_table\n"
            "rows, bad = read_table(sys.argv[1], 4)\nassert len(rows) == 1_000_000 and not bad"
            + PRINT_PEAK)
    record(benchmark, "peak RSS, parse 1M rows", [sys.executable, "-c", code, str(path)])
