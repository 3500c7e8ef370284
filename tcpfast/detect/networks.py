"""Addresses as two 64-bit words, and networks (``--allow``) tested against many at once.

Every address is held in its IPv6 form: an IPv4 address as ``::ffff:a.b.c.d``.
A source seen on a dual-stack listener (``tcp6`` lists it IPv4-mapped) and on
an IPv4 one is then the same source, and one prefix test serves both families.
Words are big-endian, so a prefix is the high bits of the pair.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED_PREFIX = np.uint64(0xFFFF << 32)
_LOW_32 = np.uint64(0xFFFF_FFFF)


def source_words(addresses: np.ndarray, families: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) words of rows' 16-byte addresses, IPv4 as IPv4-mapped IPv6."""
    words = np.ascontiguousarray(addresses).view(">u8").astype(np.uint64)
    high, low = words[:, 0].copy(), words[:, 1].copy()
    ipv4 = families == 4
    high[ipv4] = 0
    low[ipv4] = _MAPPED_PREFIX | (words[ipv4, 0] >> np.uint64(32))
    return high, low


def is_ipv4(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Which addresses are IPv4 (IPv4-mapped in this form)."""
    return (high == 0) & ((low & ~_LOW_32) == _MAPPED_PREFIX)


def address_of(high: int, low: int) -> IPAddress:
    """The address held in (high, low): IPv4 when it is IPv4-mapped."""
    address = ipaddress.IPv6Address((int(high) << 64) | int(low))
    return address.ipv4_mapped or address


def _as_ipv6(network: IPNetwork) -> tuple[int, int]:
    """(address, prefix length) of a network in the IPv6 form."""
    if network.version == 4:
        return (0xFFFF << 32) | int(network.network_address), 96 + network.prefixlen
    return int(network.network_address), network.prefixlen


class AllowList:
    """Networks exempt from detection and blocking (``--allow CIDR,...``)."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        prefixes = [_as_ipv6(network) for network in self.networks]
        full = (1 << 128) - 1
        masks = [full ^ (full >> length) for _, length in prefixes]
        self._high = np.array([address >> 64 for address, _ in prefixes], dtype=np.uint64)
        self._low = np.array([address & (2**64 - 1) for address, _ in prefixes], dtype=np.uint64)
        self._mask_high = np.array([mask >> 64 for mask in masks], dtype=np.uint64)
        self._mask_low = np.array([mask & (2**64 - 1) for mask in masks], dtype=np.uint64)

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """``10.0.0.0/8,2001:db8::/32,192.0.2.7``; ValueError names the bad entry."""
        networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not an address or CIDR network: {item!r}") from None
        return cls(networks)

    def contains(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """Mask of the addresses inside any of the networks (a loop over networks only)."""
        inside = np.zeros(len(high), dtype=bool)
        for net_high, net_low, mask_high, mask_low in zip(
                self._high, self._low, self._mask_high, self._mask_low):
            inside |= ((high & mask_high) == net_high) & ((low & mask_low) == net_low)
        return inside

    def __contains__(self, address: IPAddress) -> bool:
        mapped = address if address.version == 6 else ipaddress.IPv6Address(
            (0xFFFF << 32) | int(address))
        value = int(mapped)
        return bool(self.contains(np.array([value >> 64], dtype=np.uint64),
                                  np.array([value & (2**64 - 1)], dtype=np.uint64))[0])

    def __bool__(self) -> bool:
        return bool(self.networks)
