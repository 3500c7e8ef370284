"""The loop: cadence on a monotonic schedule, and a real watcher process on loopback."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from watcher_process import Notifications

from tcpfast.loop import MAX_INTERVAL, StopSignals, run_every


class FakeTime:
    """A clock that only moves when the loop sleeps or a poll takes time."""

    def __init__(self, poll_costs):
        self.now = 1000.0
        self.poll_costs = list(poll_costs)
        self.poll_starts = []
        self.requested = False

    def clock(self):
        return self.now

    def poll(self):
        self.poll_starts.append(self.now)
        self.now += self.poll_costs.pop(0)

    def wait(self, seconds):
        assert seconds > 0
        self.now += seconds
        return not self.poll_costs


def test_polls_start_on_the_schedule_whatever_each_poll_costs():
    fake = FakeTime([0.3, 0.05, 0.9, 0.0, 0.2])
    run_every(1.0, fake.poll, fake, clock=fake.clock)
    assert fake.poll_starts == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]


def test_a_poll_slower_than_the_interval_skips_ahead_instead_of_bursting():
    fake = FakeTime([0.1, 2.5, 0.1, 0.1])
    run_every(1.0, fake.poll, fake, clock=fake.clock)
    assert fake.poll_starts == [1000.0, 1001.0, 1004.0, 1005.0]


def test_a_wait_longer_than_poll_can_take_still_ends_when_the_reader_goes():
    """poll() takes an int of milliseconds: a longer wait is waited in chunks (it raised
    OverflowError once the interval passed 24.8 days)."""
    read_end, write_end = os.pipe()
    os.close(read_end)                                  # the reader has gone already
    try:
        with StopSignals(output_fd=write_end) as stop:
            assert stop.wait(1e300) is True
            assert stop.output_gone and stop.signal is None
    finally:
        os.close(write_end)


def test_the_first_stop_signal_is_remembered():
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(MAX_INTERVAL) is True          # the handler ran: the wait ends at once
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(MAX_INTERVAL) is True
    assert stop.signal == signal.SIGTERM and not stop.output_gone


class LineReader:
    """Collects a process's stdout lines in a thread, so the test can wait for one."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)

    def wait_for(self, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(json.loads(line)) for line in list(self.lines)):
            assert time.monotonic() < deadline, "the watcher did not report in time"
            time.sleep(0.05)

    def events(self) -> list[dict]:
        self._thread.join(timeout=10)
        return [json.loads(line) for line in self.lines]


def test_watcher_reports_new_loopback_connections_once_and_stops_on_sigterm():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        sockets = [socket.create_connection(("127.0.0.1", port))]   # there before the start
        sockets.append(server.accept()[0])
        notifications = Notifications()
        watcher = subprocess.Popen(
            [sys.executable, "-m", "tcpfast", "--interval", "0.2", "--json",
             "--state", "established"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=notifications.environment())
        try:
            reader = LineReader(watcher.stdout)
            reader.wait_for(lambda e: e["local_port"] == sockets[0].getsockname()[1])
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
            sockets += clients + [server.accept()[0] for _ in clients]
            last = clients[-1].getsockname()[1]
            reader.wait_for(lambda e: (e["local_port"], e["remote_port"]) == (port, last))
            notifications.wait_polls(notifications.polls + 2)    # more polls: no repeats
            expected = sorted((s.getsockname()[1], s.getpeername()[1]) for s in sockets)
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=10)
            err = watcher.stderr.read()
        finally:
            watcher.kill()
            notifications.close()
            for sock in sockets:
                sock.close()
    assert watcher.returncode == 0, err
    events = reader.events()
    ours = sorted((e["local_port"], e["remote_port"]) for e in events
                  if port in (e["local_port"], e["remote_port"]))
    assert ours == expected                                  # each exactly once
    assert all(e["uid"] == os.getuid() for e in events if e["local_port"] == port)


def test_a_hundred_polls_do_not_drift():
    """Each poll costs 5 ms of a 20 ms interval: a loop sleeping a fixed interval
    after each poll would end 500 ms late; on the schedule every poll starts on its
    tick. (Real sleeps, timed: benchmarks/test_loop.py.)"""
    fake = FakeTime([0.005] * 100)
    run_every(0.020, fake.poll, fake, clock=fake.clock)
    assert fake.poll_starts == pytest.approx([1000.0 + k * 0.020 for k in range(100)], abs=1e-9)
