"""Port-scan detection on real loopback connections from several 127.x source addresses.

The connections are real (the detector reads them from /proc like the watcher);
the clock handed to the detector is the test's, so window edges are exact.
"""

import contextlib
import ipaddress
import json
import socket
from datetime import datetime, timezone

import numpy as np
import pytest

from tcpfast.detect import AllowList, ScanDetector, scans
from tcpfast.diff.changes import new_connections
from tcpfast.outputs import alerts, firewall
from tcpfast.schema import CONNECTION_DTYPE, STATE_CODES
from tcpfast.sources import read_snapshot


class Loopback:
    """Listeners on 127.0.0.1, clients from chosen 127.x sources, and a poll of what is new."""

    def __init__(self, stack: contextlib.ExitStack, listeners: int) -> None:
        self._stack = stack
        self.ports = []
        for _ in range(listeners):
            server = stack.enter_context(socket.socket())
            server.bind(("127.0.0.1", 0))
            server.listen(64)
            self.ports.append(server.getsockname()[1])
        self._previous = self._inbound()

    def connect(self, source: str, ports) -> None:
        for port in ports:
            client = self._stack.enter_context(socket.socket())
            client.bind((source, 0))
            client.connect(("127.0.0.1", port))

    def _inbound(self) -> np.ndarray:
        rows = read_snapshot().rows
        return rows[np.isin(rows["local_port"], self.ports)
                    & (rows["state"] != STATE_CODES["LISTEN"])]

    def poll(self) -> np.ndarray:
        """The new inbound connections to the listeners since the last poll."""
        current = self._inbound()
        new = new_connections(self._previous, current)
        self._previous = current
        return new


@pytest.fixture
def loopback():
    with contextlib.ExitStack() as stack:
        yield Loopback(stack, listeners=5)


def test_five_ports_detected_once_three_not(loopback):
    detector = ScanDetector(ports=3, window=60.0)
    loopback.connect("127.9.0.5", loopback.ports[:2])
    loopback.connect("127.9.0.3", loopback.ports[:3])
    assert detector.update(loopback.poll(), now=0.0) == []
    loopback.connect("127.9.0.5", loopback.ports[2:])
    found = detector.update(loopback.poll(), now=1.0)
    assert [(scan.remote, scan.local, scan.family, scan.ports) for scan in found] == [
        ("127.9.0.5", "127.0.0.1", 4, tuple(sorted(loopback.ports)))]
    loopback.connect("127.9.0.5", loopback.ports[:1])      # a port it already had
    assert detector.update(loopback.poll(), now=2.0) == []
    assert detector.update(loopback.poll(), now=3.0) == []


def test_four_ports_spread_over_more_than_the_window_not_detected(loopback):
    detector = ScanDetector(ports=3, window=1.0)
    for step, port in enumerate(loopback.ports[:4]):
        loopback.connect("127.9.0.4", [port])
        assert detector.update(loopback.poll(), now=0.6 * step) == []


def test_source_returning_after_a_quiet_window_detected_again(loopback):
    detector = ScanDetector(ports=3, window=1.0)
    loopback.connect("127.9.0.6", loopback.ports[:4])
    assert [scan.ports for scan in detector.update(loopback.poll(), now=0.0)] == [
        tuple(sorted(loopback.ports[:4]))]
    assert detector.update(loopback.poll(), now=0.9) == []
    assert len(detector) == 4
    assert detector.update(loopback.poll(), now=1.5) == []      # quiet: its entries expire
    assert len(detector) == 0
    loopback.connect("127.9.0.6", loopback.ports[1:])
    assert [scan.ports for scan in detector.update(loopback.poll(), now=2.0)] == [
        tuple(sorted(loopback.ports[1:]))]


def test_going_on_to_more_ports_reported_again(loopback):
    detector = ScanDetector(ports=3, window=60.0)
    loopback.connect("127.9.0.8", loopback.ports[:4])
    assert len(detector.update(loopback.poll(), now=0.0)) == 1
    loopback.connect("127.9.0.8", loopback.ports[4:])
    assert [scan.ports for scan in detector.update(loopback.poll(), now=1.0)] == [
        tuple(sorted(loopback.ports))]


def test_allowed_source_is_exempt(loopback):
    detector = ScanDetector(ports=3, window=60.0, allow=AllowList.parse("127.9.1.0/24"))
    loopback.connect("127.9.1.7", loopback.ports)
    loopback.connect("127.9.0.9", loopback.ports)
    assert [scan.remote for scan in detector.update(loopback.poll(), now=0.0)] == ["127.9.0.9"]


def test_local_sources_are_left_out_and_their_addresses_read_only_for_a_scan():
    """``local``: loopback and the host's own networks are not scanners; the networks are
    asked for only when some source crosses the threshold."""
    asked = []

    def own():
        asked.append(1)
        return [ipaddress.ip_network("192.0.2.0/28"), ipaddress.ip_network("2001:db8::5/128")]

    detector = ScanDetector(ports=3, local=own)
    quiet = _rows([("192.0.2.99", 4, port) for port in (1, 2, 3)])
    assert detector.update(quiet, now=0.0) == [] and asked == []    # nothing to decide
    sources = ["127.9.0.1", "::1", "::ffff:127.0.0.1", "192.0.2.3", "::ffff:192.0.2.4",
               "2001:db8::5", "192.0.2.99", "2001:db8::6"]
    rows = _rows([(source, 6 if ":" in source else 4, port)
                  for source in sources for port in (80, 81, 82, 83)])
    assert sorted(scan.remote for scan in detector.update(rows, now=1.0)) == [
        "192.0.2.99", "2001:db8::6"]
    assert len(asked) == 1                                           # once for the poll
    more = _rows([(source, 6 if ":" in source else 4, 84) for source in sources])
    assert sorted(scan.remote for scan in detector.update(more, now=2.0)) == [
        "192.0.2.99", "2001:db8::6"]                                 # going on: still left out
    everyone = ScanDetector(ports=3)                                 # no ``local``: every source
    assert len(everyone.update(rows, now=1.0)) == len(sources)


def test_ipv4_mapped_and_ipv4_rows_are_one_source():
    rows = _rows([("192.0.2.9", 4, 80), ("192.0.2.9", 4, 81),
                  ("::ffff:192.0.2.9", 6, 82), ("::ffff:192.0.2.9", 6, 83)])
    [scan] = ScanDetector(ports=3).update(rows, now=0.0)
    assert (scan.remote, scan.family, scan.ports) == ("192.0.2.9", 4, (80, 81, 82, 83))


def test_ipv6_hash_collision_keeps_sources_apart(monkeypatch):
    monkeypatch.setattr(scans, "_source_codes",
                        lambda high, low, scope: np.full(len(high), 1 << 47, dtype=np.uint64))
    rows = _rows([("2001:db8::1", 6, port) for port in (1, 3, 5)]
                 + [("2001:db8::2", 6, port) for port in (2, 4, 6, 8)])
    found = ScanDetector(ports=3).update(rows, now=0.0)
    assert [(scan.remote, scan.ports) for scan in found] == [("2001:db8::2", (2, 4, 6, 8))]


@pytest.mark.parametrize("codes", ["hashed", "all colliding"])
def test_across_namespaces_a_source_is_its_address_but_loopback_is_each_namespaces(
        monkeypatch, codes):
    """Rows of several namespaces (--all-netns): one source probing several pods is one
    scan; 127.0.0.1 or ::1 of two namespaces are two sources (each has a loopback of its
    own), and one namespace's loopback is one source in both families. The same when
    every source's code collides (the exact sort keeps namespaces apart too)."""
    if codes == "all colliding":
        monkeypatch.setattr(scans, "_source_codes",
                            lambda high, low, scope: np.full(len(high), 1 << 47, dtype=np.uint64))
    detector = ScanDetector(ports=3)
    rows = _rows([("192.0.2.9", 4, 80, 11), ("192.0.2.9", 4, 81, 12),
                  ("192.0.2.9", 4, 82, 13), ("::ffff:192.0.2.9", 6, 83, 11)]
                 + [("127.0.0.1", 4, port, 11) for port in (1, 2)]
                 + [("127.0.0.1", 4, port, 12) for port in (3, 4)]
                 + [("::1", 6, port, 11) for port in (1, 2, 3)]
                 + [("::1", 6, port, 12) for port in (4, 5)]
                 + [("::ffff:127.0.0.2", 6, port, 13) for port in (1, 2)]
                 + [("127.0.0.2", 4, port, 13) for port in (3, 4)])
    found = detector.update(rows, now=0.0)
    assert sorted((scan.remote, scan.ports) for scan in found) == [
        ("127.0.0.2", (1, 2, 3, 4)), ("192.0.2.9", (80, 81, 82, 83))]
    more = _rows([("127.0.0.1", 4, port, 12) for port in (5, 6)] + [("::1", 6, 9, 11)])
    assert sorted((scan.remote, scan.ports) for scan in detector.update(more, now=1.0)) == [
        ("127.0.0.1", (3, 4, 5, 6)), ("::1", (1, 2, 3, 9))]


def test_memory_bound_drops_oldest_entries_first():
    detector = ScanDetector(ports=3, window=60.0, max_entries=1000)
    for step in range(5):
        sources = [(f"10.{step}.{i // 250}.{i % 250}", 4, 22) for i in range(400)]
        detector.update(_rows(sources), now=float(step))
    assert len(detector) == 1000 and detector.evicted == 1000
    rows = _rows([("192.0.2.1", 4, port) for port in range(1, 6)])
    assert [scan.ports for scan in detector.update(rows, now=5.0)] == [(1, 2, 3, 4, 5)]


def test_event_lines_follow_the_contract():
    when = datetime(2026, 11, 28, 10, 0, 5, tzinfo=timezone.utc)
    scan = scans.PortScan("192.0.2.56", "10.0.0.5", 4, (80, 81, 82, 83), 60.0)
    assert alerts.scan_text_lines([scan], when) == [
        "2026-11-28 10:00:05+00:00: Port scan detected: 192.0.2.56 -> 10.0.0.5 "
        "on ports 80,81,82,83"]
    assert json.loads(alerts.scan_json_lines([scan], when)[0]) == {
        "time": "2026-11-28T10:00:05+00:00", "event": "port_scan", "family": 4,
        "local": "10.0.0.5", "remote": "192.0.2.56", "ports": [80, 81, 82, 83],
        "window": 60.0}
    block = firewall.Block("192.0.2.56", 4, datetime(2026, 11, 28, 11, 0, 5, tzinfo=timezone.utc))
    assert alerts.block_text_lines([block], when) == [
        "2026-11-28 10:00:05+00:00: Blocked 192.0.2.56 until 2026-11-28 11:00:05+00:00"]
    assert json.loads(alerts.block_json_lines([block], when)[0]) == {
        "time": "2026-11-28T10:00:05+00:00", "event": "block", "family": 4,
        "remote": "192.0.2.56", "until": "2026-11-28T11:00:05+00:00"}


def _rows(connections) -> np.ndarray:
    """Rows for (remote, family, local port[, netns]) tuples, local address 10.0.0.5 or
    2001:db8::5."""
    rows = np.zeros(len(connections), dtype=CONNECTION_DTYPE)
    for row, (remote, family, port, *netns) in zip(rows, connections):
        kind = socket.AF_INET if family == 4 else socket.AF_INET6
        packed = socket.inet_pton(kind, remote)
        row["remote_addr"][:len(packed)] = np.frombuffer(packed, np.uint8)
        local = socket.inet_pton(kind, "10.0.0.5" if family == 4 else "2001:db8::5")
        row["local_addr"][:len(local)] = np.frombuffer(local, np.uint8)
        row["family"], row["local_port"], row["state"] = family, port, 1
        row["netns"] = netns[0] if netns else 0
    return rows
