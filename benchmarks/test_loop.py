"""The cadence on the real clock: run_every with real sleeps, each poll costing a
quarter of the interval. A loop that slept a fixed interval after each poll would
end 100 x 5 ms late; on the schedule, lateness stays flat.

The lateness of each poll's start against its tick goes to extra_info (printed with
-s); the target, drift between the first and the last 20 polls under two intervals,
is asserted when the benchmark really runs (not under ``--benchmark-disable``: one
run on a shared machine proves no time). The schedule's logic, on a fake clock, is
tests/test_loop.py's.
"""

from __future__ import annotations

import statistics
import time

from tcpfast.loop import run_every

INTERVAL = 0.020
POLL_COST = 0.005
POLLS = 100


class CountedStops:
    """Stops run_every after ``polls`` polls; sleeps for real in between."""

    def __init__(self, polls: int) -> None:
        self.left = polls
        self.requested = False

    def wait(self, seconds: float) -> bool:
        self.left -= 1
        if self.left <= 0:
            return True
        time.sleep(seconds)
        return False


def test_a_hundred_real_polls_do_not_drift(benchmark):
    starts: list[float] = []

    def poll() -> None:
        starts.append(time.monotonic())
        time.sleep(POLL_COST)

    def hundred_polls() -> None:
        starts.clear()
        run_every(INTERVAL, poll, CountedStops(POLLS))

    benchmark.group = "loop: 100 polls of 5 ms every 20 ms"
    benchmark.pedantic(hundred_polls, rounds=3, iterations=1, warmup_rounds=0)
    lateness = [start - (starts[0] + k * INTERVAL) for k, start in enumerate(starts)]
    first, last = statistics.median(lateness[:20]), statistics.median(lateness[-20:])
    benchmark.extra_info.update({"median_lateness_ms first 20": round(first * 1e3, 3),
                                 "median_lateness_ms last 20": round(last * 1e3, 3),
                                 "max_lateness_ms": round(max(lateness) * 1e3, 3)})
    print(f"\nlateness: first 20 {first * 1e3:.2f} ms, last 20 {last * 1e3:.2f} ms, "
          f"max {max(lateness) * 1e3:.2f} ms")
    assert len(starts) == POLLS
    if not benchmark.disabled:
        assert min(lateness) > -0.001            # none before its tick
        assert last - first < 2 * INTERVAL, f"lateness grew from {first:.4f} s to {last:.4f} s"
