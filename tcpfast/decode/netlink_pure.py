"""Pure-Python decoder of NETLINK_SOCK_DIAG replies into connection rows (the fallback).

It accepts exactly what the compiled decoder (``_netlink.pyx``) accepts and
gives the same rows, counts and stopping point for every input. The input is
what ``recv()`` returned from a sock_diag socket: netlink messages one after
the other, each a 16-byte ``nlmsghdr`` (native byte order)::

    u32 length (header included), u16 type, u16 flags, u32 sequence, u32 port id

followed by its payload, the next message starting at ``length`` rounded up to
4. Messages are walked by their lengths, never by an assumed stride: the
kernel appends attributes whose number depends on the socket's kind and the
caller's privilege.

- A message whose sequence number is not ``seq`` is skipped (the tail of an
  earlier dump, or an event sent to everyone with sequence 0).
- ``NLMSG_DONE`` ends the dump, with an error when the int it carries is
  negative (a dump that failed part way: ``errno`` is its negation);
  ``NLMSG_ERROR`` with a non-zero code ends it with that error; both stop the walk.
- A message of type ``msg_type`` carries an ``inet_diag_msg`` (72 bytes):
  family (AF_INET or AF_INET6), state (1..11), timer, retransmits, the socket
  id (big-endian ports, network-order addresses, interface, cookie: two native
  u32, low word first, the row's ``cookie``), then
  expires, rqueue, wqueue, uid and inode as native u32. It is one row; a
  shorter payload, another family or state is malformed: counted, skipped.
  ``NLM_F_DUMP_INTR`` on it says the kernel saw the table change mid-dump.
- A header that is cut, or whose length is below 16 or runs past the data,
  is malformed and ends the walk: nothing after it can be trusted.

With ``info`` (what a socket carried: destroy events), the attributes after a
row's ``inet_diag_msg`` are walked too, up to the message's length, each an
``nlattr`` (native u16 length, header included, and u16 type, whose two top
bits are flags), the next at its length rounded up to 4. An attribute shorter
than its 4-byte header or running past the message (or 1-3 bytes left over)
makes the list malformed: the message is counted malformed once and still gives
its row (its inet_diag_msg is whole); the attributes from the fault on are
ignored. The last INET_DIAG_INFO (type 2) before it is the socket's ``struct
tcp_info`` (include/uapi/linux/tcp.h), read at fixed offsets as far as its own
length goes: tcpi_state (u8 at 0), tcpi_rtt (u32 at 68), tcpi_total_retrans
(u32 at 100), tcpi_bytes_acked (u64 at 120), tcpi_bytes_received (u64 at 128),
tcpi_segs_out (u32 at 136), tcpi_segs_in (u32 at 140), tcpi_min_rtt (u32 at
148: 2**32 - 1 when no segment was ever acknowledged), tcpi_bytes_sent and
tcpi_bytes_retrans (u64 at 200 and 208). An older kernel's shorter struct
leaves the fields past its end unknown (their KNOWN_* bits clear, value 0), a
newer kernel's longer one has the rest ignored; ``data_bytes_sent`` is unknown
also when tcpi_bytes_retrans exceeds tcpi_bytes_sent (no kernel sends that). A
row without the attribute has nothing known. Without ``info`` no attribute is
looked at: a dump pays nothing for it.

Rows agree with /proc's: for a listening socket netlink reports the backlog
limit as wqueue where /proc prints a tx_queue of 0, so LISTEN rows get 0.
"""

from __future__ import annotations

import struct

import numpy as np

from ..schema import (
    CLOSE_INFO_DTYPE,
    KNOWN_BYTES_RECEIVED,
    KNOWN_BYTES_SENT,
    KNOWN_DATA_BYTES_SENT,
    KNOWN_MIN_RTT,
    KNOWN_RETRANSMITS,
    KNOWN_RTT,
    KNOWN_SEGMENTS_RECEIVED,
    KNOWN_SEGMENTS_SENT,
    KNOWN_STATE,
    check_close_info,
    check_rows,
)

NLMSG_HEADER = struct.Struct("=IHHII")
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_DUMP_INTR = 0x10
DIAG_MSG_BYTES = 72
AF_INET, AF_INET6 = 2, 10
TCP_LISTEN = 10
MAX_STATE = 11
EPROTO = 71              # an NLMSG_ERROR too short to hold its code

#: Bits of decode_into's ``status``.
STATUS_DONE = 1          # NLMSG_DONE or NLMSG_ERROR seen: the dump is over
STATUS_INTERRUPTED = 2   # NLM_F_DUMP_INTR seen: the table changed during the dump

_FAMILY = {AF_INET: 4, AF_INET6: 6}
_ERROR_CODE = struct.Struct("=i")

NLA_HEADER = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF                   # the top bits are NLA_F_NESTED, NLA_F_NET_BYTEORDER
INET_DIAG_INFO = 2
_U8, _U32, _U64 = struct.Struct("=B"), struct.Struct("=I"), struct.Struct("=Q")
#: struct tcp_info: (field, offset, format, KNOWN_* bit); known when the struct reaches
#: the field's end.
TCP_INFO_FIELDS = (
    ("state", 0, _U8, KNOWN_STATE),                      # tcpi_state
    ("rtt_us", 68, _U32, KNOWN_RTT),                     # tcpi_rtt
    ("retransmits", 100, _U32, KNOWN_RETRANSMITS),       # tcpi_total_retrans
    ("bytes_sent", 120, _U64, KNOWN_BYTES_SENT),         # tcpi_bytes_acked
    ("bytes_received", 128, _U64, KNOWN_BYTES_RECEIVED), # tcpi_bytes_received
    ("segments_sent", 136, _U32, KNOWN_SEGMENTS_SENT),   # tcpi_segs_out
    ("segments_received", 140, _U32, KNOWN_SEGMENTS_RECEIVED),  # tcpi_segs_in
    ("min_rtt_us", 148, _U32, KNOWN_MIN_RTT),            # tcpi_min_rtt
)
TCPI_BYTES_SENT, TCPI_BYTES_RETRANS = 200, 208           # u64 each: data_bytes_sent


def _info_attribute(view: memoryview, start: int, end: int) -> tuple[int, int, bool]:
    """The value (offset, length) of the last INET_DIAG_INFO among the attributes in
    ``view[start:end]`` before any fault ((-1, 0): none), and whether there was one."""
    found, length, pos = -1, 0, start
    while pos < end:
        if end - pos < NLA_HEADER.size:
            return found, length, True
        size, kind = NLA_HEADER.unpack_from(view, pos)
        if size < NLA_HEADER.size or size > end - pos:
            return found, length, True
        if kind & NLA_TYPE_MASK == INET_DIAG_INFO:
            found, length = pos + NLA_HEADER.size, size - NLA_HEADER.size
        pos += min((size + 3) & ~3, end - pos)
    return found, length, False


def _info_from(view: memoryview, attributes: list[tuple[int, int]], info: np.ndarray,
               start: int) -> None:
    """Fill info[start:] from each row's tcp_info (offset, length); offset -1: none."""
    records = np.zeros(len(attributes), dtype=CLOSE_INFO_DTYPE)
    columns: dict[str, list[int]] = {name: [] for name, *_ in TCP_INFO_FIELDS}
    columns["data_bytes_sent"] = []
    known: list[int] = []
    for offset, length in attributes:
        bits = 0
        for name, at, field, bit in TCP_INFO_FIELDS:
            if offset >= 0 and length >= at + field.size:
                columns[name].append(field.unpack_from(view, offset + at)[0])
                bits |= bit
            else:
                columns[name].append(0)
        sent = retransmitted = 0
        if offset >= 0 and length >= TCPI_BYTES_RETRANS + _U64.size:
            sent = _U64.unpack_from(view, offset + TCPI_BYTES_SENT)[0]
            retransmitted = _U64.unpack_from(view, offset + TCPI_BYTES_RETRANS)[0]
            if retransmitted <= sent:
                bits |= KNOWN_DATA_BYTES_SENT
        columns["data_bytes_sent"].append(sent - retransmitted if bits & KNOWN_DATA_BYTES_SENT
                                          else 0)
        known.append(bits)
    for name, values in columns.items():
        records[name] = values
    records["known"] = known
    info[start:start + len(records)] = records


def _rows_from(data: bytes | memoryview, payloads: list[int], out: np.ndarray, start: int) -> None:
    """Decode the inet_diag_msg at each payload offset into out[start:], column-wise."""
    count = len(payloads)
    raw = np.frombuffer(data, dtype=np.uint8)
    msg = raw[np.asarray(payloads, dtype=np.intp)[:, None] + np.arange(DIAG_MSG_BYTES)]
    words = msg.view(np.uint32)                           # native u32 columns, 18 per message
    rows = out[start:start + count]
    family = np.where(msg[:, 0] == AF_INET, 4, 6).astype(np.uint8)
    rows["family"] = family
    rows["state"] = msg[:, 1]
    rows["timer"] = msg[:, 2]
    rows["retransmits"] = msg[:, 3]
    rows["local_port"] = msg[:, 4].astype(np.uint16) << 8 | msg[:, 5]
    rows["remote_port"] = msg[:, 6].astype(np.uint16) << 8 | msg[:, 7]
    local, remote = msg[:, 8:24].copy(), msg[:, 24:40].copy()
    ipv4 = family == 4
    local[ipv4, 4:] = 0
    remote[ipv4, 4:] = 0
    rows["local_addr"] = local
    rows["remote_addr"] = remote
    rows["rx_queue"] = words[:, 14]
    rows["tx_queue"] = np.where(msg[:, 1] == TCP_LISTEN, 0, words[:, 15])
    rows["uid"] = words[:, 16]
    rows["inode"] = words[:, 17]
    rows["netns"] = 0
    rows["cookie"] = words[:, 11].astype(np.uint64) | words[:, 12].astype(np.uint64) << np.uint64(32)


def decode_into(data: bytes | bytearray | memoryview, out: np.ndarray, start: int, seq: int,
                msg_type: int, info: np.ndarray | None = None
                ) -> tuple[int, int, int, int, int]:
    """Decode the messages in ``data`` into ``out[start:]`` (and, given ``info``, an
    array of CLOSE_INFO_DTYPE at least as long as ``out``, what each socket carried
    into ``info[start:]``: ``info[i]`` describes ``out[i]``).

    Returns ``(end, consumed, malformed, status, error)``: rows fill
    ``out[start:end]``; ``consumed`` bytes were walked (less than ``data``
    when ``out`` filled up: call again with the rest and more room, or when
    the dump ended); ``status`` has the STATUS_* bits; ``error`` is the errno
    of an NLMSG_ERROR reply, else 0.
    """
    check_rows(out, "out", writable=True)
    if info is not None:
        check_close_info(info, len(out))
    if not 0 <= start <= len(out):
        raise ValueError(f"start {start} is outside out (0..{len(out)})")
    view = memoryview(data).cast("B")
    length = len(view)
    capacity = len(out)
    end, pos, malformed, status, error = start, 0, 0, 0, 0
    payloads: list[int] = []
    attributes: list[tuple[int, int]] = []
    while pos < length:
        if length - pos < NLMSG_HEADER.size:
            malformed += 1
            pos = length
            break
        size, kind, flags, sequence, _ = NLMSG_HEADER.unpack_from(view, pos)
        if size < NLMSG_HEADER.size or size > length - pos:
            malformed += 1
            pos = length
            break
        step = min((size + 3) & ~3, length - pos)
        if sequence == seq:
            if kind == NLMSG_DONE:
                if size >= NLMSG_HEADER.size + 4:
                    code = _ERROR_CODE.unpack_from(view, pos + NLMSG_HEADER.size)[0]
                    error = -code if code < 0 else 0
                status |= STATUS_DONE
                pos += step
                break
            if kind == NLMSG_ERROR:
                code = (_ERROR_CODE.unpack_from(view, pos + NLMSG_HEADER.size)[0]
                        if size >= NLMSG_HEADER.size + 4 else -EPROTO)
                if code != 0:
                    error = -code if code < 0 else code
                    status |= STATUS_DONE
                    pos += step
                    break
            elif kind == msg_type:
                payload = pos + NLMSG_HEADER.size
                if (size - NLMSG_HEADER.size < DIAG_MSG_BYTES or view[payload] not in _FAMILY
                        or not 1 <= view[payload + 1] <= MAX_STATE):
                    malformed += 1
                else:
                    if end == capacity:
                        break                            # out is full: this message is left
                    payloads.append(payload)
                    end += 1
                    if info is not None:
                        found, found_length, faulty = _info_attribute(
                            view, payload + DIAG_MSG_BYTES, pos + size)
                        attributes.append((found, found_length))
                        malformed += faulty
                    if flags & NLM_F_DUMP_INTR:
                        status |= STATUS_INTERRUPTED
        pos += step
    if payloads:
        _rows_from(view, payloads, out, start)
        if info is not None:
            _info_from(view, attributes, info, start)
    return end, pos, malformed, status, error
