"""What closed connections carried, end to end: ``python -m tcpfast --source netlink
--json --events new,closed`` (and ``--show-bytes`` text) on real loopback connections
of known byte counts, closed by a FIN either way or by a reset; each socket's closing
event must say what the rule of tests/test_close_info.py says its end carried.

Two ways of meeting the watcher: connections a poll listed before they closed (a
``closed`` event pairing the poll's row with the destroy event: the watcher's
duration, the kernel's bytes), and connections opened and closed between polls (a
``new_and_closed`` event from the destroy event alone, or ``closed`` if a poll caught
one while it ran). The suite runs the watcher compiled and under TCPFAST_PURE=1: both
decoders."""

from __future__ import annotations

import re
import socket

import close_sockets
import pytest
from test_close_info import events_or_skip, kernel_counts
from watcher_process import WatcherProcess

from tcpfast.sources import netlink_events

SIZES = close_sockets.SIZES                                      # 0, 1, 64 KiB, 10 MiB
CLOSES = ("client_first", "server_first", "reset_by_client")


def endpoints(ends: close_sockets.Ends) -> dict[str, tuple[int, int]]:
    """(local port, remote port) of each end, as a JSON line names them."""
    client = ends.client.getsockname()[1], ends.client.getpeername()[1]
    return {"client": client, "server": client[::-1]}


def closing_event(watcher: WatcherProcess, ports: tuple[int, int]) -> list[dict]:
    """The closed or new_and_closed events of the end with these ports (a resetting end
    no poll listed has lost its remote port by its destroy event: null)."""
    return [event for event in watcher.events()
            if event["local_port"] == ports[0] and event["remote_port"] in (ports[1], None)
            and event["event"] in ("closed", "new_and_closed")]


def wrong_bytes(event: dict, close: str, side: str, size: int) -> list[str]:
    """What in one end's closing event breaks the rule (empty: nothing)."""
    where = f"{close} {size} {side} ({event['event']})"
    counts = kernel_counts(close, side, size)
    if counts is None:                       # the resetting end: its counters were zeroed
        known = [key for key in ("bytes_sent", "bytes_received", "rtt_ms") if event[key] is not None]
        return [f"{where}: {known} known after a reset"] if known else []
    found = []
    if (event["bytes_sent"], event["bytes_received"]) != counts:
        found.append(f"{where}: sent {event['bytes_sent']}, received {event['bytes_received']},"
                     f" the rule says {counts}")
    if not (event["rtt_ms"] or 0) > 0 or not event["segments_received"]:
        found.append(f"{where}: rtt {event['rtt_ms']} ms, segments {event['segments_received']}")
    return found


@pytest.fixture
def heard():
    """The test's own listener to the destroy events: it tells when an end has gone."""
    events_or_skip().close()
    with netlink_events.DestroyEvents() as events:
        yield close_sockets.Heard(events)


def test_closed_events_say_what_each_end_carried(heard):
    watcher = WatcherProcess("--source", "netlink", "--json", "--events", "new,closed",
                             "--interval", "0.2", "--skip-existing", "--scan-ports", "0")
    try:
        watcher.wait_ready()
        # Listed first: opened and exchanged, reported new, then closed.
        listed = [(close, size, close_sockets.connect(socket.AF_INET, "127.0.0.1"))
                  for close in CLOSES for size in SIZES]
        for _, size, ends in listed:
            close_sockets.exchange(ends, size)
        everything = [(close, size, endpoints(ends), True) for close, size, ends in listed]
        new_ports = {pair for *_, ports, _ in everything for pair in ports.values()}
        watcher.wait_until(lambda: new_ports <= {(event["local_port"], event["remote_port"])
                                                 for event in watcher.events()
                                                 if event["event"] == "new"})
        for close, _, ends in listed:
            with watcher.paused():          # each end's event before a poll finds it gone
                close_sockets.close(ends, close, heard)
        # Between polls: opened, exchanged and closed at once.
        for close in CLOSES:
            for size in SIZES:
                ends = close_sockets.connect(socket.AF_INET, "127.0.0.1")
                close_sockets.exchange(ends, size)
                ports = endpoints(ends)
                with watcher.paused():
                    close_sockets.close(ends, close, heard)
                everything.append((close, size, ports, False))
        def unreported() -> list[str]:
            return [f"{close} {size} {side} {ports[side]}" for close, size, ports, _ in everything
                    for side in ports if not closing_event(watcher, ports[side])]
        try:
            watcher.wait_until(lambda: not unreported())
        except AssertionError as timeout:
            raise AssertionError(f"never reported closed: {unreported()}") from timeout
        watcher.more_polls()
    finally:
        watcher.stop()
    found = []
    for close, size, ports, was_listed in everything:
        for side, pair in ports.items():
            events = closing_event(watcher, pair)
            if len(events) != 1:
                found.append(f"{close} {size} {side}: {len(events)} closing events {events}")
                continue
            if was_listed and (events[0]["event"] != "closed" or events[0]["duration"] is None):
                found.append(f"{close} {size} {side}: listed, then {events[0]}")
            found += wrong_bytes(events[0], close, side, size)
    assert found == [], found
    assert watcher.err == []          # nothing lost, nothing missed: not even a warning


def test_show_bytes_ends_a_closed_text_line_with_what_it_carried(heard):
    watcher = WatcherProcess("--source", "netlink", "--events", "new,closed", "--show-bytes",
                             "--interval", "0.2", "--skip-existing", "--scan-ports", "0")
    try:
        watcher.wait_ready()
        ends = close_sockets.connect(socket.AF_INET, "127.0.0.1")
        close_sockets.exchange(ends, 65_536)
        client, server = endpoints(ends).values()
        watcher.wait_until(lambda: sum("New connection" in line for line in watcher.out) == 2)
        with watcher.paused():
            close_sockets.close(ends, "reset_by_server", heard)
        watcher.wait_until(lambda: sum("Closed connection" in line for line in watcher.out) == 2)
    finally:
        watcher.stop()
    new = [line for line in watcher.out if "New connection" in line]
    assert all(" sent=" not in line for line in new), new                 # closed lines only
    closed = {int(re.search(r"Closed connection: 127\.0\.0\.1:(\d+) ", line).group(1)): line
              for line in watcher.out if "Closed connection" in line}
    assert re.search(r" sent=65537 received=65536 rtt=\d+(\.\d+)?ms$", closed[client[0]]), closed
    assert closed[server[0]].endswith(" sent=* received=* rtt=*"), closed   # reset: zeroed
