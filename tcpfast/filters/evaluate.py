"""A filter evaluated on rows: one vectorised test per condition, never a loop over rows.

Ports, states and directions are looked up in small boolean tables indexed
by the column itself; uids with ``np.isin``; networks as prefix tests on the
addresses' two 64-bit words (:class:`tcpfast.detect.networks.AllowList`), a
loop over the networks only, on the rows the other conditions kept.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..detect.networks import AllowList, source_words
from ..enrich import direction

if TYPE_CHECKING:
    from .spec import Filter, IPNetwork


@lru_cache(maxsize=64)
def _table(values: frozenset[int], size: int) -> np.ndarray:
    """A boolean table, True at ``values``: indexing it with a column tests membership."""
    table = np.zeros(size, dtype=bool)
    table[list(values)] = True
    table.flags.writeable = False
    return table


@lru_cache(maxsize=64)
def _network_sets(networks: tuple[IPNetwork, ...]) -> tuple[AllowList, AllowList]:
    """The IPv4 networks and the IPv6 ones, each ready to test many addresses at once."""
    return (AllowList(network for network in networks if network.version == 4),
            AllowList(network for network in networks if network.version == 6))


def _inside(addresses: np.ndarray, families: np.ndarray, networks: tuple[IPNetwork, ...]
            ) -> np.ndarray:
    """Which addresses are in one of ``networks``: an IPv4 network holds IPv4 addresses
    and their IPv4-mapped form in IPv6 rows, an IPv6 network only IPv6 rows' addresses."""
    ipv4, ipv6 = _network_sets(networks)
    high, low = source_words(addresses, families)     # IPv4 rows in the IPv4-mapped form
    inside = ipv4.contains(high, low)
    if ipv6:
        inside |= (families == 6) & ipv6.contains(high, low)
    return inside


def mask(spec: Filter, rows: np.ndarray, directions: np.ndarray | None = None) -> np.ndarray:
    """The rows ``spec`` keeps (see :meth:`tcpfast.filters.Filter.mask`)."""
    if not isinstance(rows, np.ndarray) or rows.dtype.names is None or rows.ndim != 1:
        raise TypeError("rows must be a 1-d numpy array of CONNECTION_DTYPE rows")
    keep = np.ones(len(rows), dtype=bool)
    if spec.states is not None:
        keep &= _table(spec.states, 256)[rows["state"]]
    if spec.local_ports is not None:
        keep &= _table(spec.local_ports, 1 << 16)[rows["local_port"]]
    if spec.remote_ports is not None:
        keep &= _table(spec.remote_ports, 1 << 16)[rows["remote_port"]]
    if spec.ports is not None:
        either = _table(spec.ports, 1 << 16)
        keep &= either[rows["local_port"]] | either[rows["remote_port"]]
    if spec.uids is not None:
        keep &= np.isin(rows["uid"], np.fromiter(spec.uids, np.uint32, len(spec.uids)))
    if spec.directions is not None:
        if directions is None:
            directions = direction.directions(rows)
        elif np.shape(directions) != (len(rows),):
            raise ValueError(f"directions must hold one code per row ({len(rows)}), "
                             f"not shape {np.shape(directions)}")
        keep &= _table(spec.directions, 256)[np.asarray(directions, dtype=np.uint8)]
    for field, networks in (("local_addr", spec.local_networks),
                            ("remote_addr", spec.remote_networks)):
        if networks is not None:
            kept = np.flatnonzero(keep)
            keep[kept] = _inside(rows[field][kept], rows["family"][kept], networks)
    return keep
