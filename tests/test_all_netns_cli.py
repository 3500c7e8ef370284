"""``python -m tcpfast --all-netns`` end to end, on a real podman container: what a process
in the container opens is reported once, with the container's namespace and the id
``podman inspect`` gives; as root (netlink in each namespace) and as user nobody (each
namespace's /proc tables). A watcher sees a container started after it (a namespace that
did not exist at its start) and reports its connections closed when the container goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from held import netns_inode
from test_containers import Podman, podman  # noqa: F401  (the fixture)
from test_faults import AS_NOBODY, run_cli_without_root
from watcher_process import WatcherProcess

PORT = 9160          # not test_all_netns's: a run of both at once reads every namespace
# Only the pair's connections are printed (the host may hold 10^5 others; the kernel
# filters them out of a dump when no port-scan detection needs them all).
ONLY_THE_PAIR = ("--port", str(PORT))

# Run in the container (podman exec, so in its cgroup): a listener on 127.0.0.1:PORT and
# a client connected to it, over the container's own loopback.
PAIR = f"""
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", {PORT}))
server.listen()
client = socket.create_connection(("127.0.0.1", {PORT}))
accepted, _ = server.accept()
print("ready", client.getsockname()[1], flush=True)
sys.stdin.read()
"""


class Container:
    """A container with the pair running in it: ``id`` (podman inspect's), ``pid`` (its
    first process), ``client_port``, the three (local port, remote port, state) rows."""

    def __init__(self, engine: Podman) -> None:
        self.engine = engine
        try:
            self.id = engine.run("--network", "none")
        except RuntimeError as error:
            pytest.skip(f"podman cannot run a container here: {error}")
        self.pid = int(engine.inspect(self.id, "{{.State.Pid}}"))
        self.netns = netns_inode(self.pid)
        self.table = os.stat(f"/proc/{self.pid}/net/tcp").st_ino   # nobody's name for it
        self.pair = subprocess.Popen([*engine.base, "exec", "-i", self.id, "/usr/bin/python3",
                                      "-c", PAIR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=engine.env)
        assert self.pair.stdout is not None
        said = self.pair.stdout.readline().split()
        if len(said) != 2 or said[0] != "ready":
            self.remove()
            raise RuntimeError(f"the pair did not start in the container (said {said!r})")
        self.client_port = int(said[1])
        self.rows = sorted([(PORT, 0, "LISTEN"), (PORT, self.client_port, "ESTABLISHED"),
                            (self.client_port, PORT, "ESTABLISHED")])

    def remove(self) -> None:
        """The container removed (its processes killed, its namespace gone)."""
        self.engine("rm", "--force", "--time", "0", self.id)
        if self.pair.stdin is not None:
            self.pair.stdin.close()
        self.pair.wait(timeout=30)


def of_namespace(events: list[dict], netns: int, kind: str = "new") -> list[dict]:
    return [event for event in events if event["netns"] == netns and event["event"] == kind]


def rows_of(events: list[dict]) -> list[tuple[int, int, str]]:
    return sorted((event["local_port"], event["remote_port"], event["state"]) for event in events)


def assert_held_by(events: list[dict], container: Container) -> None:
    assert {(event["container_id"], event["pod_uid"], event["pod_namespace"], event["pod_name"])
            for event in events} == {(container.id, None, None, None)}


def assert_says_how_it_reads(said: list[str], user: str) -> None:
    """Nobody is told once that it reads /proc tables; root, nothing. Other lines are
    one-line warnings about what others do on this host (a namespace gone between discovery
    and read, connections too short for a poll): not ours to judge, never a traceback."""
    how = [line for line in said if "/proc tables" in line]
    assert len(how) == (1 if user == "nobody" else 0), said
    assert all(line.startswith("tcpfast: ") for line in said), said


def tcpfast_as_root(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tcpfast", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def container(podman):  # noqa: F811
    made = Container(podman)
    yield made
    made.remove()


PRIVILEGES = {"root": (tcpfast_as_root, "netns"), "nobody": (run_cli_without_root, "table")}


@pytest.mark.parametrize("user", sorted(PRIVILEGES))
def test_once_each_connection_once_with_the_containers_id(container, user):
    run, name = PRIVILEGES[user]
    netns = getattr(container, name)             # root: net:[N]; nobody: its table's inode
    result = run("--all-netns", "--once", "--json", *ONLY_THE_PAIR)
    assert result.returncode == 0, result.stderr
    assert_says_how_it_reads(result.stderr.splitlines(), user)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    mine = of_namespace(events, netns)
    assert rows_of(mine) == container.rows                  # each once
    assert_held_by(mine, container)
    assert not [event for event in events if event["container_id"] == container.id
                and event["netns"] != netns]                # no other namespace is its

    text = run("--all-netns", "--once", *ONLY_THE_PAIR)
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.endswith(
        f" netns={netns} container={container.id[:12]}")]
    assert sorted(line.split(": ", 2)[2].rsplit(" netns=", 1)[0] for line in lines) == sorted([
        f"127.0.0.1:{PORT} -> 0.0.0.0:0", f"127.0.0.1:{PORT} -> 127.0.0.1:{container.client_port}",
        f"127.0.0.1:{container.client_port} -> 127.0.0.1:{PORT}"])


@pytest.mark.parametrize("user", sorted(PRIVILEGES))
def test_a_watcher_sees_a_container_come_and_go(podman, user):  # noqa: F811
    command = (sys.executable, "-c", AS_NOBODY) if user == "nobody" else None
    watcher = WatcherProcess("--all-netns", "--json", "--interval", "0.2", "--events",
                             "new,closed", *ONLY_THE_PAIR, "--scan-ports", "0", command=command)
    try:
        watcher.wait_ready()
        container = Container(podman)            # a namespace made after the first poll
        netns = getattr(container, PRIVILEGES[user][1])
        try:
            watcher.wait_until(lambda: len(of_namespace(watcher.events(), netns)) >= 3)
            watcher.more_polls()
        finally:
            container.remove()
        new = of_namespace(watcher.events(), netns)
        assert rows_of(new) == container.rows
        assert_held_by(new, container)
        watcher.wait_until(lambda: len(of_namespace(watcher.events(), netns, "closed")) >= 3)
        watcher.more_polls()
        closed = of_namespace(watcher.events(), netns, "closed")
        assert rows_of(closed) == container.rows            # each once, the namespace gone
        assert_held_by(closed, container)
        assert rows_of(of_namespace(watcher.events(), netns)) == container.rows
        watcher.stop()
        assert_says_how_it_reads(watcher.err, user)
    finally:
        watcher.kill()
