"""Short-lived loopback connections at a steady rate, each with a lifetime and a way of
closing, and a ledger of what was done: the load that shows what a watcher misses.

Connection ``i`` of ``connections`` opens at ``i * seconds / connections`` after the
start, lives ``lifetimes[i % L]`` seconds and is closed the way
``closes[(i // L) % C]`` says, so every (lifetime, close) pair comes round equally:

- ``client``: the connecting socket closes first (it ends in TIME_WAIT); the
  accepted socket closes when it reads the end (CLOSE_WAIT, LAST_ACK);
- ``server``: the accepted socket closes first, the client when it reads the end;
- ``reset``: the client closes with SO_LINGER 0 (a RST, no TIME_WAIT); the
  accepted socket closes when it reads the reset.

Lifetimes count from the moment connect() returned (the client is ESTABLISHED).
The connections are spread over worker processes (connection i to worker
``i % workers``), each an event loop (selectors) that holds at most
``max_open`` sockets at once (RLIMIT_NOFILE may be 20,000 and cannot be
raised): past it, opening waits, and the ledger says how late each opened.
Each worker listens on 127.0.0.1 (and ::1 when some connections are IPv6) on
a port of its own; nothing leaves loopback. Run it in a network namespace of
your own (tests/private_netns.py) to count only its sockets.

The ledger (:class:`Opened`, one per connection) says which two sockets each
connection made (:meth:`Opened.sockets`), when it opened and closed, and what
went wrong, if anything: what tests compare with the kernel's tracepoint
(tests/tracepoint.py) and with what tcpfast reported.

Library::

    plan = Plan(connections=1001, seconds=10)
    with LifetimeLoad(plan) as load:   # workers listening, nothing opened yet
        load.start()
        ledger = load.wait()

Command line::

    python tests/lifetimes.py --connections 1001 --seconds 10 [--json FILE]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import selectors
import socket
import struct
import subprocess
import sys
import time
import traceback
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from types import TracebackType

LIFETIMES = (0.0, 0.05, 0.4, 3.0, 8.0)
CLOSES = ("client", "server", "reset")
#: Sockets one worker holds at most (two per connection), well under 20,000 fds.
MAX_OPEN = 8_000
LISTEN_BACKLOG = 4_096
CONNECT_TIMEOUT = 5.0
#: How long after the last planned close a worker may still be busy before it gives up.
GRACE_SECONDS = 30.0
LINGER_ABORT = struct.pack("ii", 1, 0)
HOSTS = {4: "127.0.0.1", 6: "::1"}
WORKER_ARG = "--_worker"

Key = tuple[int, str, int, str, int]
"""(family, local address, local port, remote address, remote port) of one socket."""


@dataclass(frozen=True)
class Plan:
    """What to open: ``connections`` over ``seconds``, lifetimes and closes in turn."""

    connections: int
    seconds: float
    lifetimes: tuple[float, ...] = LIFETIMES
    closes: tuple[str, ...] = CLOSES
    ipv6_fraction: float = 0.0
    workers: int | None = None          # None: as few as the sockets held at once need
    max_open: int = MAX_OPEN

    def __post_init__(self) -> None:
        if self.connections < 1 or self.seconds < 0:
            raise ValueError("connections must be 1 or more and seconds 0 or more")
        if not self.lifetimes or min(self.lifetimes) < 0:
            raise ValueError("lifetimes must be one or more durations of 0 s or more")
        unknown = set(self.closes) - set(CLOSES)
        if not self.closes or unknown:
            raise ValueError(f"closes must be some of {', '.join(CLOSES)}, not {sorted(unknown)}")
        if not 0.0 <= self.ipv6_fraction <= 1.0:
            raise ValueError("ipv6_fraction must be between 0 and 1")
        if self.max_open < 2:
            raise ValueError("max_open must leave room for one connection (2 sockets)")

    @property
    def rate(self) -> float:
        """Connections opened per second."""
        return self.connections / self.seconds if self.seconds else math.inf

    def worker_count(self) -> int:
        """Workers enough for the sockets held at once (rate x longest lifetime x 2)."""
        if self.workers is not None:
            return max(1, self.workers)
        held = 2 * min(self.connections, self.rate * (max(self.lifetimes) + 1.0))
        return max(1, math.ceil(held / self.max_open))

    def family(self, index: int) -> int:
        """Connection ``index``'s family: IPv6 for ``ipv6_fraction`` of them, spread evenly."""
        fraction = self.ipv6_fraction
        return 6 if math.floor((index + 1) * fraction) > math.floor(index * fraction) else 4

    def connection(self, index: int) -> dict[str, object]:
        """Connection ``index``'s plan: start offset, lifetime, close, family."""
        lifetimes, closes = len(self.lifetimes), len(self.closes)
        return {"index": index, "start": index * self.seconds / self.connections,
                "lifetime": self.lifetimes[index % lifetimes],
                "close": self.closes[(index // lifetimes) % closes], "family": self.family(index)}


@dataclass
class Opened:
    """One connection of the ledger, as its worker made it (times are time.time())."""

    index: int
    family: int
    lifetime: float
    close: str
    planned: float                      # when it was to open
    opened: float | None = None         # when connect() returned
    client: tuple[str, int] | None = None      # the connecting socket's address
    server: tuple[str, int] | None = None      # the listener's (the accepted socket's) address
    accepted: float | None = None
    first_closed: float | None = None   # the close the plan asked for
    last_closed: float | None = None    # the other side's, once it read the end
    error: str | None = None

    def sockets(self) -> list[tuple[str, Key]]:
        """The connection's two sockets: ("client", key) and ("server", key)."""
        if self.client is None or self.server is None:
            return []
        (client, client_port), (server, server_port) = self.client, self.server
        return [("client", (self.family, client, client_port, server, server_port)),
                ("server", (self.family, server, server_port, client, client_port))]


@dataclass
class Ledger:
    """What a load did: every connection, and when it ran."""

    plan: Plan
    connections: list[Opened] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def errors(self) -> list[Opened]:
        return [opened for opened in self.connections if opened.error is not None]

    def sockets(self) -> Iterator[tuple[Opened, str, Key]]:
        for opened in self.connections:
            for side, key in opened.sockets():
                yield opened, side, key

    def lateness(self) -> float:
        """How much later than planned the latest connection opened (seconds)."""
        return max((opened.opened - opened.planned for opened in self.connections
                    if opened.opened is not None), default=0.0)

    def summary(self) -> str:
        opened = sum(1 for item in self.connections if item.opened is not None)
        return (f"{opened} of {len(self.connections)} connections opened "
                f"({2 * opened} sockets) in {self.finished - self.started:.1f} s, "
                f"{len(self.errors)} errors, latest {1000 * self.lateness():.1f} ms late")


class LifetimeLoad:
    """Runs a :class:`Plan` over worker processes; see the module docstring.

    Entering starts the workers and returns when they listen; :meth:`start` sets
    them going; :meth:`wait` returns the ledger once every connection is closed
    (RuntimeError when a worker fails). Leaving stops any worker still running.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._processes: list[subprocess.Popen[bytes]] = []
        self._started = 0.0

    def __enter__(self) -> LifetimeLoad:
        workers = self.plan.worker_count()
        script = os.path.abspath(__file__)
        try:
            for worker in range(workers):
                indices = range(worker, self.plan.connections, workers)
                spec = {"connections": [self.plan.connection(index) for index in indices],
                        "max_open": self.plan.max_open,
                        "families": sorted({self.plan.family(index)
                                            for index in range(self.plan.connections)})}
                process = subprocess.Popen([sys.executable, "-I", script, WORKER_ARG],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           start_new_session=True)
                self._processes.append(process)
                assert process.stdin is not None
                process.stdin.write(json.dumps(spec).encode() + b"\n")
                process.stdin.flush()
            for process in self._processes:
                _expect(process, "listening")
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def start(self, delay: float = 0.05) -> float:
        """Set every worker going ``delay`` seconds from now; returns that time.time()."""
        start_monotonic = time.monotonic() + delay
        self._started = time.time() + delay
        for process in self._processes:
            assert process.stdin is not None
            process.stdin.write(f"{start_monotonic!r} {self._started!r}\n".encode())
            process.stdin.flush()
        return self._started

    def wait(self) -> Ledger:
        """Every worker's ledger, once all their connections are closed."""
        ledger = Ledger(self.plan, started=self._started)
        for process in self._processes:
            report = _expect(process, "ledger")
            ledger.connections += [_opened(item) for item in report["ledger"]]
        ledger.connections.sort(key=lambda opened: opened.index)
        ledger.finished = time.time()
        self._stop()
        return ledger

    def _stop(self) -> None:
        processes, self._processes = self._processes, []
        for process in processes:
            if process.stdin is not None and not process.stdin.closed:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def run(plan: Plan) -> Ledger:
    """Run ``plan`` to the end and return its ledger."""
    with LifetimeLoad(plan) as load:
        load.start()
        return load.wait()


def _expect(process: subprocess.Popen[bytes], what: str) -> dict:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"lifetimes worker {process.pid} exited ({process.wait()}) "
                           f"before saying {what}")
    report = json.loads(line)
    if "error" in report:
        raise RuntimeError(f"lifetimes worker {process.pid} failed:\n{report['error']}")
    if what not in report:
        raise RuntimeError(f"lifetimes worker {process.pid} said {sorted(report)}, not {what}")
    return report


def _opened(item: dict) -> Opened:
    for name in ("client", "server"):
        if item[name] is not None:
            item[name] = (item[name][0], item[name][1])
    return Opened(**item)


# --- the worker: one event loop -------------------------------------------------------

class _Connection:
    __slots__ = ("client", "due", "record", "server")

    def __init__(self, record: Opened) -> None:
        self.record = record
        self.client: socket.socket | None = None
        self.server: socket.socket | None = None
        self.due: float | None = None       # time.monotonic() of the planned close


class _Worker:
    def __init__(self, spec: dict, start_monotonic: float, start_wall: float,
                 listeners: dict[int, socket.socket]) -> None:
        self.selector = selectors.DefaultSelector()
        self.listeners = listeners
        self.max_open = int(spec["max_open"])
        self.start_monotonic, self.start_wall = start_monotonic, start_wall
        self.pending = [(start_monotonic + plan["start"], plan) for plan in spec["connections"]]
        self.pending.reverse()              # pop() takes the earliest
        self.records: list[Opened] = []
        self.accepting: dict[tuple[int, int], _Connection] = {}    # (family, client port)
        self.timers: list[tuple[float, int, _Connection]] = []
        self.sequence = itertools.count()
        self.open_sockets = 0
        self.unfinished = len(self.pending)
        for listener in listeners.values():
            self.selector.register(listener, selectors.EVENT_READ, ("accept", None))

    def run(self) -> list[Opened]:
        last = max((due for due, _ in self.pending), default=self.start_monotonic)
        give_up = last + max((plan["lifetime"] for _, plan in self.pending), default=0) \
            + GRACE_SECONDS
        while self.unfinished:
            now = time.monotonic()
            if now > give_up:
                raise TimeoutError(f"{self.unfinished} connections not closed in time")
            while self.pending and self.pending[-1][0] <= now and \
                    self.open_sockets + 2 <= self.max_open:
                self._open(self.pending.pop()[1])
            while self.timers and self.timers[0][0] <= now:
                _, _, connection = heapq.heappop(self.timers)
                self._close_first(connection)
            wake = [give_up]
            if self.pending and self.open_sockets + 2 <= self.max_open:
                wake.append(self.pending[-1][0])
            if self.timers:
                wake.append(self.timers[0][0])
            for key, _ in self.selector.select(max(0.0, min(wake) - time.monotonic())):
                action, connection = key.data
                sock = typing.cast(socket.socket, key.fileobj)
                if action == "accept":
                    self._accept(sock)
                else:
                    self._read_end(connection, sock)
        return self.records

    def _open(self, plan: dict) -> None:
        record = Opened(plan["index"], plan["family"], plan["lifetime"], plan["close"],
                        planned=self.start_wall + plan["start"])
        self.records.append(record)
        connection = _Connection(record)
        family = socket.AF_INET6 if record.family == 6 else socket.AF_INET
        client = socket.socket(family, socket.SOCK_STREAM)
        self.open_sockets += 1
        connection.client = client
        try:
            client.settimeout(CONNECT_TIMEOUT)
            client.connect(self.listeners[record.family].getsockname()[:2])
        except OSError as error:
            record.error = f"connect: {error}"
            self._forget(client)
            connection.client = None
            self.unfinished -= 1
            return
        record.opened = time.time()
        connection.due = time.monotonic() + record.lifetime
        record.client = client.getsockname()[:2]
        record.server = client.getpeername()[:2]
        client.setblocking(False)
        self.accepting[(record.family, record.client[1])] = connection

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                accepted, peer = listener.accept()
            except BlockingIOError:
                return
            self.open_sockets += 1
            accepted.setblocking(False)
            family = 6 if accepted.family == socket.AF_INET6 else 4
            connection = self.accepting.pop((family, peer[1]), None)
            if connection is None:          # not one of ours: never expected on our port
                self._forget(accepted)
                continue
            connection.server = accepted
            connection.record.accepted = time.time()
            assert connection.due is not None
            heapq.heappush(self.timers, (connection.due, next(self.sequence), connection))

    def _close_first(self, connection: _Connection) -> None:
        record = connection.record
        assert connection.client is not None and connection.server is not None
        if record.close == "server":
            first, other = connection.server, connection.client
            connection.server = None
        else:
            if record.close == "reset":
                connection.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            first, other = connection.client, connection.server
            connection.client = None
        self._forget(first)
        record.first_closed = time.time()
        self.selector.register(other, selectors.EVENT_READ, ("end", connection))

    def _read_end(self, connection: _Connection, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if data:
            return                          # the load never sends: not expected
        self.selector.unregister(sock)
        self._forget(sock)
        connection.record.last_closed = time.time()
        connection.client = connection.server = None
        self.unfinished -= 1

    def _forget(self, sock: socket.socket) -> None:
        sock.close()
        self.open_sockets -= 1


def _worker_main() -> int:
    """Worker process: a spec line on stdin, "listening", a start line, the ledger."""
    listeners: dict[int, socket.socket] = {}
    try:
        try:
            spec = json.loads(sys.stdin.readline())
            for family in spec["families"]:
                listener = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                         socket.SOCK_STREAM)
                listeners[family] = listener
                listener.bind((HOSTS[family], 0))
                listener.listen(LISTEN_BACKLOG)
                listener.setblocking(False)
            _say({"listening": [listener.getsockname()[:2] for listener in listeners.values()]})
            start = sys.stdin.readline().split()
            if not start:
                return 0                    # stopped before the start
            worker = _Worker(spec, float(start[0]), float(start[1]), listeners)
            records = worker.run()
        except Exception:
            _say({"error": traceback.format_exc()})
            return 1
        _say({"ledger": [asdict(record) for record in records]})
        return 0
    finally:
        for listener in listeners.values():
            listener.close()


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/lifetimes.py",
                                     description="Open short-lived loopback connections at "
                                                 "a steady rate and print what was done.")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--lifetimes", type=_numbers, default=LIFETIMES, metavar="S,S,...")
    parser.add_argument("--closes", type=lambda text: tuple(text.split(",")), default=CLOSES,
                        metavar="client,server,reset")
    parser.add_argument("--ipv6-fraction", type=float, default=0.0)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--json", metavar="FILE", help="write the ledger there")
    args = parser.parse_args(argv)
    try:
        plan = Plan(args.connections, args.seconds, args.lifetimes, args.closes,
                    args.ipv6_fraction, args.workers)
    except ValueError as error:
        parser.error(str(error))
    try:
        ledger = run(plan)
    except RuntimeError as error:
        print(f"lifetimes: {error}", file=sys.stderr)
        return 1
    print(ledger.summary())
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(opened) for opened in ledger.connections], out)
    return 0 if not ledger.errors else 1


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_ARG]:
        sys.exit(_worker_main())
    sys.exit(main())
