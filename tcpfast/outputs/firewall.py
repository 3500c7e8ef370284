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
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..detect.networks import AllowList, IPAddress
from ..detect.scans import PortScan
from ..enrich.addresses import own_networks

TABLE = ("inet", "tcpfast")
SETS = {4: "blocked4", 6: "blocked6"}
CHAIN = "input"
DEFAULT_BLOCK_SECONDS = 3600.0
MIN_BLOCK_SECONDS = 0.001
"""A set element's timeout counts milliseconds."""
MAX_BLOCK_SECONDS = ((2**64 - 1) // 1_000_000 - 1) / 1000
"""The kernel refuses a timeout of U64_MAX / NSEC_PER_MSEC ms or more (ERANGE, nf_msecs_to_jiffies64
since Linux 5.6): 18446744073.708 s, about 584 years."""


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


def nft_duration(seconds: float) -> str:
    """``seconds`` as nft writes a duration, ``11574d1h46m40s``, to the millisecond.

    nft's parser refuses a number of nine digits or more in any one unit
    (``100000000ms``: "value too large"), so each unit holds only its part.
    """
    milliseconds = max(1, round(seconds * 1000))
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


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
                 allow: AllowList | None = None, nft: str = "nft",
                 proc_root: str = "/proc") -> None:
        """``proc_root``: the procfs of the namespace nft runs in (ours), for its addresses."""
        if not MIN_BLOCK_SECONDS <= block_for <= MAX_BLOCK_SECONDS:
            raise ValueError(f"block_for must be from {MIN_BLOCK_SECONDS} to "
                             f"{MAX_BLOCK_SECONDS} seconds")
        self.block_for = block_for
        self.allow = allow or AllowList()
        self._nft = nft
        self._proc_root = proc_root

    def start(self) -> None:
        """Create (or keep) the table, sets and rules; FirewallError if that cannot be done."""
        self._own_networks()               # readable too, before anything is blocked
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
        timeout = nft_duration(self.block_for)
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
        return (address.is_loopback or address in self.allow
                or address in AllowList(self._own_networks()))

    def _own_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """This network namespace's own networks, read each time (they change: DHCP, SLAAC)."""
        try:
            return own_networks(self._proc_root)
        except OSError as error:
            raise FirewallError(f"--block: cannot read this host's addresses from "
                                f"{error.filename}: {error.strerror or error}") from None

    def _run(self, arguments: list[str], purpose: str) -> str:
        command = [self._nft, *arguments]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise FirewallError(f"--block needs the {command[0]} command (Debian package "
                                "nftables): not found") from None
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
