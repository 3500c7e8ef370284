"""Port-scan and block events as text or JSON lines (the same contract as report.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from ..detect.scans import PortScan, ScanDetector
from ..enrich.direction import DEFAULT_EPHEMERAL_PORTS, IN
from ..events import Poll
from ..schema import STATE_NAMES
from ..watch import Watcher
from .firewall import Block, Firewall, FirewallError

if TYPE_CHECKING:
    from .metrics import Metrics  # prometheus_client is imported only with --metrics


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


class ScanAlerts:
    """Each poll's inbound connections -> port-scan lines, and block lines when blocking.

    Detection keeps a watcher of its own over every state, fed the same
    snapshot, so it sees every inbound connection whatever ``--state`` prints
    (TIME_WAIT included: what a connect scan leaves when the service closes
    first). Detection, the firewall and the counters stay in their modules.
    """

    def __init__(self, detector: ScanDetector, warn: Callable[[str], None], *,
                 json_lines: bool = False, firewall: Firewall | None = None,
                 metrics: Metrics | None = None,
                 ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL_PORTS) -> None:
        self.detector = detector
        self.firewall = firewall
        self.metrics = metrics
        self._warn = warn
        self._watcher = Watcher(STATE_NAMES, ephemeral=ephemeral)
        self._scan_lines = scan_json_lines if json_lines else scan_text_lines
        self._block_lines = block_json_lines if json_lines else block_text_lines

    def __call__(self, poll: Poll) -> list[str]:
        """The lines for the scans (and blocks) this poll's new inbound connections complete.

        The first poll's connections were open before tcpfast started: their
        age is unknown, so they never count.
        """
        seen = self._watcher.update(poll.snapshot, poll.time)
        if seen.first:
            return []
        inbound = seen.new.rows[seen.new.direction == IN]
        return self.poll(inbound, poll.time, datetime.fromtimestamp(int(poll.time), timezone.utc))

    def poll(self, inbound: np.ndarray, now: float, when: datetime) -> list[str]:
        """Lines for the scans (and blocks) that ``inbound``, new this poll, completes."""
        scans = self.detector.update(inbound, now)
        if not scans:
            return []
        lines = self._scan_lines(scans, when)
        blocks = [block for block in map(self._block, scans) if block is not None]
        lines += self._block_lines(blocks, when)
        if self.metrics is not None:
            self.metrics.port_scans.inc(len(scans))
            self.metrics.blocks.inc(len(blocks))
        return lines

    def _block(self, scan: PortScan) -> Block | None:
        if self.firewall is None:
            return None
        try:
            block = self.firewall.block(scan.remote)
        except FirewallError as error:
            self._warn(f"{error}; still watching")
            return None
        if block is None:
            self._warn(f"not blocking {scan.remote}: loopback, this host's or --allow'ed")
        return block
