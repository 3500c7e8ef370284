"""One full poll of the live /proc/net/tcp with N real loopback sockets, against a
bare read() of the same file and psutil.net_connections('tcp4'), in the same run.

The load (benchmarks/loadgen.py) is opened once per size and held by worker
processes; a benchmark skips, with the reason, where it cannot be created.
"""

import shutil
import subprocess

import pytest

from benchmarks.loadgen import LoadGenerator
from tcpfast import new_connections, read_snapshot, snapshot

SIZES = [10_000, 100_000]


@pytest.fixture(scope="module", params=SIZES, ids=lambda rows: f"{rows}rows")
def live_rows(request):
    try:
        with LoadGenerator(request.param) as load:
            yield load.rows
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot open {request.param} loopback sockets here: {error}")


def bare_read(*paths: str) -> int:
    """What any reader pays: the kernel formatting the tables, a page per read()."""
    size = 0
    for path in paths:
        with open(path, "rb", buffering=0) as table:
            size += len(table.read())
    return size


def full_poll(previous, families=(4, 6)):
    """What tcpfast does each poll: read + parse the tables, fold, diff."""
    return new_connections(previous, read_snapshot(families=families).rows)


def test_bare_read_tcp(benchmark, run, live_rows):
    benchmark.group = f"poll live {live_rows:>7,} rows"
    assert run(bare_read, live_rows, "/proc/net/tcp") > 150 * live_rows


def test_full_poll_tcp(benchmark, run, live_rows):
    """The same file as the bare read: what tcpfast adds to the kernel's cost."""
    benchmark.group = f"poll live {live_rows:>7,} rows"
    previous = read_snapshot(families=(4,)).rows
    assert len(previous) >= live_rows
    run(full_poll, live_rows, previous, (4,))


def test_bare_read_both(benchmark, run, live_rows):
    """tcp6 too: the kernel walks every socket again to list the IPv6 ones."""
    benchmark.group = f"poll live {live_rows:>7,} rows"
    assert run(bare_read, live_rows, "/proc/net/tcp", "/proc/net/tcp6") > 150 * live_rows


def test_full_poll(benchmark, run, live_rows):
    """The product's poll: both tables."""
    benchmark.group = f"poll live {live_rows:>7,} rows"
    previous = snapshot()
    assert len(previous) >= live_rows
    run(full_poll, live_rows, previous)


def test_snapshot(benchmark, run, live_rows):
    benchmark.group = f"poll live {live_rows:>7,} rows"
    assert len(run(snapshot, live_rows)) >= live_rows


def test_psutil(benchmark, live_rows):
    psutil = pytest.importorskip("psutil")
    benchmark.group = f"poll live {live_rows:>7,} rows"
    benchmark.extra_info["rows"] = live_rows
    result = benchmark.pedantic(psutil.net_connections, args=("tcp4",), rounds=3,
                                iterations=1, warmup_rounds=0)
    assert len(result) >= live_rows


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2 ss is not installed")
def test_ss(benchmark, run, live_rows):
    """netlink, binary: the fastest standard tool (text output included)."""
    benchmark.group = f"poll live {live_rows:>7,} rows"
    command = ["ss", "-tanH"]
    run(lambda: subprocess.run(command, stdout=subprocess.DEVNULL, check=True), live_rows)
