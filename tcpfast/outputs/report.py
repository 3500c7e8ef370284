"""Turning events into the output contract: text lines or JSON lines, one per event.

This is the reference formatter (the one used under TCPFAST_PURE); the compiled
one, ``_format.pyx``, must write the very same bytes (the tests compare them).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np

from ..enrich.direction import DIRECTION_NAMES
from ..events import (
    UNKNOWN_LOCAL_ADDRESS,
    UNKNOWN_LOCAL_PORT,
    UNKNOWN_REMOTE_ADDRESS,
    UNKNOWN_REMOTE_PORT,
    UNKNOWN_UID,
    Holder,
    RowEvents,
)
from ..schema import (
    CLOSE_INFO_DTYPE,
    KNOWN_BYTES_RECEIVED,
    KNOWN_BYTES_SENT,
    KNOWN_RETRANSMITS,
    KNOWN_RTT,
    KNOWN_SEGMENTS_RECEIVED,
    KNOWN_SEGMENTS_SENT,
    check_rows,
    state_name,
)

_ADDRESS_BYTES = {4: 4, 6: 16}
_ADDRESS_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_TEXT_EVENT = {"new": "New connection", "closed": "Closed connection",
               "new_and_closed": "New and closed connection"}
#: Events of a socket that has gone: they carry ``duration`` and what tcp_info said.
CLOSED_EVENTS = ("closed", "new_and_closed")
#: The keys of a closed socket's tcp_info, in output order, with their KNOWN_* bits.
_INFO_KEYS = (("bytes_sent", KNOWN_BYTES_SENT), ("bytes_received", KNOWN_BYTES_RECEIVED),
              ("rtt_ms", KNOWN_RTT), ("retransmits", KNOWN_RETRANSMITS),
              ("segments_sent", KNOWN_SEGMENTS_SENT),
              ("segments_received", KNOWN_SEGMENTS_RECEIVED))
_NO_INFO: dict[str, Any] = dict.fromkeys(name for name, _ in _INFO_KEYS)
#: The dtype of each per-row array a RowEvents may carry.
COLUMN_DTYPES = {"direction": np.dtype(np.uint8), "duration": np.dtype(np.float64),
                 "times": np.dtype(np.float64), "unknown": np.dtype(np.uint8),
                 "info": CLOSE_INFO_DTYPE, "holder": np.dtype(np.int32)}


def check_events(events: RowEvents) -> None:
    """Raise TypeError or ValueError unless every column of ``events`` is what the
    formatters read: arrays of their dtype, one-dimensional, contiguous, one entry per
    row; a known event; families 4 and 6, direction codes, holder indexes in range."""
    if events.event not in _TEXT_EVENT:
        raise ValueError(f"unknown event {events.event!r}")
    check_rows(events.rows, "rows")
    count = len(events.rows)
    for name, dtype in COLUMN_DTYPES.items():
        column = getattr(events, name)
        if column is None:
            continue
        if not isinstance(column, np.ndarray) or column.dtype != dtype:
            raise TypeError(f"{name} must be a numpy array of {dtype}, not "
                            f"{getattr(column, 'dtype', type(column).__name__)}")
        if column.ndim != 1 or not column.flags.c_contiguous or len(column) != count:
            raise ValueError(f"{name} must be a 1-d C-contiguous array of {count} entries "
                             f"(one per row), not of shape {column.shape}")
    if events.owners is not None and len(events.owners) != count:
        raise ValueError(f"owners must have {count} entries (one per row), not {len(events.owners)}")
    if count == 0:
        return
    families = events.rows["family"]
    if not np.all((families == 4) | (families == 6)):
        raise ValueError(f"family must be 4 or 6, not {int(families[(families != 4) & (families != 6)][0])}")
    if int(events.direction.max()) not in DIRECTION_NAMES:
        raise ValueError(f"unknown direction code {int(events.direction.max())}")
    if events.holder is not None and not np.all((events.holder >= -1)
                                                & (events.holder < len(events.holders))):
        raise ValueError(f"holder indexes must be -1 (none) or below {len(events.holders)} "
                         "(the holders given)")


def address_text(family: int, address: bytes) -> str:
    """An address as text: dotted IPv4, or RFC 5952 IPv6 (lower case, ``::``)."""
    return socket.inet_ntop(_ADDRESS_FAMILY[family], address[: _ADDRESS_BYTES[family]])


_Row = tuple[int, "str | None", "int | None", "str | None", "int | None", int, "int | None", int,
             int]


def _rows(events: RowEvents) -> Iterator[_Row]:
    """(family, local, local_port, remote, remote_port, state, uid, inode, netns) per
    row; an address or port the event did not carry (``unknown``) is None."""
    rows = events.rows
    local, remote = rows["local_addr"].tobytes(), rows["remote_addr"].tobytes()
    unknown = repeat(0) if events.unknown is None else events.unknown.tolist()
    columns = zip(rows["family"].tolist(), rows["local_port"].tolist(),
                  rows["remote_port"].tolist(), rows["state"].tolist(),
                  rows["uid"].tolist(), rows["inode"].tolist(), rows["netns"].tolist(), unknown)
    for index, (family, local_port, remote_port, state, uid, inode, netns, bits) in enumerate(columns):
        at = 16 * index
        yield (family,
               None if bits & UNKNOWN_LOCAL_ADDRESS else address_text(family, local[at:at + 16]),
               None if bits & UNKNOWN_LOCAL_PORT else local_port,
               None if bits & UNKNOWN_REMOTE_ADDRESS else address_text(family, remote[at:at + 16]),
               None if bits & UNKNOWN_REMOTE_PORT else remote_port,
               state, None if bits & UNKNOWN_UID else uid, inode, netns)


def _endpoint(family: int, address: str | None, port: int | None) -> str:
    """``10.0.0.1:443``, ``[::1]:22``; ``*`` for what is unknown: ``*:443``, ``[::1]:*``."""
    port_text = "*" if port is None else str(port)
    if address is None:
        return f"*:{port_text}"
    return f"[{address}]:{port_text}" if family == 6 else f"{address}:{port_text}"


def _stamps(events: RowEvents, when: datetime) -> list[datetime]:
    """Each event's time: its own when it has one (a destroy event's), else the poll's."""
    if events.times is None:
        return [when] * len(events)
    return [datetime.fromtimestamp(int(value), when.tzinfo) for value in events.times.tolist()]


def _seconds(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _infos(events: RowEvents) -> list[dict[str, Any]]:
    """What each closed socket's tcp_info said, by output key (None: not known)."""
    if events.info is None:
        return [_NO_INFO] * len(events)
    infos = []
    columns = zip(*(events.info[name].tolist() for name in (
        "bytes_sent", "bytes_received", "segments_sent", "segments_received", "retransmits",
        "rtt_us", "known")))
    for sent, received, segments_sent, segments_received, retransmits, rtt_us, known in columns:
        values = {"bytes_sent": sent, "bytes_received": received,
                  "rtt_ms": round(rtt_us / 1000, 3), "retransmits": retransmits,
                  "segments_sent": segments_sent, "segments_received": segments_received}
        infos.append({name: values[name] if known & bit else None for name, bit in _INFO_KEYS})
    return infos


def _holders(events: RowEvents) -> list[Holder | None]:
    """The holder of each row's namespace, or None."""
    if events.holder is None:
        return [None] * len(events)
    return [None if index < 0 else events.holders[index] for index in events.holder.tolist()]


def _star(value: object) -> str:
    return "*" if value is None else str(value)


def _namespace_text(netns: int, holder: Holder | None) -> str:
    """`` netns=N`` (``*``: not named), then `` pod=NAMESPACE/NAME`` or `` container=ID``
    (its first 12 characters) when the namespace's holder is known."""
    text = f" netns={netns or '*'}"
    if holder is None:
        return text
    if holder.pod_name is not None:
        return f"{text} pod={_star(holder.pod_namespace)}/{holder.pod_name}"
    if holder.container_id is not None:
        return f"{text} container={holder.container_id[:12]}"
    return text


def text_lines(events: RowEvents, when: datetime, show_direction: bool = False,
               show_bytes: bool = False, show_namespace: bool = False) -> list[str]:
    """``2021-08-09 11:43:46+00:00: New connection: 10.0.0.1:41164 -> 10.0.0.2:443``,
    the seed's line, then what was asked for: `` direction=in`` (``show_direction``),
    `` pid=1234 curl`` (owners looked up, ``--process``, where one was found),
    `` sent=N received=N rtt=Xms`` on closed events (``show_bytes``; ``*`` where not
    known), `` netns=N pod=NAMESPACE/NAME`` or `` container=ID`` (``show_namespace``)."""
    check_events(events)
    name = _TEXT_EVENT[events.event]
    rows = list(_rows(events))
    lines = [f"{stamp.isoformat(sep=' ', timespec='seconds')}: {name}: "
             f"{_endpoint(family, local, local_port)} -> {_endpoint(family, remote, remote_port)}"
             for (family, local, local_port, remote, remote_port, *_), stamp
             in zip(rows, _stamps(events, when))]
    if show_direction:
        lines = [f"{line} direction={DIRECTION_NAMES[code]}"
                 for line, code in zip(lines, events.direction.tolist())]
    if events.owners is not None:
        lines = [line if owner is None else f"{line} pid={owner.pid} {owner.comm}"
                 for line, owner in zip(lines, events.owners)]
    if show_bytes and events.event in CLOSED_EVENTS:
        lines = [f"{line} sent={_star(info['bytes_sent'])} received={_star(info['bytes_received'])}"
                 f" rtt={_star(info['rtt_ms'])}{'' if info['rtt_ms'] is None else 'ms'}"
                 for line, info in zip(lines, _infos(events))]
    if show_namespace:
        lines = [line + _namespace_text(row[8], holder)
                 for line, row, holder in zip(lines, rows, _holders(events))]
    return lines


def json_lines(events: RowEvents, when: datetime) -> list[str]:
    """One JSON object per row: the contract's keys (see README), ``direction``,
    ``pid`` and ``comm`` (null when unknown); on closed events ``duration`` and what
    tcp_info said (``bytes_sent`` ... ``segments_received``); then ``netns`` and the
    namespace's holder (``container_id``, ``pod_uid``, ``pod_namespace``, ``pod_name``).
    Whatever is not known is null."""
    check_events(events)
    closed = events.event in CLOSED_EVENTS
    durations = ([None] * len(events) if events.duration is None
                 else [_seconds(value) for value in events.duration.tolist()])
    owners = repeat(None) if events.owners is None else events.owners
    infos = _infos(events) if closed else repeat(_NO_INFO)
    columns = zip(_rows(events), events.direction.tolist(), durations, owners, infos,
                  _holders(events), _stamps(events, when))
    lines = []
    for row, direction, duration, owner, info, holder, stamp in columns:
        family, local, local_port, remote, remote_port, state, uid, inode, netns = row
        event = {"time": stamp.isoformat(timespec="seconds"), "event": events.event,
                 "family": family, "local": local, "local_port": local_port,
                 "remote": remote, "remote_port": remote_port,
                 "state": state_name(state), "uid": uid, "inode": inode,
                 "direction": DIRECTION_NAMES[direction],
                 "pid": None if owner is None else owner.pid,
                 "comm": None if owner is None else owner.comm}
        if closed:
            event["duration"] = duration
            event.update(info)
        event["netns"] = netns or None
        holder = holder or Holder()
        event.update(container_id=holder.container_id, pod_uid=holder.pod_uid,
                     pod_namespace=holder.pod_namespace, pod_name=holder.pod_name)
        lines.append(json.dumps(event))
    return lines
