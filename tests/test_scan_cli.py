"""The watcher's port-scan events and the new options' start errors, on the host's loopback."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys

import pytest

from tcpfast.cli import DEFAULTS
from tests.namespaces import add_namespace, peer
from tests.watcher_process import WatcherProcess

SCANNERS = ("127.9.2.1", "127.9.2.2")


def test_watcher_reports_each_scan_once_whatever_state_prints():
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(5):
            server = stack.enter_context(socket.socket())
            server.bind(("127.0.0.1", 0))
            server.listen(16)
            ports.append(server.getsockname()[1])
        # --state listen: the scanners' connections are not printed, but detected;
        # --scan-local: the scanners are on loopback, left out by default.
        watcher = WatcherProcess("--json", "--interval", "0.2", "--state", "listen",
                                 "--scan-local")
        try:
            def listed():
                return {event["local_port"] for event in watcher.events()
                        if event["event"] == "new"}
            watcher.wait_until(lambda: set(ports) <= listed())     # the first poll
            def scans():
                return [event for event in watcher.events()
                        if event["event"] == "port_scan" and event["remote"] in SCANNERS]

            for count, source in enumerate(SCANNERS, 1):
                for port in ports:
                    client = stack.enter_context(socket.socket())
                    client.bind((source, 0))
                    client.connect(("127.0.0.1", port))
                watcher.wait_until(lambda count=count: len(scans()) >= count)
        finally:
            watcher.stop()
    assert [(scan["remote"], scan["local"], scan["ports"]) for scan in scans()] == [
        (source, "127.0.0.1", sorted(ports)) for source in SCANNERS]
    assert not any(event["event"] == "new" and event["state"] != "LISTEN"
                   for event in watcher.events())


def tcpfast(*args: str) -> subprocess.CompletedProcess:
    """A watcher that should fail at start (one accepted by mistake would run on)."""
    return subprocess.run([sys.executable, "-m", "tcpfast", *args],
                          capture_output=True, text=True, timeout=20)


def test_metrics_port_in_use_fails_at_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = tcpfast("--metrics", str(port))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"tcpfast: --metrics: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_bad_values_of_the_new_options_are_usage_errors():
    for args, message in [
        (["--metrics", "127.0.0.1:http"], "expected [ADDR:]PORT"),
        (["--scan-ports", "-1"], "must be a whole number from 0 to 65534, not '-1'"),
        (["--scan-ports", "65535"], "must be a whole number from 0 to 65534, not '65535'"),
        (["--scan-ports", "\u00b2"], "must be a whole number from 0 to 65534, not '\u00b2'"),
        (["--metrics", "\u00b2"], "expected [ADDR:]PORT"),
        # nft takes a timeout below 2**64 ns: this one was accepted, then every block failed.
        (["--block", "--block-for", "1e11"],
         "must be from 0.001 to 18446744073.708 seconds, not '1e11'"),
        (["--block", "--block-for", "0.0001"],
         "must be from 0.001 to 18446744073.708 seconds, not '0.0001'"),
        (["--scan-window", "0"], "must be a positive number"),
        (["--allow", "10.0.0.0/33"], "not an address or CIDR network: '10.0.0.0/33'"),
        (["--block", "--scan-ports", "0"], "--block needs port-scan detection"),
    ]:
        result = tcpfast(*args)
        assert result.returncode == 2 and message in result.stderr.splitlines()[-1], args
        assert "Traceback" not in result.stderr


def _no_scan_until_a_later_poll(watcher: WatcherProcess, inbound, later) -> list[dict]:
    """Wait for the scanner's connections to be printed (``inbound(events)``), make one
    more with ``later()`` and wait for it to be printed (the predicate it returns): a
    scan line would have come in between. The scans."""
    watcher.wait_until(lambda: inbound(watcher.events()))
    printed = later()
    watcher.wait_until(lambda: printed(watcher.events()))
    return [event for event in watcher.events() if event["event"] == "port_scan"]


def test_loopback_clients_of_local_services_are_not_scanners_by_default():
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(5):
            server = stack.enter_context(socket.socket())
            server.bind(("127.0.0.1", 0))
            server.listen(16)
            servers.append(server)
        ports = [server.getsockname()[1] for server in servers]
        watcher = WatcherProcess("--json", "--interval", "0.2")
        try:
            watcher.wait_ready()                                       # the first poll
            for port in ports:
                client = stack.enter_context(socket.socket())
                client.bind(("127.9.2.1", 0))
                client.connect(("127.0.0.1", port))

            def later():
                client = stack.enter_context(socket.create_connection(("127.0.0.1", ports[0])))
                marker = client.getsockname()[1]
                return lambda events: any(e["local_port"] == marker for e in events)

            scans = _no_scan_until_a_later_poll(
                watcher, lambda events: {e["local_port"] for e in events
                                         if e["remote"] == "127.9.2.1"} >= set(ports), later)
        finally:
            watcher.stop()
    assert scans == [] and watcher.err == []


NAMESPACE_ADDRESS = "192.0.2.1"


@pytest.fixture
def own_address_namespace():
    """A namespace whose own address is 192.0.2.1 (on a veth end), listeners there."""
    name = f"tf14-s{os.getpid() % 100000}"
    add_namespace(name)
    try:
        for command in (["link", "set", "lo", "up"],
                        ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                        ["addr", "add", f"{NAMESPACE_ADDRESS}/24", "dev", "v0"],
                        ["link", "set", "v0", "up"], ["link", "set", "v1", "up"]):
            subprocess.run(["ip", "-n", name, *command], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a network namespace needs root")
@pytest.mark.skipif(not shutil.which("ip"), reason="needs the ip command (iproute2)")
@pytest.mark.parametrize("where", ["inside", "proc-root"])
@pytest.mark.parametrize("scan_local", [False, True], ids=["default", "scan-local"])
def test_clients_from_the_watched_namespaces_own_address(own_address_namespace, where,
                                                         scan_local):
    """A client on the namespace's own address (not loopback) to 5 of its services: no
    scan by default, one with --scan-local; watched from inside the namespace, and from
    outside through --proc-root /proc/PID (its addresses are then not the watcher's)."""
    name, ports = own_address_namespace, ["8001", "8002", "8003", "8004", "8005"]
    with peer(name, "listen", NAMESPACE_ADDRESS, *ports) as listeners:
        assert listeners.stdout.readline().strip() == "ready"
        options = ["--json", "--interval", "0.2", *(["--scan-local"] if scan_local else [])]
        if where == "inside":
            watcher = WatcherProcess(*options, prefix=("ip", "netns", "exec", name))
        else:
            watcher = WatcherProcess(*options, "--proc-root", f"/proc/{listeners.pid}")
        try:
            watcher.wait_ready()                                       # the first poll
            with peer(name, "client") as client:
                def connect(port: str) -> None:
                    client.stdin.write(f"{NAMESPACE_ADDRESS} {NAMESPACE_ADDRESS} {port} 5\n")
                    client.stdin.flush()
                    assert client.stdout.readline().strip() == "ok"

                for port in ports:
                    connect(port)
                if scan_local:
                    # Reported when it crosses the threshold, again as it goes on to more
                    # ports: a read that ran beside the connects may list a server's row
                    # a poll after its client's (a read is not atomic), so the first
                    # report may lack a port, and the next one has it.
                    def scans_so_far() -> list[dict]:
                        return [e for e in watcher.events() if e["event"] == "port_scan"]
                    watcher.wait_until(lambda: any(len(e["ports"]) == len(ports)
                                                   for e in scans_so_far()))
                    scans = scans_so_far()
                else:
                    def inbound_to(port: int, events) -> int:
                        return sum(e["local_port"] == port and e["direction"] == "in"
                                   for e in events)

                    def later():
                        connect(ports[0])                     # a port it had: no scan either
                        return lambda events: inbound_to(int(ports[0]), events) == 2

                    scans = _no_scan_until_a_later_poll(
                        watcher, lambda events: all(inbound_to(int(port), events) == 1
                                                    for port in ports), later)
        finally:
            watcher.stop()
    if scan_local:
        every_port = [int(port) for port in ports]
        assert {(e["remote"], e["local"]) for e in scans} == {(NAMESPACE_ADDRESS,
                                                               NAMESPACE_ADDRESS)}
        assert scans[-1]["ports"] == every_port
        assert all(DEFAULTS["scan_ports"] < len(e["ports"]) and set(e["ports"]) <= set(every_port)
                   for e in scans)
    else:
        assert scans == []
    assert watcher.err == []
