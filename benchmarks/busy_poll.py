"""One watcher's polls of this namespace, timed in-process: ``python -m benchmarks.busy_poll``.

Prints one JSON object: the first poll (a fresh Watcher: every row's
direction found) and then ``--polls`` steady polls (the diff against the last
poll), each the read and the watcher's update, in seconds. Run with and without
TCPFAST_PURE=1 to compare the compiled and the pure-Python code on the same sockets.
"""

from __future__ import annotations

import argparse
import json
import time

from tcpfast import backend
from tcpfast.sources import open_source
from tcpfast.watch import Watcher


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.busy_poll")
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--source", choices=("proc", "netlink"), default="proc")
    args = parser.parse_args()
    source = open_source(args.source)
    watcher = Watcher()
    times, rows = [], 0
    for _ in range(1 + args.polls):
        started = time.perf_counter()
        snapshot = source.read(size_hint=rows)
        watcher.update(snapshot, time.time())
        times.append(time.perf_counter() - started)
        rows = len(snapshot.rows)
    print(json.dumps({"first": times[0], "steady": times[1:], "rows": rows,
                      "compiled": backend.ACCELERATED}))


if __name__ == "__main__":
    main()
