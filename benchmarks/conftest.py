import sys
from pathlib import Path

import pytest

from benchmarks.loadgen import LoadGenerator
from tcpfast import backend

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import private_netns  # the tests' helper

# Live benchmarks measure the benchmarks' own sockets in a namespace of their
# own, with its own socket hash table sized for a million: repeatable whatever
# else the host holds.
NETWORK_NAMESPACE = private_netns.enter(hash_entries=1 << 20)


def pytest_report_header() -> list[str]:
    return [f"tcpfast compiled modules in use: {backend.ACCELERATED}",
            f"network namespace: {NETWORK_NAMESPACE}"]


def rounds_for(rows: int) -> int:
    """Enough rounds for a stable median, without minutes per large case."""
    return max(3, min(30, 3_000_000 // max(rows, 1)))


@pytest.fixture
def run(benchmark):
    """benchmark.pedantic with rounds sized to the work; returns the last result."""
    def go(function, rows: int, *args):
        benchmark.extra_info["rows"] = rows
        return benchmark.pedantic(function, args=args, rounds=rounds_for(rows),
                                  iterations=1, warmup_rounds=1)
    return go


@pytest.fixture(scope="module")
def live_100k():
    """100k rows of real loopback sockets, held while the module's benchmarks run."""
    try:
        with LoadGenerator(100_000) as load:
            yield load.rows
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot open 100k loopback sockets here: {error}")
