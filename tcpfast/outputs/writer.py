"""Writing lines to standard output so that nothing formatted is lost or cut.

Lines go to the file descriptor with ``os.write`` until every byte is out: a
write that a signal interrupts part-way, or that a slow reader's pipe takes
only in part, goes on from where it stopped. (Python's own unbuffered stdout,
``PYTHONUNBUFFERED=1``, drops the rest of such a partial write.)
"""

from __future__ import annotations

import os

import numpy as np


def encode_lines(lines: list[str]) -> bytes:
    """Lines as the output carries them: each ended by a newline, UTF-8 with
    backslashreplace (what a comm string that is not UTF-8 becomes)."""
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace") if lines else b""


class OutputError(Exception):
    """Standard output cannot be written: a full disk, a closed descriptor, ..."""


NEWLINE = ord("\n")


class LineWriter:
    """Whole lines, written in full, to one file descriptor."""

    def __init__(self, fd: int = 1) -> None:
        try:
            os.fstat(fd)
        except OSError:
            raise OutputError("standard output is closed") from None
        self._fd = fd
        self.lines_written = 0

    def write(self, lines: list[str]) -> None:
        """Write ``lines``, each followed by a newline. A reader that has gone
        raises BrokenPipeError; any other failure OutputError."""
        if lines:
            self.write_bytes(memoryview(encode_lines(lines)))

    def write_bytes(self, data: memoryview) -> int:
        """Write ``data``, whole lines already encoded, as ``write`` does; the lines it held."""
        lines = data.nbytes and int(np.count_nonzero(np.frombuffer(data, np.uint8) == NEWLINE))
        while data:
            try:
                written = os.write(self._fd, data)
            except BrokenPipeError:
                raise
            except OSError as error:
                raise OutputError(error.strerror or str(error)) from None
            data = data[written:]
        self.lines_written += lines
        return lines
