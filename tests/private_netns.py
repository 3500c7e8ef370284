"""Run the test session in a network namespace of its own, so that other
processes' sockets neither slow the tests nor change their results.

As root: unshare(CLONE_NEWNET) twice: the first namespace's
``net.ipv4.tcp_child_ehash_entries`` gives the second a socket hash table of
its own, so reading its /proc/net/tcp walks only its own buckets, whatever
the host holds (the host's setting is never touched). Otherwise: a user
namespace with a network namespace, where the kernel allows one (our uid maps
to itself). Then the loopback interface is brought up. Where neither works,
the tests run in the current namespace and the session header says so.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP = 0x1
#: TIME_WAIT entries the session's namespace may hold (the kernel's default is half its
#: hash table's buckets): far more than the suite makes in TIME_WAIT's minute.
TIME_WAIT_ENTRIES = 1 << 18


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _map_own_ids(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as setgroups:
        setgroups.write("deny")
    with open("/proc/self/uid_map", "w") as uid_map:
        uid_map.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as gid_map:
        gid_map.write(f"{gid} {gid} 1")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(control, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(control, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _set_sysctl(name: str, value: int) -> bool:
    """Set this namespace's ``net.ipv4.NAME``; False where the kernel has no such setting."""
    try:
        with open(f"/proc/sys/net/ipv4/{name}", "w") as sysctl:
            sysctl.write(str(value))
        return True
    except OSError:
        return False


def _own_hash_table(entries: int) -> bool:
    """Make the next network namespace this one makes get its own socket hash table
    (kernels before 6.1 have no such setting)."""
    return _set_sysctl("tcp_child_ehash_entries", entries)


def enter(hash_entries: int = 1 << 14) -> str:
    """Move this process into a private network namespace; says where the tests run.
    ``hash_entries``: the size of its own socket hash table, where it can have one."""
    if os.environ.get("TCPFAST_TEST_NETNS") == "host":
        return "the current one (TCPFAST_TEST_NETNS=host)"
    try:
        if os.geteuid() == 0:
            _unshare(CLONE_NEWNET)
            how = "private (unshare as root)"
            if _own_hash_table(hash_entries):
                _unshare(CLONE_NEWNET)
                how = f"private (unshare as root, its own {hash_entries}-bucket socket hash table)"
                # Its TIME_WAIT entries are capped at half its buckets, and past the cap the
                # kernel makes none: the suite makes more than that within a minute.
                _set_sysctl("tcp_max_tw_buckets", TIME_WAIT_ENTRIES)
        else:
            uid, gid = os.getuid(), os.getgid()
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
            _map_own_ids(uid, gid)
            how = "private (user namespace)"
        _loopback_up()
    except OSError as error:
        return (f"the current one: a private one could not be made ({error.strerror}); "
                "tests that count sockets may see other processes' sockets")
    return how
