"""``python -m tcpfast``: arguments, the watch loop's output, and clean exits."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from typing import TextIO

from . import __version__, backend
from .outputs import report
from .schema import STATE_CODES
from .sources import TABLES, read_snapshot
from .watch import StopSignals, Watcher, run_every

EXIT_OK = 0
EXIT_INPUT_ERROR = 2          # also argparse's exit code for a usage error
PROC_ROOT_VARIABLE = "TCPFAST_PROC_ROOT"


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return seconds


def _states(text: str) -> frozenset[int]:
    names = [name.strip().upper() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STATE_CODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown state {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(name.lower() for name in STATE_CODES)}")
    return frozenset(STATE_CODES[name] for name in names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcpfast",
        description="Report every new TCP connection on this host, one line each. "
                    "Reads /proc/net/tcp and /proc/net/tcp6 every INTERVAL seconds; "
                    "the first poll lists every current socket, later polls only "
                    "what is new since the poll before.",
        epilog="Exit status: 0 when stopped (SIGINT/SIGTERM) or after --once; 2 for a "
               "usage error or a table that cannot be read at start. "
               f"Compiled modules in use: {'yes' if backend.ACCELERATED else 'no'}.",
    )
    parser.add_argument("--interval", type=_interval, default=10.0, metavar="SECONDS",
                        help="seconds between polls, > 0 (default: %(default)g)")
    parser.add_argument("--once", action="store_true",
                        help="poll once, print every current connection, and exit")
    parser.add_argument("--proc-root", default=os.environ.get(PROC_ROOT_VARIABLE, "/proc"),
                        metavar="DIR",
                        help="read DIR/net/tcp and DIR/net/tcp6: e.g. /proc/1 for pid 1's "
                             "network namespace (the host's, from a container run with "
                             f"--pid host) (default: ${PROC_ROOT_VARIABLE} or /proc; "
                             "now %(default)s)")
    parser.add_argument("--state", type=_states, metavar="NAME[,NAME...]",
                        help="report only connections in these states, by the kernel's "
                             "names, case-insensitive, e.g. established,listen "
                             "(default: all states)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON lines: time, event, family, local, local_port, "
                             "remote, remote_port, state, uid, inode")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


# Lines are formatted and written this many at a time, so a first poll of a
# million sockets never holds a million strings.
BATCH_ROWS = 4096


def _emit(rows, format_lines, out: TextIO) -> None:
    when = datetime.now(timezone.utc)
    for start in range(0, len(rows), BATCH_ROWS):
        out.write("\n".join(format_lines(rows[start:start + BATCH_ROWS], when)) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    watcher = Watcher(args.state)
    format_lines = report.json_lines if args.json else report.text_lines
    out = sys.stdout
    first = True
    expected_rows = 0

    def poll() -> None:
        nonlocal first, expected_rows
        started = time.monotonic()
        try:
            snapshot = read_snapshot(args.proc_root, size_hint=expected_rows,
                                     deadline=started + args.interval,
                                     cancelled=lambda: stop.requested)
        except OSError as error:
            if first:
                raise
            _warn(f"{_cannot_read(error, args.proc_root)}; still polling")
            return
        first = False
        expected_rows = len(snapshot.rows)
        if snapshot.malformed:
            _warn(f"skipped {snapshot.malformed} malformed row(s) in {args.proc_root}/net/tcp*")
        if not snapshot.complete and not stop.requested:
            _warn(f"reading {args.proc_root}/net/tcp* took over {args.interval:g} s: cut short "
                  f"after {expected_rows} rows; rows past them are not seen this poll "
                  "(a longer --interval gives the read more time)")
        _emit(watcher.update(snapshot), format_lines, out)

    stop = StopSignals()
    try:
        with stop:
            if args.once:
                poll()
            else:
                run_every(args.interval, poll, stop)
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            return _quiet_broken_pipe()
        _warn(_cannot_read(error, args.proc_root))
        return EXIT_INPUT_ERROR
    return EXIT_OK


def _cannot_read(error: OSError, proc_root: str) -> str:
    """``cannot read PATH: REASON``, naming the table even when the error does not."""
    table = error.filename or os.path.join(proc_root, TABLES[0][0])
    return f"cannot read {table}: {error.strerror or error}"


def _warn(message: str) -> None:
    print(f"tcpfast: {message}", file=sys.stderr, flush=True)


def _quiet_broken_pipe() -> int:
    """The reader went away (``| head``): stop without a traceback or a flush error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK
