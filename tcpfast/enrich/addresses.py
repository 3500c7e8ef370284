"""This host's own addresses: the local routes of a network namespace, read from its /proc tables.

Port-scan detection leaves out local clients of local services, and blocking never
drops the host's own traffic: both need the namespace's own addresses. They are read
where the connections are, under ``PROC_ROOT/net``: ``fib_trie`` lists the IPv4
routing tables, and every route of type LOCAL in the local table is the host's (each
address, and whole prefixes routed to the host: ``127.0.0.0/8``, an AnyIP range added
with ``ip route add local 192.0.2.0/24 dev lo``); ``if_inet6`` lists the IPv6
addresses. Both are world-readable, so ``--proc-root /proc/1`` from an unprivileged
container reads the host's addresses as it reads its connections. They change (DHCP,
SLAAC): read on each call, which callers make only when a decision needs them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOCAL_TABLE = "Local:"
"""fib_trie's heading of the local table (255); other tables' LOCAL routes (a TPROXY
setup's ``local 0.0.0.0/0`` in a table of its own) do not make addresses the host's."""


def own_networks(proc_root: str = "/proc") -> list[Network]:
    """The networks local to the namespace whose tables are under ``proc_root``.

    A table the namespace does not have (IPv6 disabled; a directory of recorded
    tables) adds none; OSError for one that exists and cannot be read.
    """
    networks: list[Network] = []
    trie = _read(os.path.join(proc_root, "net", "fib_trie"))
    if trie is not None:
        networks.extend(_local_routes(trie))
    addresses = _read(os.path.join(proc_root, "net", "if_inet6"))
    if addresses is not None:
        for line in addresses.splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                networks.append(ipaddress.IPv6Network((int(fields[0], 16), 128)))
    return networks


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as table:
            return table.read()
    except FileNotFoundError:
        return None


def _local_routes(trie: str) -> list[Network]:
    """``fib_trie``'s LOCAL routes of the local table: a leaf line ``|-- 10.0.0.5`` is
    followed by one line per prefix length it has, ``/32 host LOCAL``."""
    networks: list[Network] = []
    in_local_table, leaf = False, None
    for line in trie.splitlines():
        if not line.startswith(" "):                      # a table's heading
            in_local_table, leaf = line.strip() == LOCAL_TABLE, None
            continue
        if not in_local_table:
            continue
        entry = line.strip()
        if entry.startswith("|-- "):
            leaf = entry[4:]
        elif entry.startswith("/") and leaf is not None:
            length, *kind = entry[1:].split()
            if kind[1:2] == ["LOCAL"]:
                networks.append(ipaddress.IPv4Network(f"{leaf}/{length}", strict=False))
    return networks


def proc_root_in(netns_path: str) -> str | None:
    """``/proc/PID`` of a process in the network namespace ``netns_path`` (its net/
    tables are that namespace's), or None when no process this user can see is in it."""
    target = os.stat(netns_path)
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                namespace = os.stat(os.path.join(entry.path, "ns", "net"))
            except OSError:
                continue
            if (namespace.st_dev, namespace.st_ino) == (target.st_dev, target.st_ino):
                return entry.path
    return None


class WatchedNetworks:
    """The own networks of the watched namespace, read each time they are asked for.

    ``proc_root``: where its tables are; without one (``--netns`` of a named
    namespace), a process inside it is looked for each time. What cannot be read
    is said once on ``warn``, and counts as no addresses (loopback is exempt anyway).
    """

    def __init__(self, proc_root: str | None, netns_path: str | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self._proc_root = proc_root
        self._netns_path = netns_path
        self._warn = warn
        self._warned = False

    def __call__(self) -> list[Network]:
        try:
            root = self._proc_root
            if root is None and self._netns_path is not None:
                root = proc_root_in(self._netns_path)
            if root is None:
                self._say(f"no process in network namespace {self._netns_path} to read "
                          "its addresses from")
                return []
            return own_networks(root)
        except OSError as error:
            self._say(f"cannot read {error.filename or 'them'}: {error.strerror or error}")
            return []

    def _say(self, reason: str) -> None:
        if self._warn is not None and not self._warned:
            self._warned = True
            self._warn(f"port scans: cannot tell this host's own addresses ({reason}); scans "
                       "from them are reported, from loopback not (said once)")
