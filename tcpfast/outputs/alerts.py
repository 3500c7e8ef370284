"""Port-scan and block events as text or JSON lines (the same contract as report.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from ..detect.scans import PortScan
from .firewall import Block


def _stamp(when: datetime, sep: str) -> str:
    return when.isoformat(sep=sep, timespec="seconds")


def scan_text_lines(scans: Sequence[PortScan], when: datetime) -> list[str]:
    """``TIME: Port scan detected: 192.0.2.56 -> 10.0.0.5 on ports 80,81,82,83``."""
    stamp = _stamp(when, " ")
    return [f"{stamp}: Port scan detected: {scan.remote} -> {scan.local} on ports "
            + ",".join(map(str, scan.ports)) for scan in scans]


def scan_json_lines(scans: Sequence[PortScan], when: datetime) -> list[str]:
    """``{"event": "port_scan", "remote", "local", "family", "ports" (sorted), "window"}``."""
    stamp = _stamp(when, "T")
    return [json.dumps({"time": stamp, "event": "port_scan", "family": scan.family,
                        "local": scan.local, "remote": scan.remote,
                        "ports": list(scan.ports), "window": scan.window})
            for scan in scans]


def block_text_lines(blocks: Sequence[Block], when: datetime) -> list[str]:
    """``TIME: Blocked 192.0.2.56 until 2026-11-28 11:00:05+00:00``."""
    stamp = _stamp(when, " ")
    return [f"{stamp}: Blocked {block.remote} until {_stamp(block.until, ' ')}"
            for block in blocks]


def block_json_lines(blocks: Sequence[Block], when: datetime) -> list[str]:
    """``{"event": "block", "remote", "family", "until"}``."""
    stamp = _stamp(when, "T")
    return [json.dumps({"time": stamp, "event": "block", "family": block.family,
                        "remote": block.remote, "until": _stamp(block.until, "T")})
            for block in blocks]
