"""Loopback connections that carry known byte counts and end in a chosen way, and the
destroy events the kernel sends of their two sockets (tests/test_close_info.py).

Each connection sends ``size`` bytes each way (both ends write and read at once, so
10 MiB never deadlocks), waits until each end's send queue is empty (all it sent
was acknowledged: TIOCOUTQ is 0), then closes by one of CLOSES:

- ``client_first``: the client close()s; the server reads the end of the stream,
  waits until the client's destroy event has arrived, then close()s.
- ``server_first``: the same with the roles swapped.
- ``half_close``: the client shuts its side down (SHUT_WR), the server reads the
  end and close()s, the client reads the end and close()s.
- ``reset_by_client`` / ``reset_by_server``: that end close()s with SO_LINGER 0
  (a RST); the other reads the reset, then close()s.

The client is the connection's opener. ``--record DIR`` (run inside a fresh network
namespace, ``unshare --net``, as root) writes the raw destroy messages of one
connection of each close and size, as received, and their index: the recorded data
of tests/test_close_info.py.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from tcpfast.sources import netlink_events

CLOSES = ("client_first", "server_first", "half_close", "reset_by_client", "reset_by_server")
SIZES = (0, 1, 65_536, 10 << 20)
TIOCOUTQ = 0x5411
SO_COOKIE = 57                   # the socket's cookie: the one its destroy event carries
CHUNK = 1 << 20
WAIT_SECONDS = 10.0


@dataclass
class Ends:
    """The two sockets of a connection, and the cookies that name them in events."""

    client: socket.socket
    server: socket.socket
    client_cookie: int
    server_cookie: int


def cookie(sock: socket.socket) -> int:
    return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


class Heard:
    """Destroy events drained from ``events`` as they arrive, kept for lookups."""

    def __init__(self, events: netlink_events.DestroyEvents) -> None:
        self.events = events
        self.rows: list[np.ndarray] = []
        self.info: list[np.ndarray] = []

    def find(self, socket_cookie: int) -> tuple[np.ndarray, np.ndarray] | None:
        for rows, info in zip(self.rows, self.info):
            hit = np.flatnonzero(rows["cookie"] == socket_cookie)
            if len(hit):
                return rows[hit[0]], info[hit[0]]
        return None

    def wait_for(self, socket_cookie: int) -> tuple[np.ndarray, np.ndarray]:
        """The destroy event (row, info) of the socket with this cookie."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            found = self.find(socket_cookie)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no destroy event of the socket {socket_cookie:#x}")
            drained = self.events.drain_with_info()
            if len(drained.rows):
                self.rows.append(drained.rows)
                self.info.append(drained.info)
            else:
                time.sleep(0.005)


def connect(af: int, host: str) -> Ends:
    with socket.socket(af) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return Ends(client, server, cookie(client), cookie(server))


def _send(sock: socket.socket, size: int) -> None:
    block = b"x" * min(size, CHUNK)
    left = size
    while left:
        left -= sock.send(block[:min(left, len(block))])


def _read(sock: socket.socket, size: int) -> None:
    left = size
    while left:
        got = len(sock.recv(min(left, CHUNK)))
        if not got:
            raise AssertionError(f"the peer closed with {left} bytes still to come")
        left -= got


def _unacknowledged(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock, TIOCOUTQ, b"\0" * 4))[0]


def exchange(ends: Ends, size: int) -> None:
    """``size`` bytes each way, read in full, and every byte acknowledged."""
    workers = [threading.Thread(target=job, args=(sock, size))
               for sock in (ends.client, ends.server) for job in (_send, _read)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    deadline = time.monotonic() + WAIT_SECONDS
    while _unacknowledged(ends.client) or _unacknowledged(ends.server):
        if time.monotonic() > deadline:
            raise AssertionError("sent bytes were never acknowledged")
        time.sleep(0.001)


def _read_end(sock: socket.socket) -> None:
    if sock.recv(1) != b"":
        raise AssertionError("data where the end of the stream was expected")


def _read_reset(sock: socket.socket) -> None:
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return
    raise AssertionError(f"read {data!r} where a reset was expected")


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def close(ends: Ends, how: str, heard: Heard) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """End the connection ``how`` (one of CLOSES); the destroy event of each end."""
    if how in ("client_first", "server_first"):
        first, second = ((ends.client, ends.server) if how == "client_first"
                         else (ends.server, ends.client))
        first.close()
        _read_end(second)
        heard.wait_for(ends.client_cookie if how == "client_first" else ends.server_cookie)
        second.close()
    elif how == "half_close":
        ends.client.shutdown(socket.SHUT_WR)
        _read_end(ends.server)
        ends.server.close()
        _read_end(ends.client)
        ends.client.close()
    elif how == "reset_by_client":
        _reset(ends.client)
        _read_reset(ends.server)
        ends.server.close()
    elif how == "reset_by_server":
        _reset(ends.server)
        _read_reset(ends.client)
        ends.client.close()
    else:
        raise ValueError(f"unknown close {how!r}")
    return {"client": heard.wait_for(ends.client_cookie),
            "server": heard.wait_for(ends.server_cookie)}


def closed_connection(af: int, host: str, size: int, how: str,
                      heard: Heard) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One connection carrying ``size`` bytes each way, closed ``how``; its two events."""
    ends = connect(af, host)
    try:
        exchange(ends, size)
    except BaseException:
        ends.client.close()
        ends.server.close()
        raise
    return close(ends, how, heard)


def record(directory: str) -> None:
    """Raw destroy messages (as recv() returned them) of one connection per close and
    size, and their index: which ports each connection had, what it carried."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    raw = netlink_events._events_socket()
    chunks: list[bytes] = []
    stop = threading.Event()

    def receive() -> None:
        raw.settimeout(0.1)
        while not stop.is_set():
            try:
                chunks.append(raw.recv(65536))
            except TimeoutError:
                continue

    receiver = threading.Thread(target=receive)
    receiver.start()
    connections = []
    with netlink_events.DestroyEvents() as events:
        heard = Heard(events)
        for how in CLOSES:
            for size in SIZES:
                found = closed_connection(socket.AF_INET, "127.0.0.1", size, how, heard)
                connections.append({"close": how, "size": size, **{
                    side: {"cookie": int(row["cookie"]), "local_port": int(row["local_port"]),
                           "remote_port": int(row["remote_port"])}
                    for side, (row, _) in found.items()}})
    time.sleep(0.5)                               # the receiver has the last messages too
    stop.set()
    receiver.join()
    raw.close()
    name = "destroy-root"
    with open(os.path.join(directory, name + ".bin"), "wb") as out:
        out.write(b"".join(chunks))
    with open(os.path.join(directory, "destroyed.json"), "w") as index:
        json.dump([{"name": name, "seq": netlink_events.EVENT_SEQ,
                    "kernel": os.uname().release, "connections": connections}], index, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", metavar="DIR", required=True)
    record(parser.parse_args(argv).record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
