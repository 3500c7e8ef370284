import pytest

from benchmarks.loadgen import LoadGenerator
from tcpfast import backend


def pytest_report_header() -> str:
    return f"tcpfast compiled modules in use: {backend.ACCELERATED}"


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
