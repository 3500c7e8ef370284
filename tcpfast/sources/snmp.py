"""A namespace's TCP counters (``/proc/net/snmp``): how many connections the kernel opened.

The file holds, per protocol, a header line of names and a line of values::

    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails ...
    Tcp: 1 200 120000 -1 80098 80002 0 ...

Values are read by name, so columns a kernel adds do not move them. Each
network namespace has its own counters: ``/proc/net/snmp`` is the reader's,
``/proc/PID/net/snmp`` that of PID's namespace (``PROC_ROOT/net/snmp``), and a
file opened inside a namespace keeps reading that namespace's counters.

What the counters count, and how exactly they count connections that reached
ESTABLISHED (Linux net/ipv4: tcp_output.c, tcp_minisocks.c, tcp.c, tcp_input.c;
measured against the tracepoint ``sock:inet_sock_set_state``, see
benchmarks/coverage.py):

- ``ActiveOpens`` (TCP_MIB_ACTIVEOPENS) is counted in ``tcp_connect()``, when
  the first SYN is sent: every connect() that got that far, whether it is
  answered or not.
- ``PassiveOpens`` (TCP_MIB_PASSIVEOPENS) is counted in
  ``tcp_create_openreq_child()``, when a request socket's handshake completes
  (or its SYN cookie checks out, or a Fast Open SYN creates the child) and the
  child socket is made: one per socket that accept() may return. Handshakes
  dropped for a full accept queue make no child and are not counted.
- ``AttemptFails`` (TCP_MIB_ATTEMPTFAILS) is counted in ``tcp_done()`` for a
  socket still in SYN_SENT or SYN_RECV (a connect refused by a RST, timed out,
  a child reset before its handshake ended), and in ``tcp_check_req()`` for a
  *request* socket (not yet a child) that receives a RST or a SYN.
- ``EstabResets`` (TCP_MIB_ESTABRESETS) counts changes from ESTABLISHED or
  CLOSE_WAIT straight into CLOSE (a reset sent or received); ``CurrEstab`` is
  the sockets in ESTABLISHED or CLOSE_WAIT now (a gauge).

So ``ActiveOpens + PassiveOpens - AttemptFails`` (:attr:`TcpCounters.opened`)
counts the sockets that reached ESTABLISHED, with these differences:

- it counts a connect() as soon as its SYN is sent and takes a failure away
  only when it fails, so a read taken while handshakes are in flight counts
  them early (and one taken while a SYN is being retried may count it for up
  to ~2 minutes before its failure takes it back): over one interval the
  error is at most the handshakes in flight at its two ends, zero over a run
  once they have ended;
- a connect() abandoned in SYN_SENT by close() or a non-blocking socket
  closed early (``tcp_close`` / ``tcp_disconnect``, not ``tcp_done``) counts
  +1 and never reached ESTABLISHED: an over-count;
- a request socket reset before its handshake ended counts -1 (AttemptFails)
  with no PassiveOpens to cancel: an under-count;
- sockets made ESTABLISHED without a handshake (TCP_REPAIR, as CRIU restores
  them) are not counted: an under-count;
- MPTCP subflows and the kernel's own TCP sockets (NFS, iSCSI...) are counted
  like any socket.

Measured on loopback (kernel 6.18, benchmarks/coverage.py: loads of 1,001 to
20,000 connections, every lifetime from 0 to 8 s, closed by either side or
reset, read every 0.5 s): over each whole run the counters' difference equalled
the number of sockets the tracepoint saw reach ESTABLISHED in the namespace
exactly (2,004, 8,002, 40,002); between two reads it was off by 1 or 2 in at
most 3 of 14 to 66 intervals (handshakes in flight at a read), 0 in the rest.
No connect failed in those loads (AttemptFails stayed 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .netns import run_in_namespace

#: The counters this module reads, by the kernel's names.
NAMES = ("ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab")
#: Far more than the file holds (~1.3 KiB on 6.x): one read takes all of it.
READ_BYTES = 1 << 16


class SnmpFormatError(ValueError):
    """The file has no well-formed ``Tcp:`` pair of lines, or lacks a counter."""


@dataclass(frozen=True)
class TcpCounters:
    """One reading of a namespace's TCP counters."""

    active_opens: int
    passive_opens: int
    attempt_fails: int
    estab_resets: int
    curr_estab: int

    @property
    def opened(self) -> int:
        """Sockets that reached ESTABLISHED, as far as the counters tell (see the module)."""
        return self.active_opens + self.passive_opens - self.attempt_fails

    def opened_since(self, earlier: TcpCounters) -> int:
        """Sockets that reached ESTABLISHED between ``earlier`` and this reading."""
        return self.opened - earlier.opened


def parse(text: str, where: str = "/proc/net/snmp") -> TcpCounters:
    """The TCP counters in the text of an snmp file; SnmpFormatError, naming
    ``where``, when the ``Tcp:`` lines are missing, uneven or lack a counter."""
    lines = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    if len(lines) != 2:
        raise SnmpFormatError(f"{where}: expected a Tcp: header line and a Tcp: value line, "
                              f"found {len(lines)} Tcp: line(s)")
    names, values = lines[0][1:], lines[1][1:]
    if len(names) != len(values):
        raise SnmpFormatError(f"{where}: the Tcp: lines have {len(names)} names and "
                              f"{len(values)} values")
    counters = dict(zip(names, values))
    missing = [name for name in NAMES if name not in counters]
    if missing:
        raise SnmpFormatError(f"{where}: no Tcp: counter {', '.join(missing)}")
    try:
        numbers = [int(counters[name]) for name in NAMES]
    except ValueError:
        bad = next(name for name in NAMES if not counters[name].lstrip("-").isdigit())
        raise SnmpFormatError(f"{where}: Tcp: {bad} is {counters[bad]!r}, not a number") \
            from None
    return TcpCounters(*numbers)


class SnmpCounters:
    """Reads one namespace's TCP counters again and again through one open file.

    ``proc_root``: the namespace whose /proc this is (``/proc``: ours,
    ``/proc/PID``: PID's); or ``netns_path`` (a ``/var/run/netns/NAME`` or
    ``/proc/PID/ns/net`` file): the file is opened from inside that namespace.
    OSError (with the path) when it cannot be opened or read; SnmpFormatError
    when what it holds is not what the kernel writes.
    """

    def __init__(self, proc_root: str = "/proc", netns_path: str | None = None) -> None:
        self._fd = -1
        if netns_path is None:
            self.where = os.path.join(proc_root, "net", "snmp")
            self._fd = _open(self.where)
        else:
            self.where = f"/proc/net/snmp of {netns_path}"
            # /proc/thread-self/net is the namespace of the thread that opens it.
            try:
                self._fd = run_in_namespace(netns_path,
                                            lambda: _open("/proc/thread-self/net/snmp"))
            except OSError as error:
                raise OSError(error.errno, f"cannot read the TCP counters of {netns_path}: "
                                           f"{error.strerror or error}") from None

    def read(self) -> TcpCounters:
        """The counters now (the kernel writes the file anew for each read from 0)."""
        try:
            data = os.pread(self._fd, READ_BYTES, 0)
        except OSError as error:
            raise OSError(error.errno, f"cannot read {self.where}: {error.strerror}") from None
        return parse(data.decode("ascii", errors="replace"), self.where)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SnmpCounters:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_counters(proc_root: str = "/proc") -> TcpCounters:
    """One reading of the TCP counters of ``proc_root``'s namespace."""
    with SnmpCounters(proc_root) as counters:
        return counters.read()


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise OSError(error.errno, f"cannot open {path}: {error.strerror}") from None
