"""A real ``python -m tcpfast`` process for the tests: its output read as it comes, and
its polls counted through the service manager's notify socket (NOTIFY_SOCKET), so a
test waits for "the first poll is done" or "two more polls ran", never for a time."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

STATUS = re.compile(r"^STATUS=poll (\d+): \d+ rows$", re.MULTILINE)


def wait_for(condition, what: str, timeout: float = 60, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert alive(), f"gave up waiting for {what}: the process exited"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Notifications:
    """A NOTIFY_SOCKET for a tcpfast process: READY=1 after its first poll, then a
    STATUS per poll; ``polls`` is how many it has said are done."""

    def __init__(self) -> None:
        self._directory = tempfile.mkdtemp(prefix="tcpfast-notify-")
        self.path = os.path.join(self._directory, "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        os.chmod(self._directory, 0o755)
        os.chmod(self.path, 0o777)                  # a watcher run as nobody may send too
        self._socket.settimeout(0.1)
        self.messages: list[str] = []
        self._open = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._open:
            try:
                self.messages.append(self._socket.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def environment(self, base: dict | None = None) -> dict:
        return {**(os.environ if base is None else base), "NOTIFY_SOCKET": self.path}

    @property
    def ready(self) -> bool:
        return any("READY=1" in message.splitlines() for message in list(self.messages))

    @property
    def polls(self) -> int:
        return max((int(match) for message in list(self.messages)
                    for match in STATUS.findall(message)), default=0)

    def wait_polls(self, count: int, alive=lambda: True, timeout: float = 60) -> None:
        """Until ``count`` polls are done (written, and counted)."""
        wait_for(lambda: self.polls >= count, f"poll {count} (done: {self.polls})", timeout,
                 alive)

    def close(self) -> None:
        """Stop listening and remove the socket (again: nothing more happens)."""
        self._open = False
        self._thread.join(timeout=5)
        self._socket.close()
        shutil.rmtree(self._directory, ignore_errors=True)


class WatcherProcess:
    """Runs the watcher; collects stdout and stderr lines in threads."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = (),
                 command: tuple[str, ...] | None = None) -> None:
        """``prefix``: a command to run it under, e.g. ``ip netns exec NAME``; ``command``:
        what runs tcpfast with ``args`` (default ``python -m tcpfast``)."""
        self.notifications = Notifications()
        command = command or (sys.executable, "-m", "tcpfast")
        self.process = subprocess.Popen([*prefix, *command, *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=self.notifications.environment())
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.process.stdout, self.out),
                                               (self.process.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _collect(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in list(self.out)]

    def wait_until(self, condition, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"watcher exited: {self.err}"
            assert time.monotonic() < deadline, f"timed out; stderr: {self.err}"
            time.sleep(0.02)

    def wait_ready(self) -> None:
        """Until the first poll is written: the baseline is taken, what opens now is new."""
        self.wait_polls(1)
        assert self.notifications.ready

    def wait_polls(self, count: int) -> None:
        self.wait_until(lambda: self.notifications.polls >= count)

    def more_polls(self, count: int = 2) -> None:
        """Until ``count`` more polls are done: with 2, at least one whole poll began
        after the call (the one running then may have read before it)."""
        self.wait_polls(self.notifications.polls + count)

    @contextlib.contextmanager
    def paused(self):
        """No poll inside (SIGSTOP, then SIGCONT): the next poll sees what happened in it as
        one change. A socket reset by its peer leaves the table at once, but sends what it
        carried (its destroy event) only when its process closes it: a poll between the
        two, which a busy machine may run, closes it without that."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Send ``signum``; wait for the exit; the seconds it took."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=timeout)
        took = time.monotonic() - sent
        for thread in self._threads:
            thread.join(timeout=10)
        self.notifications.close()                 # what it said stays in .messages
        return took

    def kill(self) -> None:
        """Kill it if it still runs; its notify socket goes either way."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notifications.close()
