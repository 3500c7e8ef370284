"""Sources: where a poll's rows come from (the /proc tables of one network namespace)."""

from .proc import TABLES, Snapshot, read_snapshot, read_table, snapshot

__all__ = ["TABLES", "Snapshot", "read_snapshot", "read_table", "snapshot"]
