"""Network namespaces for the tests: created and removed by the test, peers run inside."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PEER = str(Path(__file__).with_name("netns_peer.py"))
#: Part of the names this session gives what the whole host shares (namespace files
#: under /run/netns, cgroups): not its pid, which a session in a PID namespace of its
#: own (a CI lane, a container) may share with another session.
SESSION_TAG = f"{secrets.randbelow(100000):05d}"


def add_namespace(name: str) -> None:
    """``ip netns add NAME``, or skip the test where that is not permitted (a container)."""
    result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot create network namespace {name}: {result.stderr.strip()}")


_UNSHARED: dict[tuple[str, ...], str | None] = {}


def unshare_or_skip(*options: str) -> None:
    """Skip the test where ``unshare OPTIONS`` is not permitted (a container's build, a
    sandbox without CAP_SYS_ADMIN); asked once per run."""
    if options not in _UNSHARED:
        result = subprocess.run(["unshare", *options, "true"], capture_output=True, text=True)
        _UNSHARED[options] = None if result.returncode == 0 else (
            result.stderr.strip() or f"exit status {result.returncode}")
    if _UNSHARED[options] is not None:
        pytest.skip(f"cannot make a namespace with unshare {' '.join(options)} here: "
                    f"{_UNSHARED[options]}")


@contextlib.contextmanager
def peer(namespace: str, *arguments: str) -> Iterator[subprocess.Popen]:
    """tests/netns_peer.py running in ``namespace``; its stdin closed (it exits) at the end."""
    process = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, PEER,
                                *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    try:
        yield process
    finally:
        process.stdin.close()
        process.wait(timeout=10)
