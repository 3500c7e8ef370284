"""Blocking scanners (``--block``): nftables sets with timeouts, through the ``nft`` command.

tcpfast keeps a table of its own, ``inet tcpfast``: sets ``blocked4`` and
``blocked6`` (``flags timeout``) and an input chain whose two rules drop
packets from their members. The table outlives tcpfast on purpose: a restart
keeps what is blocked (the kernel expires entries), and setting up again is
one nft transaction that declares the table and sets (kept if they exist),
flushes the chain and re-adds its two rules, so rules are never duplicated
and there is no moment without them. ``nft`` runs with an argument list,
never through a shell, and only with addresses ``ipaddress`` has validated.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..detect.networks import AllowList, IPAddress
from ..detect.scans import PortScan

TABLE = ("inet", "tcpfast")
SETS = {4: "blocked4", 6: "blocked6"}
CHAIN = "input"
DEFAULT_BLOCK_SECONDS = 3600.0


@dataclass(frozen=True)
class Block:
    """A source address whose packets are dropped until ``until`` (UTC)."""

    remote: str
    family: int
    until: datetime


class FirewallError(Exception):
    """nft is missing, not permitted, or refused a command; the message says which."""


def _setup_commands() -> list[list[str]]:
    """The table, its sets and chain declared (kept when present), the rules replaced."""
    family, table = TABLE
    commands = [["add", "table", family, table]]
    for version, name in SETS.items():
        commands.append(["add", "set", family, table, name, "{", "type",
                         f"ipv{version}_addr", ";", "flags", "timeout", ";", "}"])
    commands.append(["add", "chain", family, table, CHAIN, "{", "type", "filter", "hook",
                     "input", "priority", "-10", ";", "policy", "accept", ";", "}"])
    commands.append(["flush", "chain", family, table, CHAIN])
    for version, name in SETS.items():
        match = "ip" if version == 4 else "ip6"
        commands.append(["add", "rule", family, table, CHAIN, match, "saddr", f"@{name}",
                         "counter", "drop"])
    return commands


def _batch(commands: list[list[str]]) -> list[str]:
    """Several nft commands as one argument list: one transaction, all or nothing."""
    arguments: list[str] = []
    for command in commands:
        if arguments:
            arguments.append(";")
        arguments.extend(command)
    return arguments


class Firewall:
    """Adds scanners to tcpfast's nftables sets; never loopback, own or allowed addresses."""

    def __init__(self, block_for: float = DEFAULT_BLOCK_SECONDS,
                 allow: AllowList | None = None, nft: str = "nft", ip: str = "ip") -> None:
        if not block_for > 0:
            raise ValueError("block_for must be > 0 seconds")
        self.block_for = block_for
        self.allow = allow or AllowList()
        self._nft = nft
        self._ip = ip

    def start(self) -> None:
        """Create (or keep) the table, sets and rules; FirewallError if that cannot be done."""
        self._own_addresses()              # ip must work too, before anything is blocked
        self._run(_batch(_setup_commands()), "set up table inet tcpfast")

    def block(self, address: str) -> Block | None:
        """Drop ``address``'s packets for ``block_for`` seconds (restarting the timeout).

        None when the address is exempt: loopback, one of this host's own
        addresses, or inside ``--allow``.
        """
        parsed = ipaddress.ip_address(address)
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
            parsed = parsed.ipv4_mapped
        if self.exempt(parsed):
            return None
        family, table = TABLE
        name = SETS[parsed.version]
        element = str(parsed)
        timeout = f"{max(1, round(self.block_for * 1000))}ms"
        # add (a no-op when present), delete, add: one transaction that
        # (re)starts the timeout whether or not the address was in the set.
        self._run(_batch([
            ["add", "element", family, table, name, "{", element, "timeout", timeout, "}"],
            ["delete", "element", family, table, name, "{", element, "}"],
            ["add", "element", family, table, name, "{", element, "timeout", timeout, "}"],
        ]), f"block {element}")
        until = datetime.now(timezone.utc) + timedelta(seconds=self.block_for)
        return Block(remote=element, family=parsed.version, until=until.replace(microsecond=0))

    def block_scanners(self, scans: Iterable[PortScan], warn: Callable[[str], None]) -> list[Block]:
        """Block the source of each scan; what cannot be blocked is said on ``warn``."""
        blocks = []
        for scan in scans:
            try:
                block = self.block(scan.remote)
            except FirewallError as error:
                warn(f"{error}; still watching")
                continue
            if block is None:
                warn(f"not blocking {scan.remote}: loopback, this host's or --allow'ed")
            else:
                blocks.append(block)
        return blocks

    def exempt(self, address: IPAddress) -> bool:
        """Loopback, this host's own addresses, and ``--allow`` are never blocked."""
        return address.is_loopback or address in self.allow or address in self._own_addresses()

    def _own_addresses(self) -> set[IPAddress]:
        """This network namespace's addresses, read each time (they change: DHCP, SLAAC)."""
        output = self._run_command([self._ip, "-json", "address", "show"],
                                   "list this host's addresses", "iproute2")
        addresses = set()
        for link in json.loads(output or "[]"):
            for info in link.get("addr_info", ()):
                try:
                    addresses.add(ipaddress.ip_address(info["local"].split("%")[0]))
                except (KeyError, ValueError):
                    continue
        return addresses

    def _run(self, arguments: list[str], purpose: str) -> str:
        return self._run_command([self._nft, *arguments], purpose, "nftables")

    @staticmethod
    def _run_command(command: list[str], purpose: str, package: str) -> str:
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise FirewallError(f"--block needs the {command[0]} command (Debian package "
                                f"{package}): not found") from None
        except OSError as error:
            raise FirewallError(f"--block: cannot run {command[0]}: "
                                f"{error.strerror or error}") from None
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            reason = (lines[0] if lines else f"exit status {result.returncode}")
            if "Operation not permitted" in result.stderr:
                reason = "Operation not permitted: needs root or CAP_NET_ADMIN in this " \
                         "network namespace"
            reason = reason.removeprefix("Error: ")
            raise FirewallError(f"--block: {command[0]} could not {purpose}: {reason}")
        return result.stdout
