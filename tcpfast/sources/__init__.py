"""Sources: where a poll's rows come from (the /proc tables, or the kernel's sock_diag dump)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import proc
from .proc import TABLES, Snapshot, read_table

SOURCES = ("proc", "netlink")


def read_snapshot(proc_root: str = "/proc", *, source: str = "proc", size_hint: int = 0,
                  deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                  families: tuple[int, ...] = (4, 6)) -> Snapshot:
    """The TCP sockets of ``proc_root``'s namespace, each connection once.

    ``source="proc"`` reads its tables (see :func:`tcpfast.sources.proc.read_snapshot`);
    ``source="netlink"`` dumps the same namespace through sock_diag, with the
    same rows, and falls back to the tables (warning once) if netlink fails.
    """
    if source == "proc":
        return proc.read_snapshot(proc_root, size_hint=size_hint, deadline=deadline,
                                  cancelled=cancelled, families=families)
    if source == "netlink":
        from . import netlink  # its imports only when it is asked for
        return netlink.read_snapshot(proc_root, size_hint=size_hint, deadline=deadline,
                                     cancelled=cancelled, families=families)
    raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")


def snapshot(proc_root: str = "/proc", source: str = "proc") -> np.ndarray:
    """The TCP sockets of one network namespace (tcp and tcp6) as rows."""
    if source == "proc":
        return proc.snapshot(proc_root)
    result = read_snapshot(proc_root, source=source)
    proc.parsing.warn_malformed(result.malformed, f"sock_diag dump of {proc_root}")
    return result.rows


__all__ = ["SOURCES", "TABLES", "Snapshot", "read_snapshot", "read_table", "snapshot"]
