"""Events on real loopback sockets: which way each goes, and which closed between polls.

The tests run in a private network namespace (conftest), so the only sockets
are the tests' own.
"""

import multiprocessing
import socket
import struct
import time

import numpy as np
import pytest
from test_live import NO_IPV6
from watcher_process import WatcherProcess

from tcpfast import DIRECTION_NAMES, directions, snapshot
from tcpfast.enrich.direction import ephemeral_ports
from tcpfast.outputs.report import address_text
from tcpfast.schema import CONNECTION_DTYPE, STATE_CODES
from tcpfast.sources import Snapshot
from tcpfast.watch import Watcher


def endpoint_of(row) -> tuple[str, int]:
    return address_text(int(row["family"]), bytes(row["local_addr"])), int(row["local_port"])


def direction_by_endpoint(rows: np.ndarray) -> dict[tuple, str]:
    """(local address, local port, remote port) -> direction name, for every row."""
    names = [DIRECTION_NAMES[code] for code in directions(rows, ephemeral=ephemeral_ports())]
    return {(*endpoint_of(row), int(row["remote_port"])): name for row, name in zip(rows, names)}


def listening(host: str, port: int = 0, af: int = socket.AF_INET, v6only: bool = True):
    server = socket.socket(af, socket.SOCK_STREAM)
    if af == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(16)
    return server


class Sockets:
    """Every socket a test opens, closed at the end."""

    def __init__(self) -> None:
        self.all: list[socket.socket] = []

    def add(self, *socks: socket.socket) -> socket.socket:
        self.all.extend(socks)
        return socks[0]

    def connect(self, server: socket.socket, to: tuple, af: int = socket.AF_INET,
                bind: tuple | None = None) -> tuple[socket.socket, socket.socket]:
        client = self.add(socket.socket(af, socket.SOCK_STREAM))
        if bind:
            client.bind(bind)
        client.connect(to)
        accepted = self.add(server.accept()[0])
        return client, accepted

    def close(self) -> None:
        for sock in self.all:
            sock.close()


@pytest.fixture
def sockets():
    opened = Sockets()
    yield opened
    opened.close()


def peer_key(sock: socket.socket) -> tuple:
    local, remote = sock.getsockname(), sock.getpeername()
    return local[0], local[1], remote[1]


def test_direction_of_ipv4_sockets(sockets):
    wildcard = sockets.add(listening("0.0.0.0"))
    specific = sockets.add(listening("127.0.0.2"))
    wild_client, wild_accepted = sockets.connect(wildcard, ("127.0.0.1", wildcard.getsockname()[1]))
    spec_client, spec_accepted = sockets.connect(specific, specific.getsockname())
    # A client whose ephemeral port is also a listening port on another address.
    shared = sockets.add(socket.socket())
    shared.bind(("127.0.0.1", 0))
    other_listener = sockets.add(listening("127.0.0.4", shared.getsockname()[1]))
    shared.connect(specific.getsockname())
    shared_accepted = sockets.add(specific.accept()[0])
    found = direction_by_endpoint(snapshot())
    expected = {
        ("0.0.0.0", wildcard.getsockname()[1], 0): "listen",
        ("127.0.0.2", specific.getsockname()[1], 0): "listen",
        ("127.0.0.4", other_listener.getsockname()[1], 0): "listen",
        peer_key(wild_client): "out", peer_key(wild_accepted): "in",
        peer_key(spec_client): "out", peer_key(spec_accepted): "in",
        peer_key(shared): "out", peer_key(shared_accepted): "in",
    }
    assert {key: found.get(key) for key in expected} == expected


@NO_IPV6
def test_direction_of_ipv6_and_ipv4_mapped_sockets(sockets):
    specific = sockets.add(listening("::1", af=socket.AF_INET6))
    dual = sockets.add(listening("::", af=socket.AF_INET6, v6only=False))
    client6, accepted6 = sockets.connect(specific, specific.getsockname()[:2], socket.AF_INET6)
    # An IPv4 client of the dual-stack listener: its accepted socket is IPv6, ::ffff:127.0.0.1.
    client4, mapped = sockets.connect(dual, ("127.0.0.1", dual.getsockname()[1]))
    found = direction_by_endpoint(snapshot())
    expected = {
        ("::1", specific.getsockname()[1], 0): "listen",
        ("::", dual.getsockname()[1], 0): "listen",
        peer_key(client6): "out", peer_key(accepted6): "in",
        peer_key(client4): "out", peer_key(mapped): "in",
    }
    assert mapped.getsockname()[0] == "::ffff:127.0.0.1"
    assert {key: found.get(key) for key in expected} == expected


def test_an_inbound_connection_whose_listener_closed_is_unknown(sockets):
    """The documented corner case: no listener left, a port outside the ephemeral range."""
    low, _ = ephemeral_ports()
    for port in range(low - 2000, low - 1000):
        try:
            server = listening("127.0.0.1", port)
            break
        except OSError:
            continue
    client, accepted = sockets.connect(server, server.getsockname())
    server.close()
    found = direction_by_endpoint(snapshot())
    assert found[peer_key(accepted)] == "unknown"
    assert found[peer_key(client)] == "out"


def test_direction_by_state_alone():
    rows = np.zeros(3, dtype=CONNECTION_DTYPE)
    rows["family"], rows["local_port"], rows["remote_port"] = 4, 80, 5000
    rows["state"] = [STATE_CODES["SYN_RECV"], STATE_CODES["SYN_SENT"], STATE_CODES["LISTEN"]]
    assert [DIRECTION_NAMES[c] for c in directions(rows)] == ["in", "out", "listen"]


# -- closed connections ---------------------------------------------------------------

def close_with_reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def hold_connections_then_exit(port: int, count: int, ready, go) -> None:
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    ready.send([s.getsockname()[1] for s in held])
    go.recv()                                  # exits holding them: the kernel closes them


class Polls:
    """A Watcher fed real snapshots; the events of our server's port only."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.watcher = Watcher()

    def __call__(self):
        result = self.watcher.update(Snapshot(snapshot()), time.time())
        new, closed = result.new.rows, result.closed.rows
        return (new[self.ours(new)], closed[self.ours(closed)],
                result.closed.duration[self.ours(closed)])

    def ours(self, rows: np.ndarray) -> np.ndarray:
        return (rows["local_port"] == self.port) | (rows["remote_port"] == self.port)


def wait_for_the_kernel(gone: set[tuple[int, int]],
                        states: dict[tuple[int, int], str] | None = None) -> None:
    """Until the sockets at the ``gone`` ends (local port, remote port) are closed (not
    listed, or listed without an inode) and those of ``states`` are in those states."""
    wanted = {key: STATE_CODES[name] for key, name in (states or {}).items()}
    deadline = time.monotonic() + 30
    while True:
        rows = snapshot()
        listed = {(int(r["local_port"]), int(r["remote_port"])): r for r in rows}
        open_ends = {key for key, row in listed.items() if row["inode"]}
        if not gone & open_ends and all(key in listed and int(listed[key]["state"]) == code
                                        for key, code in wanted.items()):
            return
        assert time.monotonic() < deadline, f"the kernel did not close {gone & open_ends}"
        time.sleep(0.01)


def ends(rows: np.ndarray) -> set[tuple[int, int]]:
    return {(int(r["local_port"]), int(r["remote_port"])) for r in rows}


def pair_ends(*socks: socket.socket) -> set[tuple[int, int]]:
    return {(s.getsockname()[1], s.getpeername()[1]) for s in socks}


def test_closed_connections_are_reported_once_with_durations(sockets):
    server = sockets.add(listening("127.0.0.1"))
    port = server.getsockname()[1]
    polls = Polls(port)
    kept = sockets.connect(server, server.getsockname())           # open before the start
    polls()
    fin = sockets.connect(server, server.getsockname())
    reset = sockets.connect(server, server.getsockname())
    stays = sockets.connect(server, server.getsockname())
    ready, ready_child = multiprocessing.Pipe()
    go, go_child = multiprocessing.Pipe()
    child = multiprocessing.Process(target=hold_connections_then_exit,
                                    args=(port, 3, ready_child, go_child))
    child.start()
    child_ports = ready.recv()
    exiting = [sockets.add(server.accept()[0]) for _ in child_ports]
    new, closed, _ = polls()
    assert ends(new) == pair_ends(*fin, *reset, *stays, *exiting) | {
        (p, port) for p in child_ports}
    assert len(closed) == 0
    expected = (pair_ends(fin[0]) | pair_ends(*reset) | {(p, port) for p in child_ports})
    fin[0].close()                            # FIN: the client goes; its peer waits in CLOSE_WAIT
    close_with_reset(reset[0])                # RST: both sides go
    go.send(True)                             # the child exits holding 3 connections
    child.join(timeout=30)
    wait_for_the_kernel(expected, {(port, fin[1].getpeername()[1]): "CLOSE_WAIT"})
    new, closed, durations = polls()
    assert len(new) == 0
    assert ends(closed) == expected
    assert len(closed) == len(expected)                       # each once
    assert (durations > 0).all() and (durations < 60).all()
    new, closed, _ = polls()                                   # no repeats
    assert len(new) == 0 and len(closed) == 0
    states = {(int(r["local_port"]), int(r["remote_port"])): int(r["state"])
              for r in snapshot()}
    assert states[(port, fin[1].getpeername()[1])] == STATE_CODES["CLOSE_WAIT"]   # not closed
    assert pair_ends(*kept, *stays) <= set(states)           # still open, never reported closed


def test_a_connection_open_at_the_start_closes_with_unknown_duration(sockets):
    server = sockets.add(listening("127.0.0.1"))
    polls = Polls(server.getsockname()[1])
    client, accepted = sockets.connect(server, server.getsockname())
    polls()
    ends_of_both = pair_ends(client, accepted)
    close_with_reset(client)                  # both sides go
    wait_for_the_kernel(ends_of_both)
    _, closed, durations = polls()
    assert len(closed) == 2 and np.isnan(durations).all()


def test_the_command_prints_closed_events_and_skips_existing(sockets):
    server = sockets.add(listening("127.0.0.1"))
    port = server.getsockname()[1]
    before = sockets.connect(server, server.getsockname())
    watcher = WatcherProcess("--interval", "0.2", "--json", "--events", "new,closed",
                             "--skip-existing")
    try:
        watcher.wait_ready()                  # the first poll, skipped, holds `before`
        client, accepted = sockets.connect(server, server.getsockname())
        watcher.wait_until(lambda: sum(e["event"] == "new" for e in watcher.events()) >= 2)
        watcher.more_polls()                  # open across whole polls
        opened = pair_ends(client, accepted)
        close_with_reset(client)
        watcher.wait_until(lambda: sum(e["event"] == "closed" for e in watcher.events()) >= 2)
        watcher.more_polls()                  # more polls: no repeats
        watcher.stop()
    finally:
        watcher.kill()
    events = [e for e in watcher.events() if port in (e["local_port"], e["remote_port"])]
    new = [e for e in events if e["event"] == "new"]
    closed = [e for e in events if e["event"] == "closed"]
    assert {(e["local_port"], e["remote_port"]) for e in new} == opened
    assert {e["direction"] for e in new} == {"in", "out"}
    assert {(e["local_port"], e["remote_port"]) for e in closed} == opened
    assert len(closed) == 2 and all(0 < e["duration"] < 60 for e in closed)
    assert all(e["pid"] is None and e["comm"] is None for e in events)
    assert not {(e["local_port"], e["remote_port"]) for e in events} & pair_ends(*before)
    assert watcher.err == []
