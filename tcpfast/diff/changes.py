"""What changed between two polls: new and closed connections, by key set operations."""

from __future__ import annotations

import numpy as np

from . import keys


def new_connections(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rows of ``current`` that are new since ``previous``.

    A row is new when its key (family, addresses, ports) was absent before,
    or present only with a different non-zero socket inode (closed and
    reopened between the polls). Order follows ``current``.
    """
    return current[~keys.matched(current, previous)]


def closed_connections(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rows of ``previous`` whose connection is gone from ``current``."""
    return previous[~keys.matched(previous, current)]
