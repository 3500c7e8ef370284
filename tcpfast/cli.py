"""``python -m tcpfast``: options wired to the library's objects, and clean exits."""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from . import __version__, backend
from .detect import AllowList, ScanDetector
from .detect.coverage import Coverage
from .detect.scans import MAX_SCAN_PORTS
from .enrich.addresses import WatchedNetworks
from .enrich.containers import DEFAULT_POD_LOGS, HolderLookup, PodLogs
from .enrich.direction import IN, OUT, ephemeral_ports
from .enrich.owners import DEFAULT_BUDGET, OwnerFinder, procfs_of
from .events import Poll, Stopped
from .filters import (
    Filter,
    KernelFilter,
    kernel_filter,
    parse_networks,
    parse_ports,
    parse_states,
    parse_uids,
)
from .filters.states import lasting_states
from .loop import MAX_INTERVAL, MIN_INTERVAL, StopSignals, run_every
from .outputs.firewall import (
    DEFAULT_BLOCK_SECONDS,
    MAX_BLOCK_SECONDS,
    MIN_BLOCK_SECONDS,
    Firewall,
    FirewallError,
)
from .outputs.notify import Notifier
from .outputs.printer import EVENT_KINDS, EventPrinter
from .outputs.writer import LineWriter, OutputError
from .poller import Poller
from .sources import TABLES, Source, open_source
from .sources.namespaces import AllNamespaces
from .sources.netns import proc_root_of
from .watch import Watcher

if TYPE_CHECKING:
    from .outputs.metrics import Metrics  # prometheus_client is imported only with --metrics

EXIT_OK = 0
EXIT_INCOMPLETE = 1           # --once with a --read-timeout that cut the read short
EXIT_INPUT_ERROR = 2          # also argparse's exit code for a usage error
EXIT_OUTPUT_ERROR = 3
EXIT_SIGNAL_BASE = 128        # --once stopped by a signal: 128 + its number, as the shell says
PROC_ROOT_VARIABLE = "TCPFAST_PROC_ROOT"
DEFAULT_READ_TIMEOUT = 30.0

#: Defaults of the options that other options can rule out: given with those, they are refused.
DEFAULTS = {"interval": 10.0, "scan_ports": 3, "scan_window": 60.0,
            "block_for": DEFAULT_BLOCK_SECONDS}
#: Options of port-scan detection and blocking (beside --scan-ports).
DETECTION_OPTIONS = ("scan_window", "scan_local", "allow", "block", "block_for")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _seconds(text: str) -> float:
    seconds = _number(text)
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return seconds


def _seconds_from(minimum: float, maximum: float) -> Callable[[str], float]:
    """Seconds within what the code and the kernel can take."""
    def seconds_within(text: str) -> float:
        seconds = _number(text)
        if not minimum <= seconds <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be from {minimum:.15g} to {maximum:.15g} seconds, not {text!r}")
        return seconds
    return seconds_within


def _parsed(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a parser raising ValueError (one line, quoting the text)."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = parse.__name__.removeprefix("parse_")     # argparse names it in errors
    return convert


class _Once(argparse.Action):
    """An option given at most once (a comma list within it says several values)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest) not in (None, self.default):
            parser.error(f"{option_string} given twice: give one comma list instead")
        setattr(namespace, self.dest, values)


def _events(text: str) -> tuple[str, ...]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EVENT_KINDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown event {', '.join(map(repr, unknown)) or repr(text)}; "
            f"choose from {', '.join(EVENT_KINDS)}")
    return tuple(names)


def _scan_ports(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SCAN_PORTS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 0 to {MAX_SCAN_PORTS}, not {text!r}")
    return int(text)


def _allow(text: str) -> AllowList:
    try:
        return AllowList.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _listen_address(text: str) -> tuple[str, int]:
    from .outputs.metrics import parse_listen_address
    try:
        return parse_listen_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _version() -> str:
    if backend.ACCELERATED:
        how = "compiled modules in use"
    elif backend.PURE_REQUESTED:
        how = "pure Python, as TCPFAST_PURE asks"
    else:
        how = f"pure Python: {backend.FALLBACK_REASON}"
    return f"tcpfast {__version__} ({how})"


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit 2), not argparse's usage block before them."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tcpfast",
        description="Report every new TCP connection on this host, one line each. "
                    "Reads the kernel's TCP tables (/proc/net/tcp and tcp6, or its "
                    "sock_diag dump with --source netlink) every INTERVAL seconds; the "
                    "first poll lists every current connection (unless --skip-existing), "
                    "later polls only what is new since the poll before, and what opened "
                    "and closed in between where the source can tell.",
        epilog="Exit status: 0 when stopped while watching (SIGINT/SIGTERM), after --once, "
               "or when the reader of the output has gone (| head); 1 when --once was cut "
               "short by --read-timeout; 2 for a usage error (options that rule each other "
               "out included) or a table that cannot be read at start; 3 when the output "
               "cannot be written (a full disk, a closed stdout); 128+N, the shell's "
               "convention, when signal N stopped --once before its listing was complete "
               "(130 for SIGINT, 143 for SIGTERM; whole lines only, and stderr says how "
               "many were written).",
    )
    parser.add_argument("--interval", type=_seconds_from(MIN_INTERVAL, MAX_INTERVAL),
                        metavar="SECONDS",
                        help=f"seconds between polls, from {MIN_INTERVAL:g} to "
                             f"{MAX_INTERVAL:.15g} (24.8 days) "
                             f"(default: {DEFAULTS['interval']:g})")
    parser.add_argument("--once", action="store_true",
                        help="poll once, print every current connection, and exit")
    parser.add_argument("--read-timeout", type=_seconds, metavar="SECONDS",
                        help="stop reading the tables after SECONDS: under heavy churn the "
                             "kernel can list a growing table for ever; what a cut read "
                             "misses is reported by the next poll that reaches it "
                             f"(default: {DEFAULT_READ_TIMEOUT:g} when watching; none "
                             "with --once, which reads to the end)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="take the first poll as the baseline without printing it: "
                             "only connections opened after the start are reported")
    parser.add_argument("--proc-root", default=os.environ.get(PROC_ROOT_VARIABLE, "/proc"),
                        metavar="DIR",
                        help="read DIR/net/tcp and DIR/net/tcp6: e.g. /proc/1 for pid 1's "
                             "network namespace (the host's, from a container run with "
                             f"--pid host) (default: ${PROC_ROOT_VARIABLE} or /proc; "
                             "now %(default)s)")
    parser.add_argument("--state", type=_parsed(parse_states), action=_Once,
                        metavar="NAME[,NAME...]",
                        help="report only connections in these states, by the kernel's "
                             "names or ss's, case-insensitive, e.g. established,listen or "
                             "time-wait, or ss's groups: all, connected, synchronized, "
                             "bucket, big (default: every state but what is left of a closed "
                             "connection: TIME_WAIT, and FIN_WAIT2 as a timewait entry)")
    selection = parser.add_argument_group(
        "selecting connections", "Only connections these keep are printed, counted and looked "
        "up (--process); port-scan detection still sees every inbound connection. Each option "
        "once, values as a comma list (any of them); options together (all of them).")
    selection.add_argument("--port", type=_parsed(parse_ports), action=_Once, metavar="N[,N...]",
                           help="a local or remote port, e.g. 22,443")
    selection.add_argument("--local-port", type=_parsed(parse_ports), action=_Once,
                           metavar="N[,N...]", help="a local port")
    selection.add_argument("--remote-port", type=_parsed(parse_ports), action=_Once,
                           metavar="N[,N...]", help="a remote port")
    selection.add_argument("--local", type=_parsed(parse_networks), action=_Once,
                           metavar="CIDR[,CIDR...]",
                           help="a local address in these networks, e.g. 10.0.0.0/8,2001:db8::/32 "
                                "(an IPv4 network also matches IPv4-mapped IPv6 addresses)")
    selection.add_argument("--remote", type=_parsed(parse_networks), action=_Once,
                           metavar="CIDR[,CIDR...]", help="a remote address in these networks")
    selection.add_argument("--inbound", action="store_true",
                           help="connections to this host (direction in)")
    selection.add_argument("--outbound", action="store_true",
                           help="connections from this host (direction out)")
    selection.add_argument("--uid", type=_parsed(parse_uids), action=_Once,
                           metavar="UID[,UID...]", help="sockets of these users (numbers or names)")
    parser.add_argument("--events", type=_events, default=("new",), metavar="KIND[,KIND...]",
                        help="which events to print: new, closed (the connection's socket "
                             "is gone; JSON lines say how long it was open) (default: new)")
    parser.add_argument("--source", choices=("proc", "netlink"),
                        help="where rows come from: the /proc tables, or the kernel's "
                             "sock_diag dump (netlink, as ss: about 0.6x the kernel's CPU, "
                             "one walk for both families; falls back to /proc with a "
                             "warning) (default: proc, or netlink with --netns)")
    parser.add_argument("--all-netns", action="store_true",
                        help="watch every network namespace of the procfs (PROC_ROOT's: /proc, "
                             "or the host's from a container run with --pid host): each "
                             "connection with its namespace (netns) and the container or pod "
                             "that holds it; through netlink where tcpfast may enter "
                             "namespaces (CAP_SYS_ADMIN), their /proc tables otherwise")
    parser.add_argument("--pod-logs", metavar="DIR",
                        help="the kubelet's pod log directory, which names pods by UID, for "
                             "pod_namespace and pod_name with --all-netns (default: "
                             f"{DEFAULT_POD_LOGS} where it exists)")
    parser.add_argument("--netns", metavar="PATH",
                        help="watch the network namespace of PATH, a /var/run/netns/NAME or "
                             "/proc/PID/ns/net file, through netlink (needs root)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON lines: time, event, family, local, local_port, "
                             "remote, remote_port, state, uid, inode, direction, pid, comm, "
                             "netns, container_id, pod_uid, pod_namespace, pod_name; closed "
                             "events add duration, bytes_sent, bytes_received, rtt_ms, "
                             "retransmits, segments_sent, segments_received (null: unknown)")
    parser.add_argument("--show-bytes", action="store_true",
                        help="end closed lines of text with sent=N received=N rtt=MSms, what "
                             "the connection carried (netlink's destroy events tell it; * "
                             "where unknown; JSON lines always have it)")
    parser.add_argument("--direction", action="store_true",
                        help="end each text line with direction=in, out, listen or unknown "
                             "(JSON lines always have it)")
    parser.add_argument("--process", action="store_true",
                        help="name the process holding each new connection's socket: JSON "
                             "pid and comm (null when not found), text lines end with "
                             f"pid=PID COMM. A poll's lookup stops after {DEFAULT_BUDGET:g} s "
                             "(the first poll's after half the interval; with --once, when "
                             "done); sockets of processes this user may not read have none")
    parser.add_argument("--scan-ports", type=_scan_ports, metavar="N",
                        help="report a port scan when one remote address opens inbound "
                             "connections to more than N distinct local ports within "
                             "--scan-window, whatever --state prints; 0 turns detection off "
                             f"(default: {DEFAULTS['scan_ports']})")
    parser.add_argument("--scan-window", type=_seconds, metavar="SECONDS",
                        help=f"port-scan window (default: {DEFAULTS['scan_window']:g})")
    parser.add_argument("--scan-local", action="store_true",
                        help="also report scans from loopback and from the watched "
                             "namespace's own addresses (local clients of local services), "
                             "which are left out by default")
    parser.add_argument("--allow", type=_allow, metavar="CIDR[,CIDR...]",
                        help="sources never reported as scanners nor blocked, e.g. "
                             "10.0.0.0/8,2001:db8::/32")
    parser.add_argument("--block", action="store_true",
                        help="drop a detected scanner's packets with nftables (table inet "
                             "tcpfast; needs the nft command and CAP_NET_ADMIN); never "
                             "loopback, this host's addresses, or --allow")
    parser.add_argument("--block-for", type=_seconds_from(MIN_BLOCK_SECONDS, MAX_BLOCK_SECONDS),
                        metavar="SECONDS",
                        help=f"how long a block lasts, from {MIN_BLOCK_SECONDS:g} to "
                             f"{MAX_BLOCK_SECONDS:.15g} (the kernel's limit) "
                             f"(default: {DEFAULTS['block_for']:g})")
    parser.add_argument("--metrics", type=_listen_address, metavar="[ADDR:]PORT",
                        help="serve Prometheus metrics on http://ADDR:PORT/metrics "
                             "(ADDR default 127.0.0.1)")
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _refuse_contradictions(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """An option that the others rule out is a usage error, never silently ignored."""
    given = {dest for dest, value in vars(args).items()
             if value is not None and value is not False}
    if args.scan_ports == 0:
        given.discard("scan_ports")                 # turning detection off asks for nothing
    if args.once:
        reasons = {"skip_existing": "leaves out the first poll, the only one --once makes",
                   "interval": "--once polls once",
                   "metrics": "--once exits after its one poll, before any scrape"}
        reasons.update(dict.fromkeys(
            ("scan_ports", *DETECTION_OPTIONS),
            "--once polls once, and port scans are found in the polls that follow"))
        for dest, reason in reasons.items():
            if dest in given:
                parser.error(f"{_option(dest)}: {reason}")
        if "closed" in args.events:
            parser.error("--events closed: --once polls once and sees nothing close")
    if args.scan_ports == 0:
        for dest in DETECTION_OPTIONS:
            if dest in given:
                parser.error(f"{_option(dest)} needs port-scan detection (--scan-ports above 0)")
    if "block_for" in given and not args.block:
        parser.error("--block-for needs --block")
    if args.source == "proc" and args.netns:
        parser.error("--netns needs --source netlink")
    if args.all_netns and args.netns:
        parser.error("--netns: --all-netns watches every namespace")
    if args.pod_logs and not args.all_netns:
        parser.error("--pod-logs needs --all-netns (pods are named with their namespaces)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked against each other, with the defaults of those not given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _refuse_contradictions(args, parser)
    for dest, default in DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if args.allow is None:
        args.allow = AllowList()
    return args


def _start_features(args: argparse.Namespace) -> tuple[Firewall | None, Metrics | None]:
    """Blocking and metrics as asked; FirewallError or OSError when they cannot start."""
    metrics = None
    if args.metrics:
        from .outputs.metrics import Metrics
        metrics = Metrics(source=_source_kind(args))
        metrics.serve(*args.metrics)
    firewall = None
    if args.block:
        firewall = Firewall(block_for=args.block_for, allow=args.allow)
        firewall.start()
    return firewall, metrics


def _detector(args: argparse.Namespace) -> ScanDetector | None:
    """Port-scan detection unless off (or --once: one poll has no new connections to count).

    Local clients are left out unless --scan-local: loopback, and the addresses of
    the namespace watched, read from its tables (--proc-root's; with --netns, those
    of a process in it).
    """
    if not args.scan_ports or args.once:
        return None
    local = None
    if not args.scan_local:
        if args.netns is not None:
            local = WatchedNetworks(proc_root_of(args.netns), args.netns, _warn)
        else:
            local = WatchedNetworks(args.proc_root, warn=_warn)
    return ScanDetector(args.scan_ports, args.scan_window, args.allow, local=local)


def _selection(args: argparse.Namespace) -> Filter:
    """The connections the options keep (--state is the watcher's: which states count)."""
    directions = {code for code, wanted in ((IN, args.inbound), (OUT, args.outbound)) if wanted}
    return Filter(ports=args.port, local_ports=args.local_port, remote_ports=args.remote_port,
                  local_networks=args.local, remote_networks=args.remote,
                  directions=frozenset(directions) or None, uids=args.uid)


def _kernel_filter(args: argparse.Namespace, selection: Filter) -> KernelFilter | None:
    """What the kernel can evaluate of the selection, when nothing else needs every socket:
    port-scan detection looks at every inbound connection, so only with --scan-ports 0
    or --once. --state goes as the states a chosen connection lives through."""
    states = lasting_states(args.state) if args.state else None
    if not (selection or states) or (args.scan_ports and not args.once):
        return None
    return kernel_filter(replace(selection, states=states))


def _open_source(args: argparse.Namespace, kernel: KernelFilter | None
                 ) -> tuple[Source, HolderLookup | None]:
    """The source the options ask for, and with --all-netns who holds each namespace."""
    if not args.all_netns:
        return open_source(_source_kind(args), args.proc_root, args.netns, warn=_warn,
                           kernel=kernel), None
    procfs = procfs_of(args.proc_root)
    every = AllNamespaces(procfs, warn=_warn, kernel=kernel,
                          netlink=None if args.source is None else args.source == "netlink")
    pod_logs = args.pod_logs or (DEFAULT_POD_LOGS if os.path.isdir(DEFAULT_POD_LOGS) else None)
    return every, HolderLookup(lambda: every.namespaces.values(), procfs,
                               PodLogs(pod_logs) if pod_logs else None)


def _coverage(source: Source) -> Coverage:
    """The kernel's count of what was opened, against what the polls saw, and what would
    see more than this source does."""
    hint = ("--source netlink hears of each one as it ends" if source.kind == "proc"
            else "destroyed-socket events came late or were lost")
    return Coverage(source.opened, _warn, hint)


def _emitter(printer: EventPrinter, metrics: Metrics | None,
             notifier: Notifier | None = None) -> Callable[[Poll], None]:
    """Each poll to the printer, then to the metrics when asked, then (it is written)
    to the service manager when NOTIFY_SOCKET asks."""
    def emit(poll: Poll) -> None:
        printer(poll)
        if metrics:
            metrics.record(poll)
        if notifier:
            notifier(poll)
    return emit


# glibc's M_MMAP_THRESHOLD: allocations this big or bigger are mapped, and unmapped when freed.
_M_MMAP_THRESHOLD, _MAPPED_FROM_BYTES = -3, 256 * 1024


def _return_freed_arrays() -> None:
    """Make glibc give each freed array back to the system. By default it raises its
    mmap threshold after the first large free, then serves a poll's 1-8 MB temporaries
    from its heap and keeps them once freed: at 10^6 rows a watcher's resident size grew
    by ~50 MB over its polls. Not glibc (musl): nothing to do."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM_BYTES)
    except (AttributeError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.once:
        _return_freed_arrays()
    if backend.PURE_SETTING_PROBLEM:
        _warn(backend.PURE_SETTING_PROBLEM)
    if not backend.ACCELERATED and not backend.PURE_REQUESTED:
        _warn(f"compiled modules unavailable ({backend.FALLBACK_REASON}); using the slower "
              "pure-Python code (set TCPFAST_PURE=1 to choose it on purpose)")
    try:
        writer = LineWriter(1)
    except OutputError as error:
        return _output_error(str(error))
    read_timeout = args.read_timeout
    if read_timeout is None and not args.once:
        read_timeout = DEFAULT_READ_TIMEOUT
    ephemeral = ephemeral_ports()
    try:
        firewall, metrics = _start_features(args)
    except FirewallError as error:
        _warn(str(error))
        return EXIT_INPUT_ERROR
    except OSError as error:
        _warn(f"--metrics: cannot listen on {args.metrics[0]}:{args.metrics[1]}: "
              f"{error.strerror or error}")
        return EXIT_INPUT_ERROR
    selection = _selection(args)
    kernel = _kernel_filter(args, selection)
    try:
        source, holders = _open_source(args, kernel)
    except OSError as error:                        # --netns: not entered, nothing to read
        _warn(error.strerror or str(error))
        return EXIT_INPUT_ERROR
    # Between polls, netlink also hears of every destroyed socket: connections
    # opened and closed in between are reported too (new_and_closed).
    destroyed = None if args.once else source.destroy_events(_warn)
    detector = _detector(args)
    stop = StopSignals(output_fd=1)
    owners = None
    if args.process:        # the first lookup, with nothing cached, is a full walk of /proc/*/fd
        first_budget = math.inf if args.once else max(DEFAULT_BUDGET, args.interval / 2)
        owners = OwnerFinder(procfs_of(args.proc_root), first_budget=first_budget)
    printer = EventPrinter(writer, json=args.json, events=args.events,
                           show_direction=args.direction, show_bytes=args.show_bytes,
                           show_namespace=args.all_netns, cancelled=lambda: stop.requested)
    poller = Poller(
        Watcher(args.state, skip_existing=args.skip_existing, ephemeral=ephemeral),
        _emitter(printer, metrics, Notifier.from_environment(_warn)),
        _warn, source=source, read_timeout=read_timeout,
        cancelled=lambda: stop.requested, owners=owners, detector=detector, firewall=firewall,
        destroyed=destroyed, holders=holders, selection=selection,
        coverage=None if args.once or kernel is not None else _coverage(source))
    poll = metrics.timed(poller.poll) if metrics else poller.poll

    def poll_and_go_on() -> None:
        try:
            poll()
        except OSError as error:                    # a table gone mid-run: keep polling
            if poller.polls == 0 or isinstance(error, BrokenPipeError):
                raise
            _warn(f"{_cannot_read(error, args.proc_root)}; still polling")

    try:
        with stop:
            if args.once:
                poll()
            else:
                run_every(args.interval, poll_and_go_on, stop)
    except Stopped as stopped:
        assert stop.signal is not None               # only a signal stops a poll under way
        return _stopped(stopped, stop.signal, args.once, writer.lines_written)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OutputError as error:
        return _output_error(str(error))
    except OSError as error:
        _warn(_cannot_read(error, args.proc_root))
        return EXIT_INPUT_ERROR
    if stop.output_gone:
        return _quiet_broken_pipe()
    if args.once and poller.cut_short_polls:
        return EXIT_INCOMPLETE
    return EXIT_OK


def _source_kind(args: argparse.Namespace) -> str:
    """--source, or netlink for --netns (only netlink can enter a namespace)."""
    return "netlink" if args.source == "netlink" or args.netns else "proc"


def _stopped(stopped: Stopped, signum: int, once: bool, written: int) -> int:
    """A stop signal cut a poll short: with --once, say so and exit 128 + its number (a
    script must not take it for a whole listing); watching, exit 0, saying what of the
    poll was not printed, if anything."""
    name = signal.Signals(signum).name
    if once:
        _warn(f"stopped by {name} before the listing was complete: {written} line(s) written")
        return EXIT_SIGNAL_BASE + signum
    if stopped.unwritten:
        _warn(f"stopped by {name} while printing a poll: its last {stopped.unwritten} "
              "line(s) not written")
    return EXIT_OK


def _cannot_read(error: OSError, proc_root: str) -> str:
    """``cannot read PATH: REASON``, naming the table even when the error does not."""
    table = error.filename or os.path.join(proc_root, TABLES[0][0])
    return f"cannot read {table}: {error.strerror or error}"


def _warn(message: str) -> None:
    try:
        print(f"tcpfast: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):      # stderr closed or gone: nowhere to say it
        pass


def _output_error(reason: str) -> int:
    _warn(f"cannot write output: {reason}")
    return EXIT_OUTPUT_ERROR


def _quiet_broken_pipe() -> int:
    """The reader went away (``| head``): stop without a traceback or a flush error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return EXIT_OK
