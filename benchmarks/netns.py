"""Move this benchmark process into a network namespace of its own, so a large socket
load disturbs nobody else's /proc/net/tcp and vanishes when the process ends."""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
_entered = False


def enter_private_netns() -> None:
    """unshare(CLONE_NEWNET) once for the whole process (root only), with loopback up.

    Called before any thread is started: the namespace is the main thread's,
    which /proc/self/net shows and every subprocess (the load's workers) inherits.
    """
    global _entered
    if _entered:
        return
    if os.geteuid() != 0:
        raise PermissionError("a private network namespace needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _entered = True
