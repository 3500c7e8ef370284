"""Network namespaces: which one a procfs path lists, and sockets made inside another.

A socket belongs to the namespace it was created in, for good: to read
another namespace through netlink, a worker thread enters it (``setns()``,
root or CAP_SYS_ADMIN), creates the socket, and ends; the rest of the process
stays where it was.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):              # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def run_in_namespace(netns_path: str, work: Callable[[], T], inode: int | None = None) -> T:
    """What ``work()`` returns, run by a thread that entered the namespace of ``netns_path``
    (a socket or a /proc/thread-self/net file made there stays that namespace's).

    OSError, saying which namespace and why, when it cannot be entered, or when the
    file opened is not the namespace ``inode`` (a process's ``ns/net`` whose pid went
    to another process); ``work``'s own OSError as it raised it.
    """
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise OSError(error.errno, f"cannot open network namespace {netns_path}: "
                                   f"{error.strerror}") from None
    if inode is not None and os.fstat(fd).st_ino != inode:
        os.close(fd)
        raise OSError(errno.ESTALE, f"{netns_path} is no longer network namespace {inode}")
    result: list[T] = []
    failure: list[tuple[OSError, bool]] = []          # (error, raised by setns)

    def enter_and_work() -> None:
        try:
            _setns(fd)
        except OSError as error:
            failure.append((error, True))
            return
        try:
            result.append(work())
        except OSError as error:
            failure.append((error, False))

    try:
        worker = threading.Thread(target=enter_and_work, name="tcpfast-netns", daemon=True)
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    if failure:
        refused, entering = failure[0]
        if not entering:
            raise refused
        hint = " (entering a namespace needs root)" if refused.errno == errno.EPERM else ""
        raise OSError(refused.errno, f"cannot enter network namespace {netns_path}: "
                                     f"{refused.strerror or refused}{hint}") from None
    return result[0]


def open_in_namespace(netns_path: str | None, make: Callable[[], socket.socket],
                      inode: int | None = None) -> socket.socket:
    """The socket ``make()`` creates, in the namespace of ``netns_path`` (None: ours); see
    :func:`run_in_namespace`."""
    return make() if netns_path is None else run_in_namespace(netns_path, make, inode)


def namespace_of(proc_root: str) -> str | None:
    """The namespace file whose sockets ``proc_root``'s tables list; None: our own.

    Raises FileNotFoundError when ``proc_root`` has none (a directory of
    recorded tables): netlink cannot read that, only /proc can.
    """
    # /proc/net is a link to /proc/self/net: follow it to the process it names.
    tables = os.path.realpath(os.path.join(proc_root, "net"))
    path = os.path.join(os.path.dirname(tables), "ns", "net")
    theirs, ours = os.stat(path), os.stat("/proc/self/ns/net")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        return None
    return path


def namespace_id(proc_root: str) -> int:
    """The identifier of the namespace ``proc_root``'s tables list: its own inode number
    (the N of ``net:[N]``), or, where this user may not look at that (another user's
    process), the inode number of its ``net/tcp`` table (as tcpfast.sources.discovery
    names namespaces); 0 when ``proc_root`` holds no namespace's tables (recorded ones)."""
    try:
        path = namespace_of(proc_root) or "/proc/self/ns/net"
    except OSError:
        return 0
    try:
        return os.stat(path).st_ino
    except PermissionError:
        return os.stat(os.path.join(proc_root, "net", "tcp")).st_ino


def proc_root_of(netns_path: str) -> str | None:
    """``/proc/PID`` for ``/proc/PID/ns/net`` (its tables are that namespace's), else None."""
    match = re.fullmatch(r"(/proc/[0-9]+)/ns/net", os.path.normpath(netns_path))
    return match.group(1) if match else None
