"""tcpfast: which TCP connections just appeared on this Linux host, fast.

The flow is sources (read /proc) -> decode (compiled, or pure Python) -> diff
(key set operations) -> outputs (text or JSON lines): one subpackage each.
"""

__version__ = "0.1.0"

from .backend import ACCELERATED
from .decode.parsing import MalformedRowsWarning, parse, parse_pure
from .diff.changes import closed_connections, new_connections
from .schema import CONNECTION_DTYPE, STATE_NAMES
from .sources import Snapshot, read_snapshot, snapshot

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
