"""What a filter selects, and the option texts it is parsed from.

A :class:`Filter` is a conjunction of conditions, each a set that a row's
value must be in (a comma list in an option is an OR within it); a condition
left as None is no condition. Addresses follow ss and the kernel's
sock_diag bytecode: an IPv4 network matches IPv4 rows and the IPv4-mapped
addresses (``::ffff:a.b.c.d``) of IPv6 rows (a dual-stack socket's view of an
IPv4 peer); an IPv6 network matches IPv6 rows only, so ``::ffff:10.0.0.0/104``
selects the mapped addresses of IPv6 rows and never an IPv4 row.
"""

from __future__ import annotations

import ipaddress
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..enrich.direction import DIRECTION_NAMES
from ..schema import STATE_NAMES
from . import evaluate

if TYPE_CHECKING:
    import numpy as np

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_PORT = 0xFFFF
MAX_UID = 0xFFFF_FFFF


def _items(text: str) -> list[str]:
    """The entries of a comma list, blanks around them dropped; ValueError when there are none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"no value in {text!r}")
    return items


def _where(item: str, text: str) -> str:
    """``'x'``, or ``'x' in 'a,x'`` when the entry is part of a longer text."""
    return repr(item) if item == text.strip() else f"{item!r} in {text!r}"


def parse_ports(text: str) -> frozenset[int]:
    """``22`` or ``80,443``: port numbers, 0 to 65535 (0: no port, a listener's remote end)."""
    ports = set()
    for item in _items(text):
        if not (item.isascii() and item.isdigit()) or int(item) > MAX_PORT:
            raise ValueError(f"not a port number (0 to {MAX_PORT}): {_where(item, text)}")
        ports.add(int(item))
    return frozenset(ports)


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``10.0.0.0/8,2001:db8::/32,192.0.2.7``: networks (an address is a network of one);
    host bits set under the prefix are ignored, as ``ip`` and ss do."""
    networks: list[IPNetwork] = []
    for item in _items(text):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"not an address or CIDR network: {_where(item, text)}") from None
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def parse_uids(text: str) -> frozenset[int]:
    """``0,1000`` or ``www-data``: user ids, or user names looked up in this system's
    user database when the filter is made (in another user namespace or container
    a name may stand for another id: give the number there)."""
    uids = set()
    for item in _items(text):
        if item.isascii() and item.isdigit():
            if int(item) > MAX_UID:
                raise ValueError(f"not a user id (0 to {MAX_UID}): {_where(item, text)}")
            uids.add(int(item))
            continue
        try:
            uids.add(pwd.getpwnam(item).pw_uid)
        except KeyError:
            raise ValueError(f"no such user: {_where(item, text)}") from None
    return frozenset(uids)


def _port_set(value: Iterable[int], name: str) -> frozenset[int]:
    ports = frozenset(value)
    if any(not isinstance(port, int) or not 0 <= port <= MAX_PORT for port in ports):
        raise ValueError(f"{name}: ports are whole numbers from 0 to {MAX_PORT}")
    return ports


@dataclass(frozen=True)
class Filter:
    """Which connections to keep: every condition given must hold (AND); a condition
    is the set of values allowed (OR); None: no condition.

    - ``ports``: the local or the remote port is one of them (``--port``).
    - ``local_ports``, ``remote_ports``: that side's port (``--local-port``, ``--remote-port``).
    - ``local_networks``, ``remote_networks``: that side's address is in one of them
      (``--local``, ``--remote``; strings are parsed as networks).
    - ``directions``: direction codes (:data:`tcpfast.enrich.direction.DIRECTION_NAMES`):
      ``{IN}`` for ``--inbound``, ``{OUT}`` for ``--outbound``, both for both.
    - ``uids``: the socket's owner (``--uid``); the kernel gives TIME_WAIT and
      pending handshake (SYN_RECV) rows uid 0.
    - ``states``: kernel state codes (``--state``, groups expanded).

    An empty set allows nothing. The values are checked and made immutable
    (frozensets, tuples of networks): ValueError names a bad one.
    """

    ports: frozenset[int] | None = None
    local_ports: frozenset[int] | None = None
    remote_ports: frozenset[int] | None = None
    local_networks: tuple[IPNetwork, ...] | None = None
    remote_networks: tuple[IPNetwork, ...] | None = None
    directions: frozenset[int] | None = None
    uids: frozenset[int] | None = None
    states: frozenset[int] | None = None

    def __post_init__(self) -> None:
        for name in ("ports", "local_ports", "remote_ports"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _port_set(getattr(self, name), name))
        for name in ("local_networks", "remote_networks"):
            value = getattr(self, name)
            if value is not None:
                try:
                    networks = tuple(dict.fromkeys(ipaddress.ip_network(network, strict=False)
                                                   for network in value))
                except (TypeError, ValueError) as error:
                    raise ValueError(f"{name}: {error}") from None
                object.__setattr__(self, name, networks)
        checks = (("directions", DIRECTION_NAMES, "direction codes"),
                  ("uids", range(MAX_UID + 1), "user ids"),
                  ("states", STATE_NAMES, "TCP state codes /proc lists"))
        for name, allowed, what in checks:
            value = getattr(self, name)
            if value is not None:
                chosen = frozenset(value)
                if any(not isinstance(item, int) or item not in allowed for item in chosen):
                    raise ValueError(f"{name}: not all {what}: {sorted(chosen, key=str)}")
                object.__setattr__(self, name, chosen)

    @property
    def conditions(self) -> tuple[str, ...]:
        """The names of the conditions given (the fields that are not None)."""
        return tuple(field.name for field in fields(self) if getattr(self, field.name) is not None)

    def __bool__(self) -> bool:
        """False when there is no condition: every row is kept."""
        return bool(self.conditions)

    def mask(self, rows: np.ndarray, directions: np.ndarray | None = None) -> np.ndarray:
        """Which rows (CONNECTION_DTYPE) the filter keeps, as a boolean array.

        ``directions``: the rows' direction codes, needed only with a
        direction condition; by default computed from ``rows`` themselves
        (their LISTEN rows as the listeners), which is right only when
        ``rows`` is a whole poll: pass the codes otherwise.
        """
        return evaluate.mask(self, rows, directions)
