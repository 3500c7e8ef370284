"""Inputs for checking the compiled sock_diag decoder under valgrind: reads past the end.

Every prefix of a recorded dump (the real replies of tests/data/netlink), and of
each of its messages alone, through ``decode_into`` with full, tiny and empty
outputs. Each input is its own malloc'd bytes object (PYTHONMALLOC=malloc), so
memcheck sees a load past its end:

    PYTHONMALLOC=malloc valgrind --tool=memcheck --num-callers=30 \\
        python fuzz/memcheck_netlink.py 2>&1 | grep -c _netlink.c   # 0: nothing in ours
"""

import json
import pathlib
import struct

import numpy as np

from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import _netlink

RECORDED = pathlib.Path(__file__).parent.parent / "tests" / "data" / "netlink"


def messages(dump: bytes) -> list[bytes]:
    found, pos = [], 0
    while pos + 16 <= len(dump):
        size = struct.unpack_from("=I", dump, pos)[0]
        found.append(dump[pos:pos + size])
        pos += (size + 3) & ~3
    return found


def main() -> None:
    calls = 0
    for recording in json.loads((RECORDED / "dumps.json").read_text()):
        dump = (RECORDED / f"{recording['name']}.bin").read_bytes()
        pieces = [dump[:cut] for cut in range(len(dump) + 1)]
        pieces += [message[:cut] for message in messages(dump) for cut in range(len(message) + 1)]
        for data in pieces:
            for room in (0, 1, 64):
                _netlink.decode_into(bytes(data), np.empty(room, dtype=CONNECTION_DTYPE), 0,
                                     recording["seq"], 18)
                calls += 1
    print(f"{calls} calls")


if __name__ == "__main__":
    main()
