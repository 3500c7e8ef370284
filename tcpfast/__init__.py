"""tcpfast: which TCP connections just appeared on this Linux host, fast.

The flow is sources (read /proc) -> decode (compiled, or pure Python) -> diff
(key set operations) -> enrich (direction, owning process) -> outputs (text or JSON lines): one
subpackage each; ``watch`` keeps the state between polls, ``poller`` runs one
poll, ``loop`` the cadence, ``cli`` wires the options.

The names below are imported on first use, so that ``python -m tcpfast`` can
answer a stop signal before numpy has loaded.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False   # not typing's: importing typing would take a while
if TYPE_CHECKING:       # the same names, for type checkers and editors
    from typing import Any

    from .backend import ACCELERATED as ACCELERATED
    from .decode.parsing import MalformedRowsWarning as MalformedRowsWarning
    from .decode.parsing import parse as parse
    from .decode.parsing import parse_pure as parse_pure
    from .diff.changes import closed_connections as closed_connections
    from .diff.changes import new_connections as new_connections
    from .enrich.direction import DIRECTION_NAMES as DIRECTION_NAMES
    from .enrich.direction import directions as directions
    from .enrich.owners import Owner as Owner
    from .enrich.owners import OwnerFinder as OwnerFinder
    from .filters import Filter as Filter
    from .schema import CONNECTION_DTYPE as CONNECTION_DTYPE
    from .schema import STATE_NAMES as STATE_NAMES
    from .sources import read_snapshot as read_snapshot
    from .sources import snapshot as snapshot
    from .sources.base import Snapshot as Snapshot

__version__ = "0.2.0"

_PUBLIC = {
    "ACCELERATED": "backend",
    "CONNECTION_DTYPE": "schema",
    "STATE_NAMES": "schema",
    "MalformedRowsWarning": "decode.parsing",
    "parse": "decode.parsing",
    "parse_pure": "decode.parsing",
    "closed_connections": "diff.changes",
    "new_connections": "diff.changes",
    "Snapshot": "sources.base",
    "read_snapshot": "sources",
    "snapshot": "sources",
    "directions": "enrich.direction",
    "DIRECTION_NAMES": "enrich.direction",
    "Owner": "enrich.owners",
    "Filter": "filters",
    "OwnerFinder": "enrich.owners",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tcpfast' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
