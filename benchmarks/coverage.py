"""Coverage: of the sockets that reached ESTABLISHED, how many tcpfast reported, counted
against the kernel's tracepoint (issue 15's measurement, to rerun after each fix).

In a private network namespace (tests/private_netns.py) it runs, for each source:

1. bpftrace on ``sock:inet_sock_set_state`` for the namespace (tests/tracepoint.py);
2. ``python -m tcpfast --json --events new,closed --interval I --source S [--state ...]``
   in the same namespace, its lines read as they come (with when they came);
3. the lifetimes load (tests/lifetimes.py): ``--connections`` over ``--seconds``,
   each living one of ``--lifetimes`` and closed by the client, the server or a reset;
4. a probe connection held open from before tcpfast's first poll: its ``new`` line
   says the first poll is done; after the load its ``closed`` line and a second
   probe's ``new`` line say that a full poll saw the namespace after the last close;
5. the namespace's TCP counters (tcpfast.sources.snmp) read every ``--sample`` s;
6. tcpfast's own metrics (``--metrics``) scraped before the load and after the last
   poll: what it estimates it missed (``tcpfast_connections_missed_total``), to
   set against the true number.

With ``--burst``, before the load: tcpfast is stopped (SIGSTOP) while connections
are opened and reset until the kernel drops destroy events for its netlink socket
(the Drops column of /proc/net/netlink), then continued; its stderr line saying
events were lost and its ``tcpfast_destroy_events_lost_total`` are recorded, and
the load that follows is measured as above (the burst's own sockets are not).

Then every reporting line (``new``, ``new_and_closed``) is matched to the traced
socket it speaks of: same key (a field the line leaves null matches anything)
and a time that fits (a ``new`` line: the socket existed when the poll was read;
a ``new_and_closed`` line: it closed in the second the line names or up to
EVENT_DELAY before, or, a TIME_WAIT row's, it went into TIME_WAIT before the poll).
Counted:
sockets reported (at least one line), missed (none), reported twice (two or
more), lines that match no socket (reported that did not exist), by lifetime,
close mode and side; a missed socket is also classed by whether it was alive at
a poll, or closed into TIME_WAIT between the first and the last poll (what a
poll could still list), and whether an earlier socket of the run had its key
(Linux reuses a TIME_WAIT entry's ports for a new connect: net.ipv4.tcp_tw_reuse,
2 = loopback only, the default). tcpfast's stderr is printed as is.

    python -m benchmarks.coverage --source netlink --connections 1001 --seconds 10
    python -m benchmarks.coverage --source proc,netlink --json coverage.json
    python -m benchmarks.coverage --source proc,netlink --connections 4000 --seconds 20 \\
        --state all
    python -m benchmarks.coverage --source netlink --burst

Needs root (bpftrace, a namespace of its own); exits 2 saying why where it cannot run.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import lifetimes
import private_netns
import tracepoint
from prometheus_client.parser import text_string_to_metric_families

from tcpfast.detect.coverage import SETTLE_SECONDS
from tcpfast.sources.snmp import SnmpCounters, TcpCounters

#: How long after its expected time a line may take to come before the run fails.
WAIT_MARGIN = 30.0
#: Sockets opened in the namespace besides the load's: the second probe's connection.
PROBE_SOCKETS = 2
#: A socket is "alive at a poll" only this far from both ends (the read takes time).
POLL_MARGIN = 0.05
#: How late a destroy event may come: after a burst the kernel's work queue delivers the
#: backlog for seconds (measured: 4 s), and each line has the time it came.
EVENT_DELAY = 10.0
#: tcpfast's metrics read for the self-estimate (their names as served).
ESTIMATE_METRICS = {"kernel_opened": "tcpfast_kernel_opened_connections_total",
                    "missed": "tcpfast_connections_missed_total",
                    "events_lost": "tcpfast_destroy_events_lost_total",
                    "polls": "tcpfast_polls_total"}
#: What tcpfast says on stderr when destroy events were lost.
EVENTS_LOST_LINE = "destroyed-socket events were lost"
#: The burst: connections made while tcpfast is stopped (its receive buffer, 16 MiB as
#: root, holds about 16,000 destroy events: each connection gives two), and how long
#: the kernel may take to drop some.
BURST = 20_000
BURST_BATCH = 200
BURST_WAIT = 30.0
LINGER_ABORT = (1, 0)


@dataclass
class Line:
    """One JSON line of tcpfast's, and when this script received it."""

    received: float
    event: dict

    @property
    def key(self) -> tuple:
        e = self.event
        return (e["family"], e["local"], e["local_port"], e["remote"], e["remote_port"])


@dataclass
class Verdict:
    """What tcpfast said of one traced socket."""

    socket: tracepoint.TracedSocket
    opened: lifetimes.Opened | None
    reports: list[Line] = field(default_factory=list)       # new, new_and_closed
    closes: list[Line] = field(default_factory=list)        # closed
    alive_at_poll: bool = False
    time_wait_at_poll: bool = False
    reused_key: bool = False        # an earlier socket of the run had the same key

    def category(self, name: str) -> str:
        if name == "side":
            return self.socket.side
        if self.opened is None:
            return "?"
        return f"{self.opened.lifetime:g} s" if name == "lifetime" else self.opened.close


@dataclass
class Run:
    """One source's measurement."""

    source: str
    command: list[str]
    verdicts: list[Verdict]
    phantoms: list[Line]
    stderr: list[str]
    counters: list[tuple[float, TcpCounters]]
    traced_all: list[float]            # when each socket of the namespace reached ESTABLISHED
    poll_times: list[float]
    ledger: lifetimes.Ledger
    lines: list[Line] = field(default_factory=list)
    recursion_misses: int = 0          # the kernel skipped the program (any namespace)
    truth: str = "the tracepoint"      # what the verdicts were judged against
    anomalies: list[str] = field(default_factory=list)      # the trace's own oddities
    #: tcpfast's metrics over the load (ESTIMATE_METRICS, after minus before).
    estimate: dict[str, float] = field(default_factory=dict)
    burst: dict | None = None       # --burst: what it took, what tcpfast said of it


@dataclass
class Burst:
    """What overflowing tcpfast's destroy events took, and what it said of it."""

    connections: int
    port: int
    drops: int                      # the kernel's count for tcpfast's netlink sockets
    events_lost: float = 0.0        # tcpfast_destroy_events_lost_total after it
    stderr: list[str] = field(default_factory=list)     # tcpfast's lines about lost events


class TcpfastProcess:
    """tcpfast running, its lines collected as they come."""

    def __init__(self, command: list[str], metrics_port: int) -> None:
        self.lines: list[Line] = []
        self.stderr: list[str] = []
        self.metrics_port = metrics_port
        self._arrived = threading.Condition()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            line = Line(time.time(), json.loads(text))
            with self._arrived:
                self.lines.append(line)
                self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            with self._arrived:
                self.stderr.append(text.rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    def wait_for_stderr(self, text: str, timeout: float) -> None:
        """Until a stderr line has ``text``; RuntimeError after ``timeout``."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: any(text in line for line in self.stderr)
                                          or self.process.poll() is not None, timeout) \
                    or self.process.poll() is not None:
                raise RuntimeError(f"tcpfast said no {text!r} in {timeout:g} s "
                                   f"(exit {self.process.poll()}): {self.stderr[-5:]}")

    def scrape(self) -> dict[str, float]:
        """ESTIMATE_METRICS as tcpfast serves them now."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        values = {sample.name: sample.value for family in text_string_to_metric_families(text)
                  for sample in family.samples if not sample.labels}
        return {name: values.get(metric, 0.0) for name, metric in ESTIMATE_METRICS.items()}

    def scrape_after_polls(self, polls: int, timeout: float) -> dict[str, float]:
        """The metrics once ``polls`` more polls are recorded (tcpfast_polls_total)."""
        deadline = time.monotonic() + timeout
        target = self.scrape()["polls"] + polls
        while (values := self.scrape())["polls"] < target:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"tcpfast recorded no {polls} more polls in {timeout:g} s "
                                   f"(exit {self.process.poll()}): {self.stderr[-5:]}")
            time.sleep(0.1)
        return values

    def scrape_settled(self, timeout: float) -> dict[str, float]:
        """The metrics once what the polls recorded so far missed is counted: a poll's
        shortfall is settled by the first poll SETTLE_SECONDS after it (two more polls
        once that time is up: one of them began after it)."""
        self.scrape_after_polls(1, timeout)           # the poll running now is recorded
        settled = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settled:
            if self.process.poll() is not None:
                raise RuntimeError(f"tcpfast stopped (exit {self.process.poll()}): "
                                   f"{self.stderr[-5:]}")
            time.sleep(0.1)
        return self.scrape_after_polls(2, timeout)

    def wait_for(self, matches, timeout: float, what: str) -> Line:
        """The first line (from now on) that ``matches``; RuntimeError after ``timeout``."""
        with self._arrived:
            start = len(self.lines)
            found: list[Line] = []

            def seen() -> bool:
                found[:] = [line for line in self.lines[start:] if matches(line)]
                return bool(found) or self.process.poll() is not None
            self._arrived.wait_for(seen, timeout)
        if not found:
            raise RuntimeError(f"tcpfast printed no line for {what} in {timeout:g} s "
                               f"(exit {self.process.poll()}): {self.stderr[-5:]}")
        return found[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for thread in self._threads:
            thread.join(10)


class Sampler:
    """Reads the namespace's TCP counters every ``every`` seconds until stopped."""

    def __init__(self, every: float) -> None:
        self.samples: list[tuple[float, TcpCounters]] = []
        self._every = every
        self._stop = threading.Event()
        self._counters = SnmpCounters()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.samples.append((time.time(), self._counters.read()))
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self._counters.read()))
        self._counters.close()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append((time.time(), self._counters.read()))


def _free_port() -> int:
    """A port nobody in this (private) namespace listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _netlink_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _netlink_drops(inodes: set[int]) -> int:
    """The kernel's dropped-message count (/proc/net/netlink's Drops) of those sockets."""
    with open("/proc/net/netlink") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(int(row[8]) for row in rows if int(row[9]) in inodes)


def overflow_destroy_events(tcpfast: TcpfastProcess, connections: int = BURST,
                            timeout: float = BURST_WAIT) -> Burst:
    """Stop tcpfast, open ``connections`` loopback connections and reset each (from the
    server's side: both sockets keep the burst's port in their events), wait until
    the kernel has dropped destroy events meant for tcpfast (its netlink sockets'
    Drops grow: the kernel delivers them from a work queue, after the connects), and
    continue it. RuntimeError if none were dropped in ``timeout`` seconds."""
    pid = tcpfast.process.pid
    inodes = _netlink_inodes(pid)
    before = _netlink_drops(inodes)
    with socket.create_server(("127.0.0.1", 0), backlog=BURST_BATCH) as server:
        address = server.getsockname()
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(connections):
                with socket.create_connection(address):
                    accepted = server.accept()[0]
                    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", *LINGER_ABORT))
                    accepted.close()
            deadline = time.monotonic() + timeout
            while (drops := _netlink_drops(inodes) - before) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{connections} connections and no destroy event "
                                       f"dropped for tcpfast's netlink sockets in "
                                       f"{timeout:g} s")
                time.sleep(0.05)
        finally:
            os.kill(pid, signal.SIGCONT)
    return Burst(connections, address[1], drops)


def _about(port: int):
    def matches(line: Line) -> bool:
        return port in (line.event.get("local_port"), line.event.get("remote_port"))
    return matches


def measure(source: str, plan: lifetimes.Plan, interval: float, states: str | None,
            sample: float, truth: str = "auto", burst: bool = False) -> Run:
    """One run of the load under tcpfast ``source``, with the tracepoint watching
    (``burst``: after overflowing tcpfast's destroy events, see the module docstring).

    ``truth``: "tracepoint" (TraceLost unless the trace is proven whole), "ledger"
    (the load's own record of its sockets, checked against the TCP counters), or
    "auto": the tracepoint where it is whole, else the ledger, saying so."""
    metrics_port = _free_port()
    command = [sys.executable, "-m", "tcpfast", "--json", "--events", "new,closed",
               "--interval", f"{interval:g}", "--source", source,
               "--metrics", f"127.0.0.1:{metrics_port}"]
    if states:
        command += ["--state", states]
    wait = interval * 3 + WAIT_MARGIN
    probe_server = socket.create_server(("127.0.0.1", 0))
    probe_port = probe_server.getsockname()[1]
    probe = socket.create_connection(("127.0.0.1", probe_port))
    accepted = probe_server.accept()[0]
    ignored = {probe_port, metrics_port}            # the scrapes are sockets too
    tcpfast: TcpfastProcess | None = None
    burst_done: Burst | None = None
    try:
        tcpfast = TcpfastProcess(command, metrics_port)
        first = tcpfast.wait_for(lambda line: _about(probe_port)(line)
                                 and line.event["event"] == "new", wait, "the first poll")
        if burst:
            burst_done = overflow_destroy_events(tcpfast)
            ignored.add(burst_done.port)
            tcpfast.wait_for_stderr(EVENTS_LOST_LINE, wait)
            # The poll that drained the burst, and what it missed, recorded.
            burst_done.events_lost = tcpfast.scrape_settled(wait)["events_lost"]
        before = tcpfast.scrape()
        with tracepoint.Tracepoint(allow_misses=True) as trace, Sampler(sample) as sampler, \
                lifetimes.LifetimeLoad(plan) as load:
            load.start()
            ledger = load.wait()
            probe.close()
            accepted.close()
            tcpfast.wait_for(lambda line: _about(probe_port)(line)
                             and line.event["event"] in ("closed", "new_and_closed"),
                             wait, "the probe's close")
            with socket.create_connection(("127.0.0.1", probe_port)) as again, \
                    probe_server.accept()[0]:
                port = again.getsockname()[1]
                tcpfast.wait_for(lambda line: line.event["event"] == "new"
                                 and _about(port)(line), wait, "the second probe")
        after = tcpfast.scrape_settled(wait)
        tcpfast.stop()
    finally:
        if tcpfast is not None:
            tcpfast.stop()
        for sock in (probe, accepted, probe_server):
            sock.close()
    estimate = {name: after[name] - before[name] for name in ESTIMATE_METRICS}
    if burst_done is not None:
        burst_done.stderr = [text for text in tcpfast.stderr if EVENTS_LOST_LINE in text]
    polls = [first.received + k * interval
             for k in range(int((time.time() - first.received) / interval) + 2)]
    verdicts, phantoms = judge(trace.trace, ledger, tcpfast.lines, ignored, interval, polls,
                               first.event["time"])
    try:
        if truth == "ledger":
            raise tracepoint.TraceLost("the ledger was asked for")
        truth_used = prove_whole(trace.trace, ledger, verdicts, sampler.samples)
        if truth_used != "the tracepoint":          # closes filled in: judged again
            verdicts, phantoms = judge(trace.trace, ledger, tcpfast.lines, ignored,
                                       interval, polls, first.event["time"])
    except tracepoint.TraceLost as error:
        if truth == "tracepoint":
            raise
        traced = ledger_truth(ledger)
        opened = sampler.samples[-1][1].opened_since(sampler.samples[0][1])
        if opened != len(traced.sockets) + PROBE_SOCKETS:
            raise tracepoint.TraceLost(f"the ledger has {len(traced.sockets)} sockets (and the "
                                       f"probe {PROBE_SOCKETS}), the TCP counters say {opened} "
                                       "opened") from None
        truth_used = f"the ledger (the tracepoint's is incomplete: {error})"
        verdicts, phantoms = judge(traced, ledger, tcpfast.lines, ignored, interval, polls,
                               first.event["time"])
    return Run(source, command, verdicts, phantoms, tcpfast.stderr, sampler.samples,
               sorted(item.established for item in trace.sockets), polls, ledger,
               tcpfast.lines, trace.trace.recursion_misses, truth_used,
               trace.trace.anomalies, estimate,
               None if burst_done is None else asdict(burst_done))


def ledger_truth(ledger: lifetimes.Ledger) -> tracepoint.Trace:
    """The load's sockets as its ledger has them, in the tracepoint's terms: opened when
    connect() returned, closed by the plan's first close and the other side's."""
    truth = tracepoint.Trace()
    for opened, side, key in ledger.sockets():
        closed_from, closed = _ledger_close(opened, side)
        assert opened.opened is not None
        truth.sockets.append(tracepoint.TracedSocket(
            *key, skaddr=0, side=side, established=opened.opened, closed=closed,
            closed_from=closed_from, time_wait=closed_from == "FIN_WAIT2"))
    truth.sockets.sort(key=lambda item: item.established)
    return truth


def prove_whole(trace: tracepoint.Trace, ledger: lifetimes.Ledger, verdicts: list[Verdict],
                samples: list[tuple[float, TcpCounters]]) -> str:
    """What the trace lacks, given that the kernel may have skipped the program for some
    state changes (of any namespace): TraceLost unless every socket of the ledger is
    traced once into ESTABLISHED and the trace has as many as the TCP counters say
    opened. Closes it lacks are then taken from the ledger (said in the result)."""
    seen = collections.Counter(verdict.socket.key for verdict in verdicts)
    planned = collections.Counter(key for _, _, key in ledger.sockets())
    problems = []
    if seen != planned:
        problems.append(f"{sum((planned - seen).values())} of the ledger's sockets not traced, "
                        f"{sum((seen - planned).values())} traced the ledger does not have")
    opened = samples[-1][1].opened_since(samples[0][1])
    if opened != len(trace.sockets):
        problems.append(f"the TCP counters say {opened} sockets opened, the trace has "
                        f"{len(trace.sockets)}")
    if problems:
        raise tracepoint.TraceLost(f"{trace.recursion_misses} recursion misses, and "
                                   + "; ".join(problems))
    unclosed = [verdict for verdict in verdicts if verdict.socket.closed is None]
    for verdict in unclosed:
        assert verdict.opened is not None
        closed_from, closed = _ledger_close(verdict.opened, verdict.socket.side)
        verdict.socket.closed, verdict.socket.closed_from = closed, closed_from
        verdict.socket.time_wait = closed_from == "FIN_WAIT2"
    if not unclosed:
        return "the tracepoint"
    return (f"the tracepoint, {len(unclosed)} closes from the ledger (the kernel skipped "
            f"the program {trace.recursion_misses} times, in any namespace)")


def _ledger_close(opened: lifetimes.Opened, side: str) -> tuple[str, float | None]:
    """How and when the ledger says ``side`` of a connection closed."""
    first = (side == "server") == (opened.close == "server")
    closed_from = ("ESTABLISHED" if opened.close == "reset"
                   else "FIN_WAIT2" if first else "LAST_ACK")
    return closed_from, opened.first_closed if first else opened.last_closed


def judge(trace: tracepoint.Trace, ledger: lifetimes.Ledger, lines: list[Line],
          ignored: set[int], interval: float, polls: list[float], first_poll: str
          ) -> tuple[list[Verdict], list[Line]]:
    """Each load socket's verdict, and the lines that match no socket (but those about
    the ``ignored`` ports: the probe's, the burst's; and the ``new`` lines of the first
    poll, at time ``first_poll``: what was there before, a last run's TIME_WAIT rows)."""
    listeners = {(opened.family, *opened.server) for opened in ledger.connections
                 if opened.server is not None}
    planned = collections.defaultdict(list)
    for opened, _, key in ledger.sockets():
        planned[key].append(opened)
    verdicts = []
    by_key = collections.defaultdict(list)
    for traced in trace.sockets:
        if (traced.family, traced.local, traced.local_port) not in listeners and \
                (traced.family, traced.remote, traced.remote_port) not in listeners:
            continue
        candidates = planned.get(traced.key, [])
        opened = min(candidates, key=lambda item: abs((item.opened or 0) - traced.established),
                     default=None)
        verdict = Verdict(traced, opened, reused_key=bool(by_key[traced.key]))
        _classify(verdict, polls)
        verdicts.append(verdict)
        by_key[traced.key].append(verdict)
    phantoms = []
    for line in lines:
        event = line.event
        if event["event"] not in ("new", "new_and_closed", "closed"):
            continue                        # port scans, blocks: not a connection's line
        if ignored & {event["local_port"], event["remote_port"]} or event["state"] == "LISTEN":
            continue
        if event["event"] == "new" and event["time"] == first_poll:
            continue
        verdict = _match(line, by_key, interval)
        if verdict is None:
            if event["event"] != "closed":
                phantoms.append(line)
        elif event["event"] == "closed":
            verdict.closes.append(line)
        else:
            verdict.reports.append(line)
    return verdicts, phantoms


def _classify(verdict: Verdict, polls: list[float]) -> None:
    traced = verdict.socket
    closed = math.inf if traced.closed is None else traced.closed
    verdict.alive_at_poll = any(traced.established + POLL_MARGIN < poll < closed - POLL_MARGIN
                                for poll in polls)
    verdict.time_wait_at_poll = traced.time_wait and any(
        closed + POLL_MARGIN < poll for poll in polls[1:-1])


def _candidates(line: Line, by_key: dict) -> list[Verdict]:
    key = line.key
    if None not in key:
        return by_key.get(key, [])
    return [verdict for known, verdicts in by_key.items()
            if all(part is None or part == other for part, other in zip(key, known))
            for verdict in verdicts]


def _match(line: Line, by_key: dict, interval: float) -> Verdict | None:
    """The traced socket a line speaks of: same key, a time that fits; the one not yet
    reported first, then the nearest in time."""
    event, received = line.event["event"], line.received
    fitting = []
    for verdict in _candidates(line, by_key):
        traced = verdict.socket
        closed = math.inf if traced.closed is None else traced.closed
        if event == "new_and_closed":
            second = _seconds(line.event["time"])
            if traced.closed is not None and second - EVENT_DELAY <= closed <= second + 1.5:
                fitting.append((abs(closed - (second + 0.5)), verdict))
            elif line.event["state"] == "TIME_WAIT" and traced.time_wait \
                    and received - interval - 1.0 <= closed <= received:
                fitting.append((received - closed, verdict))     # a late TIME_WAIT row's
        elif event == "closed":
            if received - interval - EVENT_DELAY <= closed <= received:
                fitting.append((received - closed, verdict))
        elif line.event["state"] == "TIME_WAIT":
            if traced.time_wait and closed <= received:
                fitting.append((received - closed, verdict))
        elif traced.established - 0.1 <= received and closed >= received - interval - 1.0:
            fitting.append((abs(received - traced.established), verdict))
    if not fitting:
        return None
    fitting.sort(key=lambda item: (bool(item[1].reports) if event != "closed"
                                   else bool(item[1].closes), item[0]))
    return fitting[0][1]


def _seconds(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp).timestamp()


# --- the report ------------------------------------------------------------------------

def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def summary_row(run: Run) -> dict:
    total = len(run.verdicts)
    reported = sum(1 for verdict in run.verdicts if verdict.reports)
    twice = sum(1 for verdict in run.verdicts if len(verdict.reports) > 1)
    missed = [verdict for verdict in run.verdicts if not verdict.reports]
    return {"source": run.source, "sockets": total, "reported": reported,
            "missed": len(missed), "twice": twice, "phantoms": len(run.phantoms),
            "missed_alive_at_poll": sum(1 for verdict in missed if verdict.alive_at_poll),
            "missed_in_time_wait_at_poll": sum(1 for verdict in missed
                                               if verdict.time_wait_at_poll),
            "reused_keys": sum(1 for verdict in run.verdicts if verdict.reused_key),
            "missed_reused_key": sum(1 for verdict in missed if verdict.reused_key),
            "reported_new_never_closed": sum(
                1 for verdict in run.verdicts
                if any(line.event["event"] == "new" for line in verdict.reports)
                and not verdict.closes
                and not any(line.event["event"] == "new_and_closed" for line in verdict.reports)),
            "missed_estimated": int(run.estimate.get("missed", 0)),
            "kernel_opened_estimated": int(run.estimate.get("kernel_opened", 0)),
            "stderr_lines": len(run.stderr), "recursion_misses": run.recursion_misses}


def breakdown(run: Run, name: str) -> list[dict]:
    groups = collections.defaultdict(list)
    for verdict in run.verdicts:
        groups[verdict.category(name)].append(verdict)
    rows = []
    for category in sorted(groups, key=_category_order):
        verdicts = groups[category]
        rows.append({name: category, "sockets": len(verdicts),
                     "reported": sum(1 for v in verdicts if v.reports),
                     "missed": sum(1 for v in verdicts if not v.reports),
                     "twice": sum(1 for v in verdicts if len(v.reports) > 1),
                     "missed, alive at a poll": sum(1 for v in verdicts
                                                    if not v.reports and v.alive_at_poll),
                     "missed, TIME_WAIT at a poll": sum(1 for v in verdicts if not v.reports
                                                        and v.time_wait_at_poll),
                     "reused key": sum(1 for v in verdicts if v.reused_key),
                     "missed, reused key": sum(1 for v in verdicts
                                               if not v.reports and v.reused_key)})
    return rows


def _category_order(category: str) -> tuple:
    try:
        return (0, float(category.split()[0]), category)
    except ValueError:
        return (1, 0.0, category)


def counters_report(run: Run) -> dict:
    """The counters' opens between samples against the tracepoint's (every socket of the
    namespace: the load's and the probes'), per interval and in all."""
    established = run.traced_all
    rows = []
    for (start, before), (end, after) in zip(run.counters, run.counters[1:]):
        traced = sum(1 for when in established if start <= when < end)
        rows.append({"from": start, "to": end, "kernel": after.opened_since(before),
                     "traced": traced})
    first, last = run.counters[0][1], run.counters[-1][1]
    differences = [row["kernel"] - row["traced"] for row in rows]
    return {"kernel_opened": last.opened_since(first), "traced": len(established),
            "traced_load": len(run.verdicts),
            "active_opens": last.active_opens - first.active_opens,
            "passive_opens": last.passive_opens - first.passive_opens,
            "attempt_fails": last.attempt_fails - first.attempt_fails,
            "estab_resets": last.estab_resets - first.estab_resets,
            "intervals": len(rows), "largest_interval_difference": max(differences, key=abs,
                                                                      default=0),
            "intervals_differing": sum(1 for difference in differences if difference)}


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(row[name]) for name in names) + " |" for row in rows]
    return "\n".join(lines)


def details(run: Run) -> dict:
    def socket_of(verdict: Verdict) -> dict:
        return {**asdict(verdict.socket), "lifetime": verdict.category("lifetime"),
                "close": verdict.category("close"),
                "alive_at_poll": verdict.alive_at_poll,
                "time_wait_at_poll": verdict.time_wait_at_poll,
                "reused_key": verdict.reused_key,
                "reports": [{"received": line.received, **line.event}
                            for line in verdict.reports],
                "closes": [{"received": line.received, **line.event} for line in verdict.closes]}
    return {"source": run.source, "command": run.command, "summary": summary_row(run),
            "truth": run.truth, "anomalies": run.anomalies,
            "poll_times": run.poll_times, "ledger": run.ledger.summary(),
            "missed": [socket_of(v) for v in run.verdicts if not v.reports],
            "twice": [socket_of(v) for v in run.verdicts if len(v.reports) > 1],
            "phantoms": [{"received": line.received, **line.event} for line in run.phantoms],
            "stderr": run.stderr, "counters": counters_report(run),
            "estimate": run.estimate, "burst": run.burst,
            "lines": [{"received": line.received, **line.event} for line in run.lines]}


def print_run(run: Run) -> None:
    row = summary_row(run)
    print(f"\n## --source {run.source}: {' '.join(run.command[1:])}")
    print(f"load: {run.ledger.summary()}")
    print(f"ground truth: {run.truth}")
    print(f"sockets reported (new or new_and_closed): {row['reported']} of {row['sockets']} "
          f"({_percent(row['reported'], row['sockets'])}); missed {row['missed']} "
          f"(alive at a poll: {row['missed_alive_at_poll']}, in TIME_WAIT at a poll: "
          f"{row['missed_in_time_wait_at_poll']}, key reused: {row['missed_reused_key']}); "
          f"reported twice {row['twice']}; sockets whose key an earlier one had "
          f"{row['reused_keys']}; "
          f"reported that did not exist {row['phantoms']}; "
          f"reported new, never closed {row['reported_new_never_closed']}")
    for name in ("lifetime", "close", "side"):
        print()
        print(markdown(breakdown(run, name)))
    print(f"\nself-estimate over the load (tcpfast's metrics): missed "
          f"{row['missed_estimated']} (true: {row['missed']}) of "
          f"{row['kernel_opened_estimated']} the kernel opened (the load and the probe: "
          f"{row['sockets'] + PROBE_SOCKETS})")
    if run.burst is not None:
        print(f"burst: {json.dumps(run.burst)}")
    counters = counters_report(run)
    print(f"\nkernel counters: {json.dumps(counters)}")
    print(f"tcpfast stderr ({len(run.stderr)} lines):")
    for text in run.stderr:
        print(f"    {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coverage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="proc,netlink", help="proc, netlink or both")
    parser.add_argument("--connections", type=int, default=1001)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lifetimes", type=lifetimes._numbers, default=lifetimes.LIFETIMES)
    parser.add_argument("--closes", type=lambda text: tuple(text.split(",")),
                        default=lifetimes.CLOSES)
    parser.add_argument("--ipv6-fraction", type=float, default=0.0)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--state", help="tcpfast's --state (default: its default)")
    parser.add_argument("--sample", type=float, default=0.5,
                        help="seconds between readings of the TCP counters")
    parser.add_argument("--json", metavar="FILE", help="write every verdict's details there")
    parser.add_argument("--truth", choices=("auto", "tracepoint", "ledger"), default="auto",
                        help="judge against the tracepoint (where proven whole: each of "
                             "the ledger's sockets once, as many as the TCP counters "
                             "say), the load's ledger (checked against the counters), or "
                             "the first that holds (default)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="runs to try when the truth is incomplete: each says why")
    parser.add_argument("--burst", action="store_true",
                        help="first overflow tcpfast's destroy events (stopped while "
                             "connections are reset), then measure the load")
    parser.add_argument("--here", action="store_true",
                        help="run in the current namespace, not a private one")
    args = parser.parse_args(argv)
    reason = tracepoint.unavailable()
    if reason is not None:
        print(f"coverage: no ground truth here: {reason}", file=sys.stderr)
        return 2
    if not args.here:
        print(f"network namespace: {private_netns.enter(hash_entries=1 << 16)}")
    plan = lifetimes.Plan(args.connections, args.seconds, args.lifetimes, args.closes,
                          args.ipv6_fraction)
    runs = []
    for source in args.source.split(","):
        for attempt in range(1, args.attempts + 1):
            try:
                run = measure(source, plan, args.interval, args.state, args.sample,
                              args.truth, args.burst)
                break
            except tracepoint.TraceLost as error:
                print(f"coverage: the ground truth of attempt {attempt} is incomplete "
                      f"({error})", file=sys.stderr)
            except RuntimeError as error:           # the load, tcpfast or the burst failed
                print(f"coverage: {error}", file=sys.stderr)
                return 1
        else:
            print(f"coverage: no complete ground truth in {args.attempts} attempts",
                  file=sys.stderr)
            return 1
        print_run(run)
        runs.append(run)
        if args.json:
            with open(args.json, "w") as out:
                json.dump([details(run) for run in runs], out, indent=1)
    print("\n" + markdown([summary_row(run) for run in runs]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
