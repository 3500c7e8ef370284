"""Churn against ground truth: real loopback connections opened and closed while a
real watcher polls at a short interval; the test's own log of what it opened is
the truth the watcher's report is checked against."""

import os
import socket
import struct

import pytest
from test_live import FAMILIES
from watcher_process import WatcherProcess

INTERVAL = 0.2


class Ledger:
    """Every socket the test opened: (family, local, remote, inode), when, for how long."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.open: list[socket.socket] = []

    def record(self, sock: socket.socket, family: int, long_lived: bool) -> None:
        local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
        self.entries.append({"family": family, "local": local, "remote": remote,
                             "inode": os.fstat(sock.fileno()).st_ino,
                             "long": long_lived})


def close_hard(sock: socket.socket) -> None:
    """Close with RST: no TIME_WAIT, so the same 4-tuple can be opened again at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def connect(server: socket.socket, af: int, host: str, local_port: int = 0):
    client = socket.socket(af, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind((host, local_port))
    client.connect(server.getsockname()[:2])
    accepted, _ = server.accept()
    return client, accepted


def key(event: dict) -> tuple:
    return (event["family"], (event["local"], event["local_port"]),
            (event["remote"], event["remote_port"]), event["inode"])


@pytest.mark.parametrize("af,host,family", FAMILIES)
def test_churn_is_reported_exactly_once_per_connection(af, host, family):
    ledger = Ledger()
    server = socket.socket(af, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen(128)
    port = server.getsockname()[1]
    watcher = WatcherProcess("--interval", str(INTERVAL), "--json", "--state", "established")
    try:
        watcher.wait_ready()                              # the first poll: everything so far
        reopen_port = None
        for round_ in range(8):
            # long-lived: stay open across at least one whole poll
            pairs = [connect(server, af, host) for _ in range(4)]
            # short-lived: open and closed within a poll; may or may not be seen, never twice
            for _ in range(3):
                short = connect(server, af, host)
                for sock in short:
                    ledger.record(sock, family, long_lived=False)
                for sock in short:
                    close_hard(sock)
            for sock in (s for pair in pairs for s in pair):
                ledger.record(sock, family, long_lived=True)
            if round_ == 2:                               # this 4-tuple comes back (new inode)
                reopen_pair = pairs[0]
                reopen_port = reopen_pair[0].getsockname()[1]
            if round_ == 5:
                pairs_reopened = connect(server, af, host, local_port=reopen_port)
                for sock in pairs_reopened:
                    ledger.record(sock, family, long_lived=True)
                ledger.open.extend(pairs_reopened)
            ledger.open.extend(s for pair in pairs for s in pair)
            watcher.more_polls()                          # open across a whole poll
            if round_ == 4:                               # close the first 4-tuple before reuse
                for sock in reopen_pair:
                    close_hard(sock)
                    ledger.open.remove(sock)
                watcher.more_polls()                      # a whole poll without it
        watcher.more_polls()
        assert watcher.stop() < 5
    finally:
        watcher.kill()
        for sock in ledger.open:
            close_hard(sock)
        server.close()
    assert watcher.process.returncode == 0, watcher.err

    ours = [e for e in watcher.events() if port in (e["local_port"], e["remote_port"])]
    seen = [key(e) for e in ours]
    truth = {(e["family"], e["local"], e["remote"], e["inode"]): e for e in ledger.entries}
    truth_keys = {(f, tuple(local), tuple(remote), i) for f, local, remote, i in truth}
    assert len(seen) == len(set(seen)), "a connection was reported twice"
    assert set(seen) <= truth_keys, "reported something the test did not open"
    long_lived = {(f, tuple(local), tuple(remote), i)
                  for (f, local, remote, i), e in truth.items() if e["long"]}
    assert long_lived <= set(seen), "a connection open across a whole poll was missed"
    # The reopened 4-tuple: reported twice in all, once per inode.
    reopened = [k for k in seen if reopen_port in (k[1][1], k[2][1])]
    assert len(reopened) == 4 and len({k[3] for k in reopened}) == 4
