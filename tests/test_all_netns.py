"""--all-netns: every network namespace of the host read as one source, on real namespaces
(``ip netns add``, ``unshare -n``, a podman container) the tests make and remove."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
from held import PYTHON, held, netns_inode, run_as_nobody
from namespaces import SESSION_TAG, add_namespace, unshare_or_skip
from test_faults import run_cli_without_root

from tcpfast.sources.base import Snapshot
from tcpfast.sources.namespaces import AllNamespaces, may_enter_namespaces
from tcpfast.watch import Watcher

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and ip(8): ip netns add, unshare -n")
_names = itertools.count()
PORT, CLIENT_PORT = 9000, 45000

# In its namespace: loopback up, a listener on 127.0.0.1:PORT and a client from
# 127.0.0.1:CLIENT_PORT connected to it: the same 4-tuple in every namespace.
PAIR = f"""
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", {PORT}))
server.listen()
client = socket.socket()
client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
client.bind(("127.0.0.1", {CLIENT_PORT}))
client.connect(("127.0.0.1", {PORT}))
accepted, _ = server.accept()
print("ready", flush=True)
sys.stdin.read()
"""


class Pair:
    """A process holding a listener and one connection to it, in a namespace of its own."""

    def __init__(self, *prefix: str) -> None:
        self.process = subprocess.Popen([*prefix, PYTHON, "-c", PAIR], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.end()
            raise RuntimeError(f"{prefix} did not start a pair")
        self.pid = self.process.pid          # ip netns exec and unshare exec the command
        self.netns = netns_inode(self.pid)

    def end(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def pair_in(kind: str) -> Iterator[Pair]:
    """A pair in a namespace made by ``ip netns add`` (removed after) or ``unshare -n``."""
    name = None
    if kind == "ip netns":
        name = f"tf16a-{SESSION_TAG}-{next(_names)}"
        add_namespace(name)
        prefix: tuple[str, ...] = ("ip", "netns", "exec", name)
    else:
        prefix = ("unshare", "--net")
        unshare_or_skip("--net")
    pair = Pair(*prefix)
    try:
        yield pair
    finally:
        pair.end()
        if name is not None:
            subprocess.run(["ip", "netns", "del", name], check=False)


def the_pair(snapshot: Snapshot, netns: int) -> set[tuple[int, int, int]]:
    """(local port, remote port, state) of the namespace's rows."""
    rows = snapshot.rows[snapshot.rows["netns"] == netns]
    return set(zip(rows["local_port"].tolist(), rows["remote_port"].tolist(),
                   rows["state"].tolist()))


EXPECTED = {(PORT, 0, 0x0A), (CLIENT_PORT, PORT, 0x01), (PORT, CLIENT_PORT, 0x01)}


@needs_root
@pytest.mark.parametrize("netlink", [True, False], ids=["netlink", "proc"])
def test_every_namespace_once_and_the_same_numbers_twice(netlink):
    said: list[str] = []
    with pair_in("ip netns") as first, pair_in("unshare") as second:
        source = AllNamespaces(warn=said.append, netlink=netlink)
        snapshot = source.read()
        assert snapshot.complete            # (other processes' namespaces may come and go)
        for pair in (first, second):
            assert the_pair(snapshot, pair.netns) == EXPECTED       # named by net:[N]
            assert source.namespaces[pair.netns].pid == pair.pid
        assert first.netns != second.netns
        own = netns_inode(os.getpid())
        assert own in source.namespaces and snapshot.namespaces >= 3
        source.close()
    assert said == ([] if netlink else [said[0]]) and (netlink or "/proc tables" in said[0])


@needs_root
@pytest.mark.parametrize("kind", ["ip netns", "unshare"])
def test_as_nobody_each_namespace_is_read_through_its_tables(kind):
    with pair_in(kind) as pair:
        table = os.stat(f"/proc/{pair.pid}/net/tcp").st_ino

        def read():
            said: list[str] = []
            source = AllNamespaces(warn=said.append)
            snapshot = source.read()
            return [sorted(the_pair(snapshot, table)), source.kind, said,
                    sorted(the_pair(snapshot, pair.netns))]

        pairs, kind, said, by_inode = run_as_nobody(read)
    assert {tuple(row) for row in pairs} == EXPECTED       # named by its table's inode
    assert by_inode == [] and kind == "proc" and len(said) == 1


@needs_root
@pytest.mark.parametrize("netlink", [True, False], ids=["netlink", "proc"])
def test_a_namespace_that_comes_is_new_and_one_that_goes_is_closed(netlink):
    source = AllNamespaces(warn=lambda message: None, netlink=netlink)
    watcher = Watcher()
    watcher.update(source.read(), time.time())
    with pair_in("unshare") as pair:
        poll = watcher.update(source.read(), time.time())
        assert the_pair(Snapshot(poll.new.rows), pair.netns) == EXPECTED
        netns = pair.netns
    for _ in range(50):                          # its process is gone: so is the namespace
        poll = watcher.update(source.read(), time.time())
        closed = poll.closed.rows[poll.closed.rows["netns"] == netns]   # (others come and go)
        if len(closed):
            break
    assert sorted(closed["local_port"].tolist()) == sorted([PORT, PORT, CLIENT_PORT])
    again = watcher.update(source.read(), time.time())
    assert not (again.closed.rows["netns"] == netns).any()
    assert not (again.new.rows["netns"] == netns).any()
    source.close()


def of_namespace(rows: np.ndarray, netns: int) -> list[tuple[int, int, int]]:
    """(local port, state, inode) of the namespace's rows."""
    mine = rows[rows["netns"] == netns]
    return sorted(zip(mine["local_port"].tolist(), mine["state"].tolist(), mine["inode"].tolist()))


@needs_root
@pytest.mark.parametrize("netlink", [True, False], ids=["netlink", "proc"])
def test_the_same_four_tuple_in_two_namespaces_is_two_connections(netlink):
    """One pair lives on; the other, in a namespace another process keeps, opens and ends
    between two polls: the first's three are new, the second's TIME_WAIT (inode 0, the
    same 4-tuple as one of the first's) is new and closed, in its own namespace, and
    nothing of the first is closed; then the first ends: only its own three close."""
    source = AllNamespaces(warn=lambda message: None, netlink=netlink)
    watcher = Watcher()
    watcher.update(source.read(), time.time())
    with pair_in("unshare") as lasting, pair_in("ip netns") as brief, \
            held("nsenter", "-t", str(brief.pid), "-n"):
        brief.end()
        poll = watcher.update(source.read(), time.time())
        assert the_pair(Snapshot(poll.new.rows), lasting.netns) == EXPECTED
        assert of_namespace(poll.new.rows, brief.netns) == []
        assert of_namespace(poll.new_and_closed.rows, brief.netns) == [(CLIENT_PORT, 0x06, 0)]
        assert of_namespace(poll.closed.rows, lasting.netns) == []
        assert of_namespace(poll.new_and_closed.rows, lasting.netns) == []
        inodes = {inode for _, _, inode in of_namespace(poll.new.rows, lasting.netns)}
    for _ in range(50):                              # its process ended: its sockets close
        poll = watcher.update(source.read(), time.time())
        if of_namespace(poll.closed.rows, lasting.netns):
            break
    closed = of_namespace(poll.closed.rows, lasting.netns)
    assert sorted(port for port, _, _ in closed) == sorted([PORT, PORT, CLIENT_PORT])
    assert {inode for _, _, inode in closed} == inodes
    source.close()


@needs_root
def test_through_another_process_when_the_one_read_through_exits():
    """/proc tables are a process's: when the process a namespace was read through exits,
    the next read goes through another of its processes (not the gone one's again, which
    would leave the namespace unread for a poll)."""
    source = AllNamespaces(warn=lambda message: None, netlink=False)
    with pair_in("ip netns") as pair:
        assert the_pair(source.read(), pair.netns) == EXPECTED
        assert source.namespaces[pair.netns].pid == pair.pid
        with held("nsenter", "-t", str(pair.pid), "-n") as keeper:
            assert the_pair(source.read(), pair.netns) == EXPECTED
            pair.end()
            snapshot = source.read()
            assert source.namespaces[pair.netns].pid == keeper.pid
            assert of_namespace(snapshot.rows, pair.netns) == [(CLIENT_PORT, 0x06, 0)]
    source.close()


def test_may_enter_namespaces_reads_the_capability(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000200000\n")
    assert may_enter_namespaces(str(status))
    status.write_text("Name:\tx\nCapEff:\t00000000001fffff\n")
    assert not may_enter_namespaces(str(status))
    assert not may_enter_namespaces(str(tmp_path / "missing"))


@needs_root
def test_unprivileged_cli_says_once_how_it_reads():
    with pair_in("ip netns") as pair:
        result = run_cli_without_root("--all-netns", "--once", "--state", "established")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    how = [line for line in lines if "/proc tables" in line]
    assert len(how) == 1 and how[0].startswith("tcpfast: "), result.stderr
    # Beside it only what the host's own churn may cause: a namespace (another test's,
    # another process's) that went between being found and being read.
    assert all("until a poll reads them" in line for line in lines if line not in how), lines
    assert f"127.0.0.1:{CLIENT_PORT} -> 127.0.0.1:{PORT}" in result.stdout, pair.netns
