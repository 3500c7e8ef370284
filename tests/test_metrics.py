"""--metrics scraped by a real Prometheus server, and the counters checked through its API.

The watched connections live in a network namespace the test creates (so the
count is exact while the rest of the machine is busy); tcpfast reads that
namespace through ``--proc-root /proc/PID`` of a process inside it, and serves
its metrics on the host's loopback, where Prometheus (Debian's package, a temp
config and data dir, a 250 ms scrape interval) scrapes it. Scrapes therefore
never show up among the watched connections.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tcpfast import backend
from tests.namespaces import SESSION_TAG, add_namespace, peer
from tests.watcher_process import WatcherProcess

LISTEN_PORTS = ["8001", "8002", "8003"]
CONNECTIONS = 4

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating a network namespace needs root"),
    pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("ip")),
                       reason="needs the prometheus and ip commands (prometheus, iproute2)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def namespace():
    name = f"tf9-m{SESSION_TAG}"
    add_namespace(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Prometheus:
    """A Prometheus server on loopback scraping one target, with a private data dir."""

    def __init__(self, directory: Path, target: str) -> None:
        config = directory / "prometheus.yml"
        config.write_text(json.dumps({      # JSON is YAML
            "global": {"scrape_interval": "250ms", "evaluation_interval": "250ms"},
            "scrape_configs": [{"job_name": "tcpfast",
                                "static_configs": [{"targets": [target]}]}]}))
        self.address = f"127.0.0.1:{free_port()}"
        with open(directory / "prometheus.log", "w") as log:     # the child keeps its copy
            self.process = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address={self.address}"], stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as response:
                return response.read()
        except OSError:
            assert self.process.poll() is None, "prometheus exited (see its log)"
            return None

    def query(self, expression: str) -> list[dict]:
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
        return json.loads(body)["data"]["result"] if body else []

    def value(self, expression: str) -> float | None:
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def test_prometheus_scrapes_the_new_connection_counter(namespace, tmp_path):
    metrics_address = f"127.0.0.1:{free_port()}"
    with peer(namespace, "listen", "127.0.0.1", *LISTEN_PORTS) as listeners:
        assert listeners.stdout.readline().strip() == "ready"
        watcher = WatcherProcess("--json", "--interval", "0.2", "--proc-root",
                                 f"/proc/{listeners.pid}", "--metrics", metrics_address)
        prometheus = Prometheus(tmp_path, metrics_address)
        try:
            watcher.wait_until(lambda: len(watcher.out) >= len(LISTEN_PORTS))
            wait_for(lambda: prometheus.value('up{job="tcpfast"}') == 1, "a first scrape")
            first_poll = len(watcher.out)
            assert first_poll == len(LISTEN_PORTS)
            assert prometheus.value("sum(tcpfast_new_connections_total)") == 0

            with peer(namespace, "client") as client:
                for port in LISTEN_PORTS + LISTEN_PORTS[:1]:
                    client.stdin.write(f"127.0.0.1 127.0.0.1 {port} 5\n")
                    client.stdin.flush()
                    assert client.stdout.readline().strip() == "ok"
                # Each connection is two sockets: the client's and the one accepted.
                watcher.wait_until(lambda: len(watcher.out) >= first_poll + 2 * CONNECTIONS)
                printed = [event for event in watcher.events()[first_poll:]
                           if event["event"] == "new"]
                assert len(printed) == 2 * CONNECTIONS

                wait_for(lambda: prometheus.value("sum(tcpfast_new_connections_total)")
                         == len(printed), "the counter to reach the printed count")
                by_direction = {
                    series["metric"]["direction"]: float(series["value"][1])
                    for series in prometheus.query(
                        "sum by (direction) (tcpfast_new_connections_total)")}
                assert by_direction == {"in": CONNECTIONS, "out": CONNECTIONS,
                                        "listen": 0, "unknown": 0}
                assert prometheus.value(
                    'tcpfast_tcp_connection_states{state="listen"}') == len(LISTEN_PORTS)
                implementation = "compiled" if backend.ACCELERATED else "pure"
                assert prometheus.value(
                    f'tcpfast_build_info{{implementation="{implementation}"}}') == 1
                assert prometheus.value("tcpfast_polls_total") >= 2
        finally:
            prometheus.stop()
            watcher.stop()
