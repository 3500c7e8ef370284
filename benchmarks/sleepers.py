"""Many idle processes spread over network namespaces of their own, for namespace discovery.

A holder process forks one leader per namespace; each leader enters a new
network namespace (``unshare(CLONE_NEWNET)``: as root; otherwise inside a user
namespace of its own) and forks the rest of its share. Every process then
blocks reading a pipe whose write end only the holder has: when the holder
ends (its stdin closed, or killed), every sleeper reads EOF and exits, so none
outlives its caller. The namespaces die with their last process.

Library use::

    with Sleepers(1_000, namespaces=10) as sleepers:
        sleepers.groups        # pids of each namespace, leader first

Command line (prints the groups as JSON, holds them until stdin closes)::

    python -m benchmarks.sleepers --processes 1000 --namespaces 10
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from types import TracebackType

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MAX_PROCESSES = 5_000
"""Bounds what one typo can start (the machine is shared)."""
HOLDER_ARG = "--_holder"


def _unshare_network() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare: {os.strerror(error)}")


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


def _hold(processes: int, namespaces: int) -> None:
    """The holder: start the groups, print their pids, wait for EOF on stdin."""
    asleep_read, asleep_write = os.pipe()       # sleepers block on reading this
    report_read, report_write = os.pipe()       # each leader reports its group's pids
    leaders = []
    for index in range(namespaces):
        size = _share(processes, namespaces, index)
        pid = os.fork()
        if pid == 0:
            os.close(asleep_write)
            os.close(report_read)
            status = 1
            try:
                _unshare_network()
                group = [os.getpid()]
                for _ in range(size - 1):
                    child = os.fork()
                    if child == 0:
                        os.close(report_write)
                        os.read(asleep_read, 1)         # EOF once the holder is gone
                        os._exit(0)
                    group.append(child)
                os.write(report_write, (json.dumps(group) + "\n").encode())
                os.close(report_write)
                os.read(asleep_read, 1)
                status = 0
            except BaseException as error:
                os.write(report_write, (json.dumps({"error": str(error)}) + "\n").encode())
            finally:
                os._exit(status)
        leaders.append(pid)
    os.close(asleep_read)
    os.close(report_write)
    groups = []
    with os.fdopen(report_read) as reports:
        for line in reports:
            groups.append(json.loads(line))
    print(json.dumps(groups), flush=True)
    sys.stdin.read()
    os.close(asleep_write)
    for pid in leaders:
        os.waitpid(pid, 0)


class Sleepers:
    """Context manager: ``processes`` idle processes in ``namespaces`` new network namespaces.

    ``groups``: the pids of each namespace (leader first). Raises RuntimeError
    when they cannot be started (no namespaces allowed here, say).
    """

    def __init__(self, processes: int, namespaces: int) -> None:
        if not 1 <= namespaces <= processes <= MAX_PROCESSES:
            raise ValueError(f"need 1 <= namespaces <= processes <= {MAX_PROCESSES}")
        self.processes, self.namespaces = processes, namespaces
        self.groups: list[list[int]] = []
        self._holder: subprocess.Popen[str] | None = None

    def __enter__(self) -> Sleepers:
        self._holder = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), HOLDER_ARG,
             str(self.processes), str(self.namespaces)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        groups = json.loads(line) if line else [{"error": "the holder ended at once"}]
        failed = [group["error"] for group in groups if isinstance(group, dict)]
        if failed:
            self.__exit__(None, None, None)
            raise RuntimeError(f"cannot start sleepers: {failed[0]}")
        self.groups = groups
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        assert holder.stdin is not None
        holder.stdin.close()
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == HOLDER_ARG:
        _hold(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1_000)
    parser.add_argument("--namespaces", type=int, default=10)
    arguments = parser.parse_args()
    with Sleepers(arguments.processes, arguments.namespaces) as sleepers:
        print(json.dumps(sleepers.groups), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
