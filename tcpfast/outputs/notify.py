"""Readiness and progress for a service manager: systemd's notify protocol (``sd_notify``).

When ``NOTIFY_SOCKET`` is set (systemd sets it for ``Type=notify`` units), tcpfast
sends ``READY=1`` once its first poll is written (the baseline is taken: what
opens from then on is reported as new), and after every poll ``STATUS=poll N:
R rows`` (``systemctl status`` shows it). Anything else that waits for a
watcher to be ready can listen on such a socket too: a datagram socket, a path
or, starting with ``@``, an abstract name. Without ``NOTIFY_SOCKET`` nothing
is sent. A socket that cannot be reached is said once, then left alone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from ..events import Poll

VARIABLE = "NOTIFY_SOCKET"


def status_line(polls: int, rows: int) -> str:
    """What STATUS says after poll number ``polls`` read ``rows`` rows."""
    return f"STATUS=poll {polls}: {rows} rows"


class Notifier:
    """Sends one datagram per poll to the service manager's socket."""

    def __init__(self, address: str, warn: Callable[[str], None]) -> None:
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._shown = address
        self._warn = warn
        self._socket: socket.socket | None = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.polls = 0

    @classmethod
    def from_environment(cls, warn: Callable[[str], None],
                         environment: Mapping[str, str] = os.environ) -> Notifier | None:
        address = environment.get(VARIABLE, "")
        return cls(address, warn) if address else None

    def __call__(self, poll: Poll) -> None:
        """After ``poll`` was written: READY=1 with the first, STATUS with each."""
        self.polls += 1
        status = status_line(self.polls, len(poll.snapshot.rows))
        self._send(f"READY=1\n{status}" if self.polls == 1 else status)

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            self._warn(f"cannot notify {VARIABLE}={self._shown}: {error.strerror or error}; "
                       "no more readiness or status messages")
            self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
