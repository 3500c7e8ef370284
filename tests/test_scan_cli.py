"""The watcher's port-scan events and the new options' start errors, on the host's loopback."""

import contextlib
import socket
import subprocess
import sys

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
        # --state listen: the scanners' connections are not printed, but detected.
        watcher = WatcherProcess("--json", "--interval", "0.2", "--state", "listen")
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
    return subprocess.run([sys.executable, "-m", "tcpfast", "--once", *args],
                          capture_output=True, text=True, timeout=60)


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
        (["--scan-ports", "-1"], "must be a whole number"),
        (["--scan-window", "0"], "must be a positive number"),
        (["--allow", "10.0.0.0/33"], "not an address or CIDR network: '10.0.0.0/33'"),
        (["--block", "--scan-ports", "0"], "--block needs port-scan detection"),
    ]:
        result = tcpfast(*args)
        assert result.returncode == 2 and message in result.stderr.splitlines()[-1], args
        assert "Traceback" not in result.stderr
