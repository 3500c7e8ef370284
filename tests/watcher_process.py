"""A real ``python -m tcpfast`` process for the tests: its output read as it comes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time


class WatcherProcess:
    """Runs the watcher; collects stdout and stderr lines in threads."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = ()) -> None:
        """``prefix``: a command to run it under, e.g. ``ip netns exec NAME``."""
        self.process = subprocess.Popen([*prefix, sys.executable, "-m", "tcpfast", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
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

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Send ``signum``; wait for the exit; the seconds it took."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=timeout)
        took = time.monotonic() - sent
        for thread in self._threads:
            thread.join(timeout=10)
        return took

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
