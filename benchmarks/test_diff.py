"""Diff: new_connections() on 100k and 1M rows with 1% churn.

"kernel order": surviving sockets keep their relative order between polls, as
the kernel lists them (hash buckets in order, new sockets at a bucket's head);
"shuffled" is the worst case for the compiled walk. The numpy implementation
(the TCPFAST_PURE fallback) is measured at 100k for comparison.
"""

import numpy as np
import pytest

from benchmarks.tables import table
from tcpfast import CONNECTION_DTYPE, new_connections
from tcpfast.decode import parsing
from tcpfast.diff import keys


def churned(rows: int, order: str, churn: float = 0.01):
    """previous, current: 1% of the sockets closed, as many new ones opened."""
    previous = parsing.parse_counted(table(rows, 4), 4)[0]
    rng = np.random.default_rng(5)
    gone = int(rows * churn)
    survivors = previous[np.sort(rng.choice(rows, rows - gone, replace=False))]
    fresh = np.zeros(gone, dtype=CONNECTION_DTYPE)
    fresh["family"], fresh["state"] = 4, 1
    fresh["local_addr"][:, :4] = rng.integers(0, 256, (gone, 4))
    fresh["remote_port"] = rng.integers(0, 65536, gone)
    fresh["inode"] = rng.integers(2**31, 2**32, gone)
    at = np.sort(rng.integers(0, len(survivors), gone))
    current = np.insert(survivors, at, fresh)
    if order == "shuffled":
        current = current[rng.permutation(len(current))]
    return previous, current, gone


@pytest.mark.parametrize("order", ["kernel order", "shuffled"])
@pytest.mark.parametrize("rows", [100_000, 1_000_000])
def test_new_connections(benchmark, run, rows, order):
    previous, current, fresh = churned(rows, order)
    benchmark.group = f"diff {rows:>9,} rows, 1% churn"
    benchmark.extra_info.update(order=order, implementation="active")
    assert len(run(new_connections, rows, previous, current)) == fresh


def test_new_connections_numpy(benchmark, run):
    previous, current, fresh = churned(100_000, "kernel order")
    benchmark.group = f"diff {100_000:>9,} rows, 1% churn"
    benchmark.extra_info.update(order="kernel order", implementation="numpy")
    index = run(keys.match_numpy, 100_000, current, previous)
    assert (index < 0).sum() == fresh


@pytest.mark.parametrize("rows", [100_000, 1_000_000])
def test_unique(benchmark, run, rows):
    """Folding rows a read listed twice: done on every snapshot."""
    rows_array = parsing.parse_counted(table(rows, 4), 4)[0]
    benchmark.group = f"unique {rows:>9,} rows"
    assert run(keys.unique, rows, rows_array)[1] == 0
