"""Turning rows into the output contract: text lines or JSON lines, one per event."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime

import numpy as np

from ..schema import state_name

_ADDRESS_BYTES = {4: 4, 6: 16}
_ADDRESS_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def address_text(family: int, address: bytes) -> str:
    """An address as text: dotted IPv4, or RFC 5952 IPv6 (lower case, ``::``)."""
    return socket.inet_ntop(_ADDRESS_FAMILY[family], address[: _ADDRESS_BYTES[family]])


def _events(rows: np.ndarray) -> Iterator[tuple[int, str, int, str, int, int, int, int]]:
    """(family, local, local_port, remote, remote_port, state, uid, inode) per row."""
    local, remote = rows["local_addr"].tobytes(), rows["remote_addr"].tobytes()
    columns = zip(rows["family"].tolist(), rows["local_port"].tolist(),
                  rows["remote_port"].tolist(), rows["state"].tolist(),
                  rows["uid"].tolist(), rows["inode"].tolist())
    for index, (family, local_port, remote_port, state, uid, inode) in enumerate(columns):
        at = 16 * index
        yield (family, address_text(family, local[at:at + 16]), local_port,
               address_text(family, remote[at:at + 16]), remote_port, state, uid, inode)


def _endpoint(family: int, address: str, port: int) -> str:
    return f"[{address}]:{port}" if family == 6 else f"{address}:{port}"


def text_lines(rows: np.ndarray, when: datetime) -> list[str]:
    """``2021-08-09 11:43:46+00:00: New connection: 10.0.0.1:41164 -> 10.0.0.2:443``."""
    stamp = when.isoformat(sep=" ", timespec="seconds")
    return [
        f"{stamp}: New connection: {_endpoint(family, local, local_port)}"
        f" -> {_endpoint(family, remote, remote_port)}"
        for family, local, local_port, remote, remote_port, *_ in _events(rows)
    ]


def json_lines(rows: np.ndarray, when: datetime, event: str = "new") -> list[str]:
    """One JSON object per row with the contract's keys (see README)."""
    stamp = when.isoformat(timespec="seconds")
    return [
        json.dumps({
            "time": stamp, "event": event, "family": family,
            "local": local, "local_port": local_port,
            "remote": remote, "remote_port": remote_port,
            "state": state_name(state), "uid": uid, "inode": inode,
        })
        for family, local, local_port, remote, remote_port, state, uid, inode in _events(rows)
    ]
