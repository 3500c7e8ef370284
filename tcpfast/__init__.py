"""tcpfast: which TCP connections just appeared on this Linux host, fast.

The flow is source (read /proc) -> parse (compiled, or pure Python) -> diff
(key set operations) -> report (text or JSON lines).
"""

__version__ = "0.1.0"

from .backend import ACCELERATED
from .diff import closed_connections, new_connections
from .parsing import MalformedRowsWarning, parse, parse_pure
from .schema import CONNECTION_DTYPE, STATE_NAMES
from .source import Snapshot, read_snapshot, snapshot

__all__ = [
    "ACCELERATED",
    "CONNECTION_DTYPE",
    "STATE_NAMES",
    "MalformedRowsWarning",
    "Snapshot",
    "closed_connections",
    "new_connections",
    "parse",
    "parse_pure",
    "read_snapshot",
    "snapshot",
]
