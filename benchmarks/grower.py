"""Grow a live TCP table at a steady rate: open connection pairs to a loopback listener
and hold them, ``rate`` rows a second, until stopped or ``seconds`` have passed.

Each line of stdout is ``<local port of the client> <monotonic time>``, one per pair,
so a reader knows every connection it must report, and when it appeared.

    python -m benchmarks.grower --rate 400 --seconds 20
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0, help="rows per second (2 per pair)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--host", default="127.2.0.1")
    args = parser.parse_args(argv)
    server = socket.socket()
    server.bind((args.host, 0))
    server.listen(4096)
    print(f"listening {server.getsockname()[1]}", flush=True)
    held: list[socket.socket] = [server]
    started = time.monotonic()
    pairs = 0
    try:
        while time.monotonic() - started < args.seconds and len(held) < 18_000:
            due = started + pairs * 2 / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.connect(server.getsockname())
            accepted, _ = server.accept()
            held += [client, accepted]
            pairs += 1
            print(client.getsockname()[1], time.monotonic(), flush=True)
        sys.stdin.read()                   # hold until the reader closes our stdin
    finally:
        for sock in held:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
