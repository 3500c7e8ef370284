"""Inputs for checking the compiled sock_diag decoder under valgrind: reads past the end.

Every prefix of a recorded dump (the real replies of tests/data/netlink), and of
each of its messages alone, through ``decode_into`` with full, tiny and empty
outputs; the same for the recorded destroy messages, with a close info array
beside the rows (the INET_DIAG_INFO walk), also with their tcp_info cut to an
older kernel's sizes and lengthened. Each input is its own malloc'd bytes object
(PYTHONMALLOC=malloc), so memcheck sees a load past its end:

    PYTHONMALLOC=malloc valgrind --tool=memcheck --num-callers=30 \\
        python fuzz/memcheck_netlink.py 2>&1 | grep -c _netlink.c   # 0: nothing in ours
"""

import json
import pathlib
import struct

import numpy as np

from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import _netlink
from tcpfast.schema import CLOSE_INFO_DTYPE

RECORDED = pathlib.Path(__file__).parent.parent / "tests" / "data" / "netlink"
INET_DIAG_INFO = 2
#: tcp_info sizes: before tcpi_bytes_acked, before tcpi_segs_out, before tcpi_bytes_sent,
#: a cut field, 6.18's and a longer one.
INFO_LENGTHS = (0, 3, 120, 124, 136, 200, 213, 280, 300)


def messages(dump: bytes) -> list[bytes]:
    found, pos = [], 0
    while pos + 16 <= len(dump):
        size = struct.unpack_from("=I", dump, pos)[0]
        found.append(dump[pos:pos + size])
        pos += (size + 3) & ~3
    return found


def with_info_length(message: bytes, length: int) -> bytes:
    """``message`` (whole) with its INET_DIAG_INFO value cut or lengthened to ``length``."""
    head, attributes, pos = message[:16 + 72], b"", 16 + 72
    while pos + 4 <= len(message):
        size, kind = struct.unpack_from("=HH", message, pos)
        value = message[pos + 4:pos + size]
        if kind == INET_DIAG_INFO:
            value = (value + b"\x5a" * 64)[:length]
        attributes += (struct.pack("=HH", 4 + len(value), kind) + value).ljust(
            (4 + len(value) + 3) & ~3, b"\0")
        pos += (size + 3) & ~3
    whole = head + attributes
    return struct.pack("=I", len(whole)) + whole[4:]


def decode_pieces(pieces: list[bytes], seq: int, msg_type: int, with_info: bool) -> int:
    calls = 0
    for data in pieces:
        for room in (0, 1, 64):
            info = np.empty(room, dtype=CLOSE_INFO_DTYPE) if with_info else None
            _netlink.decode_into(bytes(data), np.empty(room, dtype=CONNECTION_DTYPE), 0, seq,
                                 msg_type, info)
            calls += 1
    return calls


def main() -> None:
    calls = 0
    for recording in json.loads((RECORDED / "dumps.json").read_text()):
        dump = (RECORDED / f"{recording['name']}.bin").read_bytes()
        pieces = [dump[:cut] for cut in range(len(dump) + 1)]
        pieces += [message[:cut] for message in messages(dump) for cut in range(len(message) + 1)]
        calls += decode_pieces(pieces, recording["seq"], 18, False)
        calls += decode_pieces(pieces[::7], recording["seq"], 18, True)
    for recording in json.loads((RECORDED / "destroyed.json").read_text()):
        events = messages((RECORDED / f"{recording['name']}.bin").read_bytes())
        first = b"".join(message.ljust((len(message) + 3) & ~3, b"\0") for message in events[:3])
        pieces = [first[:cut] for cut in range(len(first) + 1)]
        for message in events:
            for length in INFO_LENGTHS:
                changed = with_info_length(message, length)
                pieces += [changed[:cut] for cut in range(len(changed) + 1)]
        calls += decode_pieces(pieces, recording["seq"], 20, True)
    print(f"{calls} calls")


if __name__ == "__main__":
    main()
