"""Open and hold many real loopback TCP connections, to benchmark /proc/net/tcp readers.

What ``rows`` counts: every connected pair shows up as two rows (the client
socket and the socket ``accept()`` returned) and every listener as one, so

    rows = 2 * connections + listeners

summed over /proc/net/tcp and /proc/net/tcp6. The requested ``rows`` is an upper
bound: the load is sized to it exactly, or a few rows under it when parity
or the listener count do not allow exactness. ``LoadGenerator.rows`` is the
number actually opened.

Layout, and why:

* RLIMIT_NOFILE may be as low as 20,000 and not raisable, so the sockets are
  spread over worker processes of at most 4,000 pairs (8,000 fds) each.
* Each worker listens on its own IPv4 address (127.1.0.1, 127.1.0.2, ...) with
  a kernel-chosen port. Distinct destinations keep every worker's connections
  within the ephemeral port range (ip_local_port_range, ~28k ports per
  destination), however many rows are asked for.
* IPv6 has one loopback address, so each worker with IPv6 connections gets its
  own ``::1`` listener port instead.
* Every socket has SO_LINGER 0, so closing it (or the worker dying) sends a RST
  and leaves no TIME_WAIT behind to pollute the next measurement.
* A worker stops when its stdin reaches EOF: the parent closing the pipe and the
  parent dying look the same, so workers never outlive their parent. Workers
  run in their own session, so a terminal's Ctrl-C reaches only the parent,
  which then stops them in order.

Nothing here ever leaves loopback: listeners bind 127.1.x.y or ::1 only, and
clients connect only to those listeners.

Limits beyond this module: fs.file-max, fs.nr_open and net.core.somaxconn
(the listen backlog is min(4096, somaxconn)); if nf_conntrack tracks loopback,
each connection takes an entry, so more connections than nf_conntrack_max make
the handshakes stall and ``LoadGenerator`` time out.

With ``listeners=N`` the connections share N listeners instead, as a busy
server's do (every connection to one listener has the same local end): the
parent opens the listening sockets and hands them to every worker, each worker
connects its clients from a source address of its own (127.2.0.W: its own
ephemeral ports) and accepts as many connections as it opened, from the shared
queue, in batches small enough for all workers at once to stay under the
backlog. IPv4 only.

Library use::

    with LoadGenerator(rows=100_000, ipv6_fraction=0.1) as load:
        ...  # load.connections, load.listen_addresses
    with LoadGenerator(rows=160_001, listeners=1) as load:
        ...  # 80,000 connections to one listener

Command line::

    python -m benchmarks.loadgen --rows 100000 [--ipv6-fraction 0.1] [--listeners N]
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import math
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import warnings
from types import FrameType, TracebackType
from typing import NoReturn

MAX_PAIRS_PER_WORKER = 4_000
"""Client + accepted socket per pair: ~8,000 fds, well under a 20,000 RLIMIT_NOFILE."""

MAX_ROWS = 1_100_000
"""Bounds the processes and kernel memory one typo can claim (138 workers at most)."""

LISTEN_BACKLOG = 4_096
CONNECT_BATCH = 1_024
"""Under the listen backlog, so a full accept queue never drops a handshake (a
dropped handshake costs a retransmit timeout of a second or more)."""

DEFAULT_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
"""How long workers get to close their sockets after being told to stop, and again
after SIGTERM, before they are killed."""

IPV4_BASE = ipaddress.IPv4Address("127.1.0.0")
CLIENT_BASE = ipaddress.IPv4Address("127.2.0.0")
"""Shared listeners: worker W's clients connect from 127.2.0.W (ports of its own)."""
IPV6_LOOPBACK = "::1"
LINGER_ABORT = struct.pack("ii", 1, 0)
WORKER_ARG = "--_worker"
"""Internal first argument that makes this file run as a worker process."""

Target = tuple[str, int]
"""(listener host, number of connected pairs to open to it)."""


def plan_workers(rows: int, ipv6_fraction: float) -> list[list[Target]]:
    """Split ``rows`` into one list of listener targets per worker.

    Listeners cost rows too, and how many there are depends on how many workers
    the pairs need, so start from ``rows // 2`` pairs and shrink until the total
    fits. Shrinking only (never growing back) guarantees the loop ends.
    """
    if not 3 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 3 (a listener and one pair) and {MAX_ROWS}, not {rows}")
    if not 0.0 <= ipv6_fraction <= 1.0:
        raise ValueError(f"ipv6_fraction must be between 0 and 1, not {ipv6_fraction}")
    pairs = rows // 2
    while True:
        plan = _split(pairs, ipv6_fraction)
        listeners = sum(len(targets) for targets in plan)
        if 2 * pairs + listeners <= rows:
            return plan
        pairs = min(pairs - 1, (rows - listeners) // 2)


def _split(pairs: int, ipv6_fraction: float) -> list[list[Target]]:
    """Spread ``pairs`` evenly over as few workers as the per-worker cap allows.

    The IPv6 pairs are spread evenly too; an even share of a smaller total never
    exceeds the worker's even share of all pairs, so IPv4 counts stay >= 0.
    """
    workers = math.ceil(pairs / MAX_PAIRS_PER_WORKER)
    ipv6_pairs = round(pairs * ipv6_fraction)
    plan = []
    for index in range(workers):
        total = _share(pairs, workers, index)
        ipv6 = _share(ipv6_pairs, workers, index)
        ipv4_host = str(IPV4_BASE + index + 1)
        plan.append([(host, count) for host, count in ((ipv4_host, total - ipv6), (IPV6_LOOPBACK, ipv6))
                     if count])
    return plan


def _plan_shared(rows: int, listeners: int) -> list[list[Target]]:
    """Workers' targets for connections to ``listeners`` shared listeners ("#K": the
    Kth): at least one worker per listener, worker W on listener W mod N."""
    pairs = (rows - listeners) // 2
    workers = max(math.ceil(pairs / MAX_PAIRS_PER_WORKER), listeners)
    plan = []
    for listener in range(listeners):
        mine = list(range(listener, workers, listeners))
        share = _share(pairs, listeners, listener)
        plan += [[(f"#{listener}", _share(share, len(mine), index))] for index in range(len(mine))]
    return plan


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


def _uses_ipv6(plan: list[list[Target]]) -> bool:
    return any(host == IPV6_LOOPBACK for targets in plan for host, _ in targets)


def ipv6_loopback_usable() -> bool:
    """Whether a TCP socket can bind ::1 (IPv6 may be compiled out or disabled)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind((IPV6_LOOPBACK, 0))
    except OSError:
        return False
    return True


class LoadGenerator:
    """Context manager holding ~``rows`` rows of real loopback TCP sockets open.

    ``__enter__`` returns once every worker holds its connections, or raises
    RuntimeError (after stopping every worker) if one fails or the load is not up
    within ``timeout`` seconds. ``__exit__`` stops and reaps all workers.

    Attributes: ``rows`` (rows opened, see the module docstring), ``connections``
    (connected pairs), ``workers``, ``ipv6`` (whether any pairs use ::1) and, while
    entered, ``listen_addresses``: the (host, port) of every listener. A row is
    part of the load exactly when its local or remote address is one of them.
    """

    def __init__(self, rows: int, ipv6_fraction: float = 0.0, *, listeners: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._shared = listeners
        self._listeners: list[socket.socket] = []
        if listeners is not None:
            if not 1 <= listeners < rows // 2 or ipv6_fraction:
                raise ValueError("listeners must be 1 or more, fewer than the connections, "
                                 "and IPv4 only")
            self._plan = _plan_shared(rows, listeners)
        else:
            self._plan = plan_workers(rows, ipv6_fraction)
        if _uses_ipv6(self._plan) and not ipv6_loopback_usable():
            warnings.warn("cannot bind ::1, so every connection uses IPv4", RuntimeWarning, stacklevel=2)
            self._plan = plan_workers(rows, 0.0)
        self._timeout = timeout
        self._processes: list[subprocess.Popen[bytes]] = []
        self.connections = sum(count for targets in self._plan for _, count in targets)
        self.rows = 2 * self.connections + (
            listeners if listeners is not None else sum(len(targets) for targets in self._plan))
        self.workers = len(self._plan)
        self.ipv6 = _uses_ipv6(self._plan)
        self.listen_addresses: list[tuple[str, int]] = []

    def __enter__(self) -> LoadGenerator:
        if self._processes:
            raise RuntimeError("this LoadGenerator is already running")
        try:
            self._start()
        except BaseException:     # Ctrl-C while starting must not leave workers behind either
            self._stop(graceful=False)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop(graceful=True)

    def _start(self) -> None:
        script = os.path.abspath(__file__)
        if self._shared is not None:
            for index in range(self._shared):
                self._listeners.append(_listen(str(IPV4_BASE + index + 1), []))
        fds = [listener.fileno() for listener in self._listeners]
        batch = max(16, min(CONNECT_BATCH, LISTEN_BACKLOG // max(1, len(self._plan))))
        for index, targets in enumerate(self._plan):
            spec = json.dumps({"targets": targets, "timeout": self._timeout, "shared": fds,
                               "source": str(CLIENT_BASE + index + 1) if fds else None,
                               "batch": batch if fds else CONNECT_BATCH})
            # -I: the script's directory must not shadow stdlib modules in the worker.
            self._processes.append(subprocess.Popen(
                [sys.executable, "-I", script, WORKER_ARG, spec], pass_fds=fds,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True))
        reports = _collect_reports(self._processes, self._plan, time.monotonic() + self._timeout)
        if self._listeners:
            self.listen_addresses = [listener.getsockname()[:2] for listener in self._listeners]
        else:
            self.listen_addresses = [(host, port) for addresses in reports for host, port in addresses]

    def _stop(self, graceful: bool) -> None:
        """Close every worker's stdin (its stop signal), escalating to SIGTERM, then SIGKILL.

        A worker still opening connections reads stdin only once it is done, so a
        failed start goes straight to SIGTERM (``graceful=False``). That loses
        nothing: SO_LINGER 0 makes the kernel's close at exit as clean as the
        worker's own.
        """
        processes, self._processes = self._processes, []
        self.listen_addresses = []
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        running = _reap(processes, STOP_TIMEOUT) if graceful else processes
        for process in running:
            process.terminate()
        running = _reap(running, STOP_TIMEOUT)
        for process in running:
            process.kill()
            process.wait()
        for process in processes:
            assert process.stdout is not None
            process.stdout.close()
        for listener in self._listeners:
            listener.close()
        self._listeners = []


def _collect_reports(processes: list[subprocess.Popen[bytes]], plan: list[list[Target]],
                     deadline: float) -> list[list[tuple[str, int]]]:
    """Read each worker's one JSON line: its listener addresses, or its error.

    Raises RuntimeError on the first error report, on a worker that exits without
    reporting, or at the deadline.
    """
    reports: list[list[tuple[str, int]]] = [[] for _ in processes]
    received = [b""] * len(processes)
    with selectors.DefaultSelector() as selector:
        for index, process in enumerate(processes):
            assert process.stdout is not None
            selector.register(process.stdout, selectors.EVENT_READ, index)
        while selector.get_map():
            events = selector.select(max(0.0, deadline - time.monotonic()))
            if not events:
                raise RuntimeError(f"{len(selector.get_map())} of {len(processes)} loadgen workers"
                                   " were not ready before the timeout")
            for key, _ in events:
                index = key.data
                chunk = os.read(key.fd, 65536)
                received[index] += chunk
                if chunk and not received[index].endswith(b"\n"):
                    continue
                selector.unregister(key.fileobj)
                if not chunk:
                    code = processes[index].wait()
                    raise RuntimeError(f"loadgen worker {index} {plan[index]} exited with code {code}"
                                       " before reporting")
                report = json.loads(received[index])
                if "error" in report:
                    raise RuntimeError(f"loadgen worker {index} {plan[index]} failed:\n{report['error']}")
                reports[index] = [(host, port) for host, port in report["ready"]]
    return reports


def _reap(processes: list[subprocess.Popen[bytes]], timeout: float) -> list[subprocess.Popen[bytes]]:
    """Wait up to ``timeout`` seconds in all for ``processes``; return those still running."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    return [process for process in processes if process.poll() is None]


def _worker_main(spec_json: str) -> int:
    """Worker process: open the pairs, report one JSON line, hold until stdin's EOF.

    Every socket goes into ``sockets`` as soon as it exists, so the ``finally``
    closes all of them whatever fails halfway.
    """
    spec = json.loads(spec_json)
    deadline = time.monotonic() + float(spec["timeout"])
    sockets: list[socket.socket] = []
    try:
        try:
            addresses = []
            for host, count in spec["targets"]:
                if host.startswith("#"):              # a shared listener, handed over
                    listener = socket.socket(fileno=spec["shared"][int(host[1:])])
                    sockets.append(listener)
                    listener.setblocking(False)
                else:
                    listener = _listen(host, sockets)
                _connect_pairs(listener, count, sockets, deadline, spec.get("source"),
                               spec.get("batch", CONNECT_BATCH))
                addresses.append(listener.getsockname()[:2])
        except Exception:
            _report({"error": traceback.format_exc()})
            return 1
        _report({"ready": addresses})
        while os.read(sys.stdin.fileno(), 4096):
            pass
        return 0
    finally:
        for sock in sockets:
            sock.close()


def _report(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _new_socket(family: socket.AddressFamily, sockets: list[socket.socket]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
    return sock


def _listen(host: str, sockets: list[socket.socket]) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = _new_socket(family, sockets)
    listener.bind((host, 0))
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    return listener


def _connect_pairs(listener: socket.socket, count: int, sockets: list[socket.socket],
                   deadline: float, source: str | None = None, batch_size: int = CONNECT_BATCH) -> None:
    """Connect ``count`` clients to ``listener`` (from ``source``, if given) and accept
    as many, a batch at a time.

    Non-blocking connects cost one syscall each: on loopback the kernel completes
    the handshake on its own, and accepting the whole batch afterwards proves it did.
    """
    address = listener.getsockname()
    while count > 0:
        batch = min(count, batch_size)
        for _ in range(batch):
            client = _new_socket(listener.family, sockets)
            client.setblocking(False)
            if source is not None:
                client.bind((source, 0))
            error = client.connect_ex(address)
            if error not in (0, errno.EINPROGRESS):
                raise OSError(error, f"connect to {address[:2]}: {os.strerror(error)}")
        _accept(listener, batch, sockets, deadline)
        count -= batch


def _accept(listener: socket.socket, count: int, sockets: list[socket.socket], deadline: float) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        while count > 0:
            try:
                accepted, _ = listener.accept()
            except BlockingIOError:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{count} connections to {listener.getsockname()[:2]}"
                                       " not accepted before the timeout") from None
                continue
            sockets.append(accepted)
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            count -= 1


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Open and hold real loopback TCP connections until SIGINT or SIGTERM.")
    parser.add_argument("--rows", type=int, required=True,
                        help="rows to add to /proc/net/tcp{,6}: 2 per connection plus 1 per listener")
    parser.add_argument("--ipv6-fraction", type=float, default=0.0, metavar="F",
                        help="fraction of connections over ::1 (default 0)")
    parser.add_argument("--listeners", type=int, metavar="N",
                        help="connections share N listeners (IPv4), as a busy server's do")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up if the load is not up in this time (default {DEFAULT_TIMEOUT:g})")
    args = parser.parse_args(argv)
    try:
        load = LoadGenerator(args.rows, args.ipv6_fraction, listeners=args.listeners,
                             timeout=args.timeout)
    except ValueError as exc:
        parser.error(str(exc))
    # Set both explicitly: a shell starts background jobs with SIGINT ignored,
    # and SIGTERM should take the same cleanup path as Ctrl-C.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        with load:
            print(f"ready: {load.rows} rows ({load.connections} connections, {load.workers} workers)",
                  flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_ARG]:
        sys.exit(_worker_main(sys.argv[2]))
    sys.exit(main())
