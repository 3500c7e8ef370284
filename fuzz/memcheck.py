"""Inputs for checking the compiled parser under valgrind: reads past a buffer's end.

Every prefix of a row of each family (a line cut anywhere, no newline) and
the fuzz corpus, through ``parse_into`` with both families, ``final`` on and
off, and full, tiny and empty outputs. Each input is its own malloc'd bytes
object (PYTHONMALLOC=malloc), so memcheck sees an 8-byte load past its end:

    PYTHONMALLOC=malloc valgrind --tool=memcheck --num-callers=30 \\
        python fuzz/memcheck.py fuzz/corpus 2>&1 | grep -c _parse.c   # 0: nothing in ours
"""

import pathlib
import sys

import numpy as np

from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import _parse

# A row as the kernel prints it (IPv4 padded to 149 characters; IPv6 not).
ROWS = {
    4: b"   0: 0302010A:01BB 0100007F:C738 01 00000000:00000000 00:00000000 00000000"
       b"  1000        0 77 1 0000000000000000 100 0 0 10 0".ljust(149),
    6: b"   0: B80D0120000000000000000001000000:01BB 00000000000000000000000001000000:C738"
       b" 01 00000000:00000000 00:00000000 00000000  1000        0 77 1 0000000000000000"
       b" 100 0 0 10 0",
}


def inputs(corpus: pathlib.Path) -> list[bytes]:
    found = [row[:cut] for row in ROWS.values() for cut in range(len(row) + 1)]
    return found + [path.read_bytes() for path in sorted(corpus.iterdir())]


def main() -> None:
    calls = 0
    for data in inputs(pathlib.Path(sys.argv[1])):
        for family in (4, 6):
            for final in (True, False):
                for room in (0, 1, 64):
                    _parse.parse_into(bytes(data), family,
                                      np.empty(room, dtype=CONNECTION_DTYPE), 0, final)
                    calls += 1
    print(f"{calls} calls")


if __name__ == "__main__":
    main()
