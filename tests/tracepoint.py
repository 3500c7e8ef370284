"""Ground truth from the kernel: every TCP socket of one network namespace that reached
ESTABLISHED, seen through the tracepoint ``sock:inet_sock_set_state`` with bpftrace.

tcpfast did not produce any of this: the kernel fires the tracepoint inside
``tcp_set_state()`` (``inet_sk_state_store`` for the few direct stores), on every
state change of every full TCP socket, in every namespace. The bpftrace program
keeps the changes of ONE namespace (``skaddr`` cast to ``struct sock`` through
the kernel's BTF: ``__sk_common.skc_net.net->ns.inum``, checked on 6.18) and
prints one line for each change into ESTABLISHED, TIME_WAIT and CLOSE.

What it shows, measured on 6.18: a connection's two sockets go SYN_SENT ->
ESTABLISHED (the connecting side) and SYN_RECV -> ESTABLISHED (the accepted
child: the request socket before it is not a full socket and fires nothing).
A socket that ends in TIME_WAIT goes FIN_WAIT2 (or CLOSING) -> CLOSE: the
time-wait entry that replaces it is not a full socket and the full socket is
never seen in TIME_WAIT; its ``closed_from`` says which way it went. A reset
(SO_LINGER 0) goes ESTABLISHED -> CLOSE before ``tcp_disconnect()`` zeroes its
local address and remote port, so the tracepoint still shows all four.

Usage::

    with Tracepoint() as trace:          # this process's namespace; attached on entry
        ...                              # open and close connections
    trace.sockets                        # every socket that reached ESTABLISHED

A socket is identified by its kernel address (``skaddr``) between its change
into ESTABLISHED and its change into CLOSE (the address is reused after it is
freed). Lines are ordered by their kernel timestamps before they are read:
bpftrace drains one perf buffer per CPU, so its output is not in time order.

Nothing is lost silently: bpftrace says ``Lost N events`` when a perf buffer
overflowed, each CPU numbers the lines it prints (a gap is a line lost), and
the kernel counts the times it did not run the program at all
(``recursion_misses`` in the program's fdinfo: a tracepoint that fires while a
BPF program runs on that CPU, an interrupt's state change during ours, is
skipped; it happens under bursts of thousands of connections a second). Any
of these raises :class:`TraceLost` on exit; with ``allow_misses`` the
recursion misses are only counted (they may belong to other namespaces) and
the caller must prove the trace whole another way (benchmarks/coverage.py:
its ledger and the TCP counters). Where tracing is not possible (no bpftrace,
not root, no BTF, tracefs cannot be mounted, bpftrace refuses),
:func:`unavailable` says why and :func:`trace_or_skip` skips the test saying it.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, TypeVar

TRACEFS = "/sys/kernel/tracing"
BTF = "/sys/kernel/btf/vmlinux"
TRACEPOINT = "sock/inet_sock_set_state"
ATTACH_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
#: Markers not seen after this long are made again (a full buffer lost them).
MARK_AGAIN = 1.0
#: Pages per CPU of bpftrace's perf buffer (power of two): 4 MiB, room for bursts.
PERF_PAGES = 1024
F_SETPIPE_SZ = 1031
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

STATE_NAMES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
               6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
               11: "CLOSING", 12: "NEW_SYN_RECV"}
ESTABLISHED, SYN_SENT, SYN_RECV, TIME_WAIT, CLOSE = 1, 2, 3, 6, 7
#: The states a socket leaves for CLOSE when a time-wait entry takes its place.
INTO_TIME_WAIT = {"FIN_WAIT2", "CLOSING", "TIME_WAIT"}

_PROGRAM = """
BEGIN { printf("ready\\n"); }
tracepoint:sock:inet_sock_set_state
/args->protocol == 6
 && ((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum == NETNS
 && (args->newstate == 1 || args->newstate == 6 || args->newstate == 7)/
{
  @sequence[cpu] = @sequence[cpu] + 1;
  if (args->family == 2) {
    printf("S %d %d %llu %llx %d %d 4 %s %d %s %d\\n", cpu, @sequence[cpu], nsecs, args->skaddr,
           args->oldstate, args->newstate, ntop(2, args->saddr), args->sport,
           ntop(2, args->daddr), args->dport);
  } else {
    printf("S %d %d %llu %llx %d %d 6 %s %d %s %d\\n", cpu, @sequence[cpu], nsecs, args->skaddr,
           args->oldstate, args->newstate, ntop(10, args->saddr_v6), args->sport,
           ntop(10, args->daddr_v6), args->dport);
  }
}
END { clear(@sequence); }
"""
_LOST = re.compile(rb"Lost (\d+) events")
#: A marker: a listener on 0.0.0.0 closed (LISTEN -> CLOSE) on one CPU.
_MARKER = b" 10 7 4 0.0.0.0 %d 0.0.0.0 0\n"


class TracingUnavailable(RuntimeError):
    """Tracing cannot be done here; the message says why."""


class TraceLost(AssertionError):
    """bpftrace's output is not the whole truth: events were lost or cut off."""


class ProgramSkipped(TraceLost):
    """The kernel did not run the program for some state changes (recursion misses): on a
    host with bursts in other namespaces, the window's truth is unknown, not wrong."""


@dataclass
class TracedSocket:
    """One socket, from its change into ESTABLISHED to its change into CLOSE."""

    family: int
    local: str
    local_port: int
    remote: str
    remote_port: int
    skaddr: int
    side: str                      # "client" (from SYN_SENT), "server" (from SYN_RECV), "other"
    established: float             # time.time() when it reached ESTABLISHED
    closed: float | None = None    # time.time() when it changed into CLOSE (None: not yet)
    closed_from: str | None = None # the state it left for CLOSE
    time_wait: bool = False        # a time-wait entry took its place

    @property
    def key(self) -> tuple[int, str, int, str, int]:
        return (self.family, self.local, self.local_port, self.remote, self.remote_port)

    @property
    def lifetime(self) -> float | None:
        return None if self.closed is None else self.closed - self.established


@dataclass
class Trace:
    """What one tracing run saw of its namespace."""

    sockets: list[TracedSocket] = field(default_factory=list)
    #: Sockets that changed into CLOSE from SYN_SENT or SYN_RECV: connects that failed,
    #: accepted children that died before their handshake ended.
    failed_attempts: list[tuple[float, str]] = field(default_factory=list)
    changes: int = 0               # state changes read (what the kernel counted too)
    #: A socket seen in ESTABLISHED again before any CLOSE (never expected).
    anomalies: list[str] = field(default_factory=list)
    #: Times the kernel did not run the program (another BPF program was running on that
    #: CPU: an interrupt's state change during ours, a bpf() map call): in ANY namespace,
    #: so not necessarily ours. Only with ``allow_misses``; the caller then proves the
    #: trace whole otherwise (a ledger, the TCP counters).
    recursion_misses: int = 0


def namespace_inode(netns_path: str | None = None) -> int:
    """The inode number of a network namespace (what ``ns.inum`` holds); None: ours."""
    return os.stat(netns_path or "/proc/self/ns/net").st_ino


def mount_tracefs() -> None:
    """Mount tracefs at /sys/kernel/tracing unless it is mounted already (root only)."""
    if os.path.isdir(os.path.join(TRACEFS, "events")):
        return
    result = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS],
                            capture_output=True, text=True)
    if result.returncode != 0 and not os.path.isdir(os.path.join(TRACEFS, "events")):
        raise TracingUnavailable(f"cannot mount tracefs at {TRACEFS}: "
                                 f"{result.stderr.strip() or result.returncode}")


def unavailable() -> str | None:
    """Why tracing cannot be done here, or None (tracefs is mounted if it was not)."""
    if shutil.which("bpftrace") is None:
        return "bpftrace is not installed (Debian package bpftrace)"
    if os.geteuid() != 0:
        return "tracing needs root"
    if not os.path.exists(BTF):
        return f"the kernel has no BTF ({BTF}): struct sock cannot be read"
    try:
        mount_tracefs()
    except TracingUnavailable as error:
        return str(error)
    if not os.path.isdir(os.path.join(TRACEFS, "events", TRACEPOINT)):
        return f"the kernel has no tracepoint {TRACEPOINT}"
    return None


def trace_or_skip(netns_path: str | None = None) -> Tracepoint:
    """A Tracepoint for the tests, or a pytest skip saying why tracing is not possible."""
    import pytest
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no ground truth from the tracepoint: {reason}")
    return Tracepoint(netns_path)


def until_traced_whole(measure: Callable[[], T], attempts: int = 3) -> T:
    """``measure()`` (a window traced with :func:`trace_or_skip`), measured again in a fresh
    window when the kernel skipped the program in it (:class:`ProgramSkipped`), at most
    ``attempts`` times in all; each retry is said in a warning, and the last window's
    ProgramSkipped is raised. Any other failure is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return measure()
        except ProgramSkipped as skipped:
            if attempt == attempts:
                raise
            warnings.warn(f"window {attempt} of {attempts} not traced whole ({skipped}): "
                          "measured again", stacklevel=2)
    raise AssertionError("unreachable")


def _setns(netns_path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({netns_path}): {os.strerror(error)}")
    finally:
        os.close(fd)


class Tracepoint:
    """bpftrace on ``sock:inet_sock_set_state`` for one namespace (``netns_path``, a
    ``/proc/PID/ns/net`` or ``/var/run/netns/NAME`` file; None: this process's).

    Entering starts bpftrace and returns once it is attached: a marker socket
    closed on every CPU in the namespace has come out of it. Leaving marks
    every CPU again, waits for those markers (everything before them has then
    been read), stops bpftrace and fills :attr:`trace` (:attr:`sockets`),
    raising :class:`TraceLost` if anything was lost.
    """

    def __init__(self, netns_path: str | None = None, *, perf_pages: int = PERF_PAGES,
                 allow_misses: bool = False) -> None:
        self.netns_path = netns_path
        self._allow_misses = allow_misses
        self.netns_inode = namespace_inode(netns_path)
        self._perf_pages = perf_pages
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._output = bytearray()
        self._arrived = threading.Condition()
        self._ended = False
        self._reader: threading.Thread | None = None
        self._stderr = b""
        self._clock_offset = 0.0
        self.trace = Trace()

    @property
    def sockets(self) -> list[TracedSocket]:
        return self.trace.sockets

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Tracepoint:
        reason = unavailable()
        if reason is not None:
            raise TracingUnavailable(reason)
        program = _PROGRAM.replace("NETNS", str(self.netns_inode))
        environment = dict(os.environ, BPFTRACE_PERF_RB_PAGES=str(self._perf_pages))
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC: its offset to time.time(), once.
        self._clock_offset = time.time() - time.monotonic()
        self._errors = tempfile.TemporaryFile()     # a file: bpftrace never blocks on it
        self._process = subprocess.Popen(["bpftrace", "-B", "none", "-e", program],
                                         stdout=subprocess.PIPE, stderr=self._errors,
                                         env=environment, start_new_session=True)
        assert self._process.stdout is not None
        try:
            fcntl.fcntl(self._process.stdout.fileno(), F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass                            # the default 64 KiB pipe; the reader keeps up
        self._reader = threading.Thread(target=self._read, name="tracepoint-reader",
                                        daemon=True)
        self._reader.start()
        try:
            if not self._wait_for(lambda: b"ready\n" in self._output, ATTACH_TIMEOUT):
                raise TracingUnavailable(f"bpftrace did not start: {self._stop()}")
            if not self._mark_every_cpu(ATTACH_TIMEOUT):
                raise TracingUnavailable("bpftrace started but printed no state change of "
                                         f"namespace {self.netns_inode}: {self._stop()}")
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            flushed = exc_type is None and self._mark_every_cpu(STOP_TIMEOUT)
            misses = self._recursion_misses() if exc_type is None else 0
        finally:
            failure = self._stop()
        if exc_type is not None:
            return                          # the caller's error comes first
        output = bytes(self._output)
        lost = sum(int(count) for count in _LOST.findall(output + self._stderr))
        if lost:
            raise TraceLost(f"bpftrace lost {lost} events (its perf buffer was full)")
        if not flushed:
            raise TraceLost(f"bpftrace's output stopped before the last markers: {failure}")
        if misses and not self._allow_misses:
            raise ProgramSkipped(f"the kernel skipped the program {misses} times (recursion_misses: "
                            "a tracepoint fired while a BPF program ran on the same CPU)")
        self.trace = _read_trace(output, self._clock_offset)
        self.trace.recursion_misses = misses

    def _read(self) -> None:
        """Take everything bpftrace prints as it comes (it must never block on the pipe)."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 20)
            with self._arrived:
                if chunk:
                    self._output += chunk
                else:
                    self._ended = True
                self._arrived.notify_all()
            if not chunk:
                return

    def _wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: condition() or self._ended, timeout) \
                and condition()

    def _mark_every_cpu(self, timeout: float) -> bool:
        """Close a listener on each CPU in the namespace; True once bpftrace has printed all
        of them. Each CPU's perf buffer is read in order, so every state change that
        CPU made before its marker has been read by then. Markers a full buffer lost
        are made again, once a second, until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            markers = [_MARKER % port for port in self._markers()]
            if self._wait_for(functools.partial(self._printed, markers),
                              min(MARK_AGAIN, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline or self._ended:
                return False

    def _printed(self, markers: list[bytes]) -> bool:
        return all(marker in self._output for marker in markers)

    def _markers(self) -> list[int]:
        """The ports of the marker listeners, one closed on each CPU we may run on."""
        ports: list[int] = []
        failure: list[BaseException] = []

        def mark() -> None:
            try:
                if self.netns_path is not None:
                    _setns(self.netns_path)
                for cpu in range(os.cpu_count() or 1):
                    try:
                        os.sched_setaffinity(0, {cpu})      # this thread only
                    except OSError:
                        continue                            # offline, or not ours to use
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as marker:
                        marker.bind(("0.0.0.0", 0))
                        marker.listen()
                        ports.append(marker.getsockname()[1])
            except OSError as error:
                failure.append(error)

        worker = threading.Thread(target=mark, name="tracepoint-marker")
        worker.start()
        worker.join()
        if failure or not ports:
            raise TracingUnavailable(f"cannot mark the CPUs: {failure or 'none usable'}")
        return ports

    def _recursion_misses(self) -> int:
        """How often the kernel did not run bpftrace's programs (another BPF program was
        running on that CPU): from its program fds' fdinfo."""
        assert self._process is not None
        misses = 0
        fdinfo = f"/proc/{self._process.pid}/fdinfo"
        for name in os.listdir(fdinfo):
            try:
                with open(os.path.join(fdinfo, name)) as info:
                    text = info.read()
            except OSError:
                continue
            found = re.search(r"^recursion_misses:\s*(\d+)", text, re.MULTILINE)
            if "prog_type:" in text and found:
                misses += int(found.group(1))
        return misses

    def _stop(self) -> str:
        """Stop bpftrace (SIGINT); what it said on stderr."""
        process, self._process = self._process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()
        if self._errors is not None:
            self._errors.seek(0)
            self._stderr = self._errors.read()
            self._errors.close()
            self._errors = None
        said = [line for line in self._stderr.decode(errors="replace").splitlines()
                if "RLIMIT_MEMLOCK" not in line]       # harmless: memory is memcg-accounted
        return f"exit status {process.returncode}" + "".join(f"; {line}" for line in said)


def _read_trace(output: bytes, clock_offset: float) -> Trace:
    """The sockets the state-change lines tell of, read in kernel-time order.

    Each CPU numbers its lines 1, 2, 3...: a number missing is a line lost
    (TraceLost), whatever bpftrace said.
    """
    changes = []
    numbers: dict[int, list[int]] = {}
    for line in output.split(b"\n"):
        if not line.startswith(b"S "):
            continue
        fields = line.split()
        numbers.setdefault(int(fields[1]), []).append(int(fields[2]))
        changes.append((int(fields[3]), int(fields[4], 16), int(fields[5]), int(fields[6]),
                        int(fields[7]), fields[8].decode(), int(fields[9]),
                        fields[10].decode(), int(fields[11])))
    for cpu, seen in numbers.items():
        if seen != list(range(1, len(seen) + 1)):
            missing = len(set(range(1, max(seen) + 1)) - set(seen))
            raise TraceLost(f"CPU {cpu}: {missing} state change(s) numbered by the kernel "
                            "never came out of bpftrace")
    changes.sort(key=lambda change: change[0])
    trace = Trace(changes=len(changes))
    open_sockets: dict[int, TracedSocket] = {}
    for nsecs, skaddr, old, new, family, local, local_port, remote, remote_port in changes:
        when = nsecs / 1e9 + clock_offset
        current = open_sockets.get(skaddr)
        if new == ESTABLISHED:
            if current is not None:
                trace.anomalies.append(f"{skaddr:x} established again at {when:.6f} "
                                       f"without a close since {current.established:.6f}")
            side = {SYN_SENT: "client", SYN_RECV: "server"}.get(old, "other")
            traced = TracedSocket(family, local, local_port, remote, remote_port, skaddr,
                                  side, when)
            open_sockets[skaddr] = traced
            trace.sockets.append(traced)
        elif new == TIME_WAIT and current is not None:
            current.time_wait = True
        elif new == CLOSE:
            if current is not None:
                current.closed = when
                current.closed_from = STATE_NAMES.get(old, str(old))
                current.time_wait |= current.closed_from in INTO_TIME_WAIT
                del open_sockets[skaddr]
            elif old in (SYN_SENT, SYN_RECV):
                trace.failed_attempts.append((when, STATE_NAMES[old]))
    return trace
