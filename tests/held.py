"""Processes held in network namespaces for the tests: started, ready, and ended by the test.

A held process prints ``ready`` once it runs where it was put, then takes
commands on stdin (``unshare``: move to a new network namespace, answered
``moved``; ``listen``: listen on a port of 0.0.0.0, answered with the port;
``zombie``: fork a child that exits at once and is never reaped,
answered with its pid) and exits when its stdin closes. It runs under Debian's
/usr/bin/python3 where there is one, so that a user other than root may run
it (pyenv's interpreters live under /root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator

from namespaces import unshare_or_skip

PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

HOLD = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "unshare":
        if libc.unshare(0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        print("moved", flush=True)
    elif line.strip() == "listen":
        import socket
        server = socket.socket()
        server.bind(("0.0.0.0", 0))
        server.listen()
        print(server.getsockname()[1], flush=True)
    elif line.strip() == "zombie":
        child = os.fork()
        if child == 0:
            os._exit(0)
        print(child, flush=True)
"""

# The leader thread exits (SYS_exit, not exit_group) after another thread moved to a new
# network namespace: the process lives on in that thread, its leader a zombie.
LEADER_EXITS = """
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def hold():
    if libc.unshare(0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    print("ready", threading.get_native_id(), flush=True)
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=hold).start()
libc.syscall(60, 0)
"""


class Held:
    """One held process: ``pid``, ``say(command)`` (returns its answer line), ``end()``."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None
        self.ready = self.process.stdout.readline().split()
        if not self.ready or self.ready[0] != "ready":
            self.end()
            raise RuntimeError(f"{command[:4]} did not start (said {self.ready!r})")
        self.pid = self.process.pid

    def say(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def end(self) -> None:
        """Close its stdin and reap it (a process not reaped stays a zombie)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def held(*prefix: str, script: str = HOLD) -> Iterator[Held]:
    """A held process started through ``prefix`` (``ip netns exec NAME``, ``unshare -n``)."""
    if prefix[:1] == ("unshare",):
        unshare_or_skip(*prefix[1:])
    process = Held([*prefix, PYTHON, "-c", script])
    try:
        yield process
    finally:
        process.end()


def as_nobody(*command: str) -> list[str]:
    """``command`` run as user nobody (setpriv), for a test running as root."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("no setpriv(1)")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]


def netns_inode(pid: int | str) -> int:
    """The inode number of ``pid``'s network namespace (the N of net:[N]; needs ptrace rights)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def fork_as_nobody(function: Callable[[], object],
                   prepare: Callable[[], None] | None = None) -> Callable[[], object]:
    """``function()`` started now in a forked child as user nobody (the tests run as root);
    the callable returned waits for it and gives its result, which must be JSON.
    ``prepare()`` runs first, still as root. An exception in the child fails the caller,
    with its text. Fork before starting threads: a fork beside running threads can
    deadlock the child (Python 3.12+ warns of it)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            if prepare is not None:
                prepare()
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps({"result": function()}).encode())
            status = 0
        except BaseException:
            os.write(write_end, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(status)
    os.close(write_end)

    def result() -> object:
        with os.fdopen(read_end, "rb") as pipe:
            report = json.loads(pipe.read() or b'{"error": "no report"}')
        os.waitpid(pid, 0)
        if "error" in report:
            raise AssertionError(f"as nobody: {report['error']}")
        return report["result"]
    return result


def run_as_nobody(function: Callable[[], object],
                  prepare: Callable[[], None] | None = None) -> object:
    """``function()`` run in a forked child as user nobody; its result (see fork_as_nobody)."""
    return fork_as_nobody(function, prepare)()
