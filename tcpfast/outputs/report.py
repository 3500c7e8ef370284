"""Turning events into the output contract: text lines or JSON lines, one per event."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from datetime import datetime
from itertools import repeat

import numpy as np

from ..enrich.direction import direction_names
from ..events import RowEvents
from ..schema import state_name

_ADDRESS_BYTES = {4: 4, 6: 16}
_ADDRESS_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_TEXT_EVENT = {"new": "New connection", "closed": "Closed connection",
               "new_and_closed": "New and closed connection"}


def address_text(family: int, address: bytes) -> str:
    """An address as text: dotted IPv4, or RFC 5952 IPv6 (lower case, ``::``)."""
    return socket.inet_ntop(_ADDRESS_FAMILY[family], address[: _ADDRESS_BYTES[family]])


def _rows(rows: np.ndarray) -> Iterator[tuple[int, str, int, str, int, int, int, int]]:
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


def text_lines(events: RowEvents, when: datetime, show_direction: bool = False) -> list[str]:
    """``2021-08-09 11:43:46+00:00: New connection: 10.0.0.1:41164 -> 10.0.0.2:443``,
    the seed's line; ``show_direction`` appends `` direction=in``, and owners looked
    up (``--process``) `` pid=1234 curl`` where one was found."""
    name = _TEXT_EVENT[events.event]
    lines = [f"{stamp.isoformat(sep=' ', timespec='seconds')}: {name}: "
             f"{_endpoint(family, local, local_port)} -> {_endpoint(family, remote, remote_port)}"
             for (family, local, local_port, remote, remote_port, *_), stamp
             in zip(_rows(events.rows), _stamps(events, when))]
    if show_direction:
        lines = [f"{line} direction={name}"
                 for line, name in zip(lines, direction_names(events.direction))]
    if events.owners is not None:
        lines = [line if owner is None else f"{line} pid={owner.pid} {owner.comm}"
                 for line, owner in zip(lines, events.owners)]
    return lines


def _stamps(events: RowEvents, when: datetime) -> list[datetime]:
    """Each event's time: its own when it has one (a destroy event's), else the poll's."""
    if events.times is None:
        return [when] * len(events)
    return [datetime.fromtimestamp(int(value), when.tzinfo) for value in events.times.tolist()]


def _seconds(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def json_lines(events: RowEvents, when: datetime) -> list[str]:
    """One JSON object per row: the contract's keys (see README), ``direction``,
    ``pid`` and ``comm`` (null when unknown), and ``duration`` on closed events."""
    durations = ([None] * len(events) if events.duration is None
                 else [_seconds(value) for value in events.duration.tolist()])
    owners = repeat(None) if events.owners is None else events.owners
    columns = zip(_rows(events.rows), direction_names(events.direction), durations, owners,
                  _stamps(events, when))
    lines = []
    for row, direction, duration, owner, stamp in columns:
        family, local, local_port, remote, remote_port, state, uid, inode = row
        event = {"time": stamp.isoformat(timespec="seconds"), "event": events.event,
                 "family": family, "local": local, "local_port": local_port,
                 "remote": remote, "remote_port": remote_port,
                 "state": state_name(state), "uid": uid, "inode": inode, "direction": direction,
                 "pid": None if owner is None else owner.pid,
                 "comm": None if owner is None else owner.comm}
        if events.event in ("closed", "new_and_closed"):
            event["duration"] = duration
        lines.append(json.dumps(event))
    return lines
