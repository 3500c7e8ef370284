"""Run inside a test's network namespace: listeners, or a client taking commands on stdin.

``listen ADDR PORT...``: listen on each port, print ``ready``, hold until stdin closes
(connections wait in the backlog, listed in /proc like accepted ones).
``client``: per stdin line ``SOURCE ADDR PORT TIMEOUT``, connect from SOURCE and print
``ok``, ``timeout`` or the error; sockets stay open until stdin closes.
"""

import socket
import sys


def listen(address: str, ports: list[str]) -> None:
    servers = []
    for port in ports:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, int(port)))
        server.listen(128)
        servers.append(server)
    print("ready", flush=True)
    sys.stdin.read()


def client() -> None:
    held = []
    for line in sys.stdin:
        source, address, port, timeout = line.split()
        connection = socket.socket()
        connection.bind((source, 0))
        connection.settimeout(float(timeout))
        try:
            connection.connect((address, int(port)))
            print("ok", flush=True)
            held.append(connection)
        except TimeoutError:
            print("timeout", flush=True)
        except OSError as error:
            print(f"error {error.strerror}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "listen":
        listen(sys.argv[2], sys.argv[3:])
    else:
        client()
