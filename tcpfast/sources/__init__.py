"""Sources: where a poll's rows come from (the /proc tables, or the kernel's sock_diag dump).

Each is one small protocol (:class:`tcpfast.sources.base.Source`), one file each:
``proc.ProcTables``, ``netlink.NetlinkSource``, and ``fallback.FallbackSource``,
which reads netlink until it fails and /proc from then on. :func:`open_source`
builds the one asked for; :func:`read_snapshot` and :func:`snapshot` are the
library's entry points.
"""

from __future__ import annotations

import atexit
import os
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from . import proc
from .base import Snapshot, Source, Warn, stop_reading_at
from .netns import namespace_id, namespace_of, proc_root_of

if TYPE_CHECKING:
    from ..filters.kernel import KernelFilter
from .proc import TABLES, ProcTables, read_table

SOURCES = ("proc", "netlink")


def open_source(kind: str = "proc", proc_root: str = "/proc", netns_path: str | None = None,
                *, warn: Warn | None = None, families: tuple[int, ...] = (4, 6),
                kernel: KernelFilter | None = None) -> Source:
    """The source ``kind`` of the namespace ``proc_root`` lists, or ``netns_path`` names.

    netlink falls back to ``proc_root``'s tables (the namespace's own: /proc/PID
    for /proc/PID/ns/net), said once on ``warn``, when it cannot be had or fails
    later (``warn`` None: a NetlinkFallbackWarning); a ``netns_path`` that cannot
    be entered is an OSError (watching some other namespace instead would be wrong).
    ``kernel``: what netlink's dumps let the kernel filter (see NetlinkSource).
    """
    warn = warn or _warn_once
    if kind not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {kind!r}")
    if netns_path is None:
        netns = namespace_id(proc_root)
    else:
        try:
            netns = os.stat(netns_path).st_ino      # what is entered must be this one
        except OSError as error:
            raise OSError(error.errno, f"cannot open network namespace {netns_path}: "
                                       f"{error.strerror}") from None
        proc_root = proc_root_of(netns_path) or ""
    if kind == "proc":
        return ProcTables(proc_root, families=families, netns=netns)
    from .fallback import FallbackSource  # netlink's imports only when it is asked for
    from .netlink import NetlinkSource
    fallback = ProcTables(proc_root, families=families, netns=netns) if proc_root else None
    if netns_path is not None:
        return FallbackSource(NetlinkSource(netns_path, families=families, netns=netns, inode=netns,
                                            kernel=kernel), fallback, warn)
    try:
        primary = NetlinkSource(namespace_of(proc_root), families=families, netns=netns,
                                kernel=kernel)
    except OSError as error:
        return FallbackSource(None, fallback, warn,
                              failure=f"cannot dump {proc_root}'s sockets through netlink "
                                      f"({error.strerror or error})")
    return FallbackSource(primary, fallback, warn)


_shared: dict[tuple[str, str, tuple[int, ...]], Source] = {}
_shared_lock = threading.Lock()


@atexit.register
def _close_shared() -> None:
    for source in _shared.values():
        source.close()


def _warn_once(message: str) -> None:
    from .fallback import NetlinkFallbackWarning
    warnings.warn(f"tcpfast: {message}", NetlinkFallbackWarning, stacklevel=5)


def shared_source(kind: str, proc_root: str, families: tuple[int, ...]) -> Source:
    """The process's source for (kind, proc_root, families): a netlink socket is made once
    per namespace and reused by every library call."""
    with _shared_lock:
        key = (kind, proc_root, tuple(families))
        if key not in _shared:
            _shared[key] = open_source(kind, proc_root, families=families)
        return _shared[key]


def read_snapshot(proc_root: str = "/proc", *, source: str = "proc", size_hint: int = 0,
                  deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                  families: tuple[int, ...] = (4, 6)) -> Snapshot:
    """The TCP sockets of ``proc_root``'s namespace, each connection once.

    ``source="proc"`` reads its tables (see :func:`tcpfast.sources.proc.read_snapshot`);
    ``source="netlink"`` dumps the same namespace through sock_diag, with the
    same rows, and falls back to the tables (warning once) if netlink fails.
    ``deadline`` (time.monotonic()) and ``cancelled()`` stop the read early.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    stop_reading = stop_reading_at(deadline, cancelled)
    return shared_source(source, proc_root, families).read(size_hint=size_hint,
                                                           stop_reading=stop_reading)


def snapshot(proc_root: str = "/proc", source: str = "proc") -> np.ndarray:
    """The TCP sockets of one network namespace (tcp and tcp6) as rows."""
    if source == "proc":
        return proc.snapshot(proc_root)
    result = read_snapshot(proc_root, source=source)
    proc.parsing.warn_malformed(result.malformed, f"sock_diag dump of {proc_root}")
    return result.rows


__all__ = ["SOURCES", "TABLES", "ProcTables", "Snapshot", "Source", "open_source",
           "read_snapshot", "read_table", "snapshot"]
