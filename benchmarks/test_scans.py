"""Port-scan window: the cost of one poll with 10^5 distinct sources in the window.

Steady state of a 60 s window polled every 10 s: 100,000 sources, each making
two inbound connections (to two of 1,000 ports) per window, spread evenly over
the six polls, so the window holds 200,000 (source, port) pairs and each poll
brings 33,334 connections while as many expire. Measured: one ``update()``,
from the same state every round. "ipv6 half": half the sources are IPv6 (the
hashed key path); "quiet poll": nothing arrives, entries only expire.
"""

import copy

import numpy as np
import pytest

from tcpfast import CONNECTION_DTYPE
from tcpfast.detect import ScanDetector

SOURCES = 100_000
POLLS_PER_WINDOW = 6
INTERVAL = 10.0


def arrivals(sources: np.ndarray, ipv6: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two inbound connections per source, to random ports of 1,000."""
    rows = np.zeros(2 * len(sources), dtype=CONNECTION_DTYPE)
    source = np.repeat(sources, 2)
    six = np.repeat(ipv6, 2)
    rows["family"] = np.where(six, 6, 4)
    rows["state"] = 1
    source_bytes = source.astype(">u4").view(np.uint8).reshape(-1, 4)
    rows["remote_addr"][:, :4] = source_bytes             # 0.x.y.z: one address per source
    rows["remote_addr"][six, :4] = [0x20, 0x01, 0x0D, 0xB8]
    rows["remote_addr"][six, 12:16] = source_bytes[six]   # 2001:db8::x:y
    rows["local_addr"][:, :4] = [10, 0, 0, 5]
    rows["local_port"] = rng.integers(1, 1001, len(rows))
    return rows


def steady_state(ipv6_share: float) -> tuple[ScanDetector, list[np.ndarray]]:
    rng = np.random.default_rng(9)
    ipv6 = rng.random(SOURCES) < ipv6_share
    groups = np.array_split(np.arange(SOURCES), POLLS_PER_WINDOW)
    polls = [arrivals(group, ipv6[group], rng) for group in groups]
    detector = ScanDetector(ports=3, window=POLLS_PER_WINDOW * INTERVAL - 1)
    for step, rows in enumerate(polls):
        detector.update(rows, now=step * INTERVAL)
    return detector, polls


@pytest.mark.parametrize("case", ["ipv4", "ipv6 half", "quiet poll"])
def test_scan_window_poll(benchmark, case):
    detector, polls = steady_state(0.5 if case == "ipv6 half" else 0.0)
    incoming = polls[0][:0] if case == "quiet poll" else polls[0]
    now = POLLS_PER_WINDOW * INTERVAL
    benchmark.group = f"scan window, {SOURCES:,} sources per window"
    benchmark.extra_info.update(entries=len(detector), arriving=len(incoming))

    def setup():
        return (copy.deepcopy(detector), incoming, now), {}

    def poll(state, rows, at):
        return state.update(rows, now=at)

    assert benchmark.pedantic(poll, setup=setup, rounds=15, warmup_rounds=1) == []
