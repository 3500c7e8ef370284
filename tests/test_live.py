"""Real loopback sockets, found by snapshot() exactly as the kernel and ss see them."""

import contextlib
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest

from tcpfast import STATE_NAMES, new_connections, snapshot
from tcpfast.outputs.report import address_text


def ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


NO_IPV6 = pytest.mark.skipif(not ipv6_loopback_works(),
                             reason="no IPv6 loopback (::1) in this network namespace")
#: Both loopback families, always collected: without IPv6 the ::1 cases are skipped, visibly.
FAMILIES = [pytest.param(socket.AF_INET, "127.0.0.1", 4, id="127.0.0.1"),
            pytest.param(socket.AF_INET6, "::1", 6, id="::1", marks=NO_IPV6)]


@contextlib.contextmanager
def listener(af: int, host: str):
    with socket.socket(af, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(64)
        yield server


@contextlib.contextmanager
def connections(server: socket.socket, count: int):
    """``count`` connected (client, accepted) pairs, all closed on exit."""
    af, host, port = server.family, *server.getsockname()[:2]
    opened: list[socket.socket] = []
    try:
        pairs = []
        for _ in range(count):
            client = socket.socket(af, socket.SOCK_STREAM)
            opened.append(client)
            client.connect((host, port))
            accepted, _ = server.accept()
            opened.append(accepted)
            pairs.append((client, accepted))
        yield pairs
    finally:
        for sock in opened:
            sock.close()


def endpoint(sock_address) -> tuple[str, int]:
    return sock_address[0], sock_address[1]


def kernel_view(sock: socket.socket, family: int) -> tuple:
    """What /proc must list for this socket: addresses, ports, uid, inode."""
    local, remote = endpoint(sock.getsockname()), endpoint(sock.getpeername())
    return (family, *local, *remote, os.getuid(), os.fstat(sock.fileno()).st_ino)


def rows_view(rows: np.ndarray) -> list[tuple]:
    return [(int(r["family"]), address_text(int(r["family"]), bytes(r["local_addr"])),
             int(r["local_port"]), address_text(int(r["family"]), bytes(r["remote_addr"])),
             int(r["remote_port"]), int(r["uid"]), int(r["inode"])) for r in rows]


def ours(rows: np.ndarray, port: int, family: int) -> np.ndarray:
    """The rows of the test's own server: its family and port (the other family
    may have a socket on the same port number)."""
    return rows[(rows["family"] == family)
                & ((rows["local_port"] == port) | (rows["remote_port"] == port))]


@pytest.mark.parametrize("af,host,family", FAMILIES)
def test_snapshot_finds_each_socket_exactly(af, host, family):
    with listener(af, host) as server, connections(server, 5) as pairs:
        port = server.getsockname()[1]
        rows = ours(snapshot(), port, family)
        found = rows_view(rows)
        for client, accepted in pairs:
            for sock in (client, accepted):
                assert found.count(kernel_view(sock, family)) == 1
        listening = [r for r in rows if r["state"] == 0x0A]
        assert len(listening) == 1
        assert int(listening[0]["inode"]) == os.fstat(server.fileno()).st_ino
        established = rows[rows["state"] == 0x01]
        assert len(established) == 10 and len(rows) == 11


@pytest.mark.parametrize("af,host,family", FAMILIES)
def test_second_poll_reports_exactly_the_new_connections(af, host, family):
    with listener(af, host) as server, connections(server, 4):
        port = server.getsockname()[1]
        first = snapshot()
        with connections(server, 3) as added:
            second = snapshot()
            new = ours(new_connections(first, second), port, family)
            expected = [kernel_view(s, family) for pair in added for s in pair]
            assert sorted(rows_view(new)) == sorted(expected)
            assert len(ours(new_connections(second, snapshot()), port, family)) == 0


def ss_view(port: int) -> set[tuple[str, str, str]]:
    """(state, local, remote) of the sockets ss lists on this port."""
    out = subprocess.run(["ss", "-tanH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        state, _, _, local, remote = line.split()[:5]
        if local.endswith(f":{port}") or remote.endswith(f":{port}"):
            found.add((state, local, remote))
    return found


SS_STATES = {"ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECV": "SYN-RECV",
             "FIN_WAIT1": "FIN-WAIT-1", "FIN_WAIT2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT",
             "CLOSE": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK",
             "LISTEN": "LISTEN", "CLOSING": "CLOSING"}


def ss_text(family: int, address: str, port: int, state: str) -> str:
    shown = f"[{address}]" if family == 6 else address
    return f"{shown}:{'*' if state == 'LISTEN' and port == 0 else port}"


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2 ss is not installed")
@pytest.mark.parametrize("af,host,family", FAMILIES)
def test_snapshot_equals_what_ss_lists(af, host, family):
    with listener(af, host) as server, connections(server, 6):
        port = server.getsockname()[1]
        rows = ours(snapshot(), port, family)
        ss_rows = ss_view(port)
    ours_as_ss = set()
    for (fam, local, lport, remote, rport, _, _), row in zip(rows_view(rows), rows):
        state = STATE_NAMES[int(row["state"])]
        ours_as_ss.add((SS_STATES[state], ss_text(fam, local, lport, state),
                        ss_text(fam, remote, rport, state)))
    assert ours_as_ss == ss_rows and len(ss_rows) == 13
