"""Open loopback sockets in every TCP state a test can make, then list them through
netlink and through /proc; print both as JSON. Run it inside a fresh network
namespace (``unshare --net``): it brings up loopback and routes the documentation
prefixes (192.0.2.0/24, 2001:db8::/64) to it, where a packet for an address the
namespace does not own is dropped: a connect() there stays in SYN_SENT.
``--families 4`` (or ``6``; default both) makes only that family's sockets (the
IPv4-mapped ones count as IPv6), so a host without IPv6 still runs the IPv4 half.
``--record DIR`` also writes the raw dump and the /proc tables (the recorded
data of tests/test_netlink_decode.py).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np

from tcpfast.filters.states import ALL_STATES_MASK
from tcpfast.sources import proc, sockdiag

STATES = {"LISTEN": 10, "ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "TIME_WAIT": 6,
          "CLOSE_WAIT": 8, "FIN_WAIT2": 5}
COMPARED = ["family", "local_addr", "local_port", "remote_addr", "remote_port", "state",
            "uid", "inode", "tx_queue", "rx_queue"]


SETTLE_SECONDS = 10


def network(families: set[int]) -> None:
    commands = [["ip", "link", "set", "lo", "up"]]
    if 4 in families:
        commands += [["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"],
                     ["ip", "route", "add", "192.0.2.0/24", "dev", "lo", "src", "192.0.2.1"]]
    if 6 in families:
        commands.append(["ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "lo", "nodad"])
    for command in commands:
        subprocess.run(command, check=True)


def pair(server: socket.socket, af: int, host: str) -> tuple[socket.socket, socket.socket]:
    client = socket.socket(af)
    client.connect((host, server.getsockname()[1]))
    accepted, _ = server.accept()
    return client, accepted


def make_sockets(af: int, loopback: str, unreachable: str, held: list) -> None:
    server = socket.socket(af)
    server.bind((loopback, 0))
    server.listen(16)                                               # LISTEN
    held.append(server)
    held.extend(pair(server, af, loopback))                         # ESTABLISHED x2
    client, accepted = pair(server, af, loopback)                   # TIME_WAIT
    client.close()
    accepted.close()
    client, accepted = pair(server, af, loopback)
    client.shutdown(socket.SHUT_WR)                                 # FIN_WAIT2 / CLOSE_WAIT
    held += [client, accepted]
    syn = socket.socket(af)                                         # SYN_SENT
    syn.setblocking(False)
    try:
        syn.connect((unreachable, 9))
    except BlockingIOError:
        pass
    held.append(syn)
    deferred = socket.socket(af)                                    # SYN_RECV
    deferred.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    deferred.bind((loopback, 0))
    deferred.listen(16)
    waiting = socket.socket(af)
    waiting.connect((loopback, deferred.getsockname()[1]))
    held += [deferred, waiting]


def mapped_sockets(held: list) -> None:
    """IPv4-mapped IPv6: a dual-stack listener reached over IPv4 from an IPv6 socket."""
    server = socket.socket(socket.AF_INET6)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", 0))
    server.listen(4)
    client = socket.socket(socket.AF_INET6)
    client.connect(("::ffff:127.0.0.1", server.getsockname()[1]))
    accepted, _ = server.accept()
    held += [server, client, accepted]


def table(rows: np.ndarray) -> list[list]:
    return sorted([[row[f].tobytes().hex() if f.endswith("addr") else int(row[f])
                    for f in COMPARED] for row in rows])


def settled(rows: list[list], families: set[int]) -> bool:
    """Every state made is listed for every family (FINs and ACKs on loopback are in)."""
    listed = {(row[0], row[5]) for row in rows}
    return all((family, code) in listed for family in families for code in STATES.values())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", metavar="DIR")
    parser.add_argument("--families", default="4,6", help="4, 6 or 4,6 (default)")
    args = parser.parse_args()
    families = {int(family) for family in args.families.split(",")}
    network(families)
    held: list[socket.socket] = []
    if 4 in families:
        make_sockets(socket.AF_INET, "127.0.0.1", "192.0.2.2", held)
    if 6 in families:
        make_sockets(socket.AF_INET6, "::1", "2001:db8::2", held)
        mapped_sockets(held)
    deadline = time.monotonic() + SETTLE_SECONDS
    with sockdiag.SockDiag() as diag:
        while True:                                  # both lists from one quiet moment
            from_netlink = table(diag.dump().rows)
            from_proc = table(proc.read_snapshot().rows)
            if ((from_netlink == from_proc and settled(from_proc, families))
                    or time.monotonic() > deadline):  # the test says what differs
                break
            time.sleep(0.01)
        if args.record:
            record(diag, args.record)
    json.dump({"netlink": from_netlink, "proc": from_proc}, sys.stdout)
    for sock in held:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    return 0


def record(diag: sockdiag.SockDiag, directory: str) -> None:
    """The raw replies of one dump, and the /proc tables read right after it."""
    sock = diag._socket
    request = diag._legacy_request(ALL_STATES_MASK)
    seq = struct.unpack_from("=I", request, 8)[0]
    sock.sendall(request)
    data = b""
    while True:
        chunk = sock.recv(65536)
        data += chunk
        if struct.unpack_from("=H", chunk, 4)[0] == 3 and len(chunk) <= 20:
            break
    name = "states-root"
    with open(os.path.join(directory, name + ".bin"), "wb") as out:
        out.write(data)
    for table_name in ("tcp", "tcp6"):
        with open(f"/proc/net/{table_name}", "rb") as source, \
                open(os.path.join(directory, f"{name}.{table_name}"), "wb") as out:
            out.write(source.read())
    states = sorted(set(STATES.values()))
    with open(os.path.join(directory, "dumps.json"), "w") as index:
        json.dump([{"name": name, "seq": seq, "states": states}], index, indent=1)


if __name__ == "__main__":
    sys.exit(main())
