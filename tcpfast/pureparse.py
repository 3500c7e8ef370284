"""Pure-Python parser of /proc/net/tcp and /proc/net/tcp6 text (the fallback).

It accepts exactly what the compiled parser (``_parse.pyx``) accepts and gives
the same rows and the same malformed count for every input. The grammar of a
line (fields are separated by one or more spaces, ``HEX`` is ``[0-9A-Fa-f]``):

    *sl:  LOCAL:PORT  REMOTE:PORT  ST  TXQ:RXQ  TR:WHEN  RETR  UID  TIMEOUT  INODE  rest...

- ``sl`` is one or more decimal digits; leading spaces are allowed.
- ``LOCAL``/``REMOTE`` are 8 HEX (IPv4) or 32 HEX (IPv6): 32-bit words, each
  the host-order print of network-order bytes; ``PORT`` is exactly 4 HEX.
- ``ST`` is exactly 2 HEX; ``TXQ``, ``RXQ`` and ``RETR`` 1-8 HEX; ``TR`` 1-2
  HEX; ``WHEN`` 1-16 HEX; ``UID`` 1-10 decimal digits below 2**32;
  ``TIMEOUT`` an optional ``-`` and 1-10 decimal digits; ``INODE`` 1-20
  decimal digits below 2**64, followed by a space or the end of the line.
  Anything after ``INODE`` (later kernels add fields) is ignored.
- A line of only spaces, or whose first field is ``sl`` (the header), is skipped;
  any other line that does not match is malformed: counted and skipped.
"""

from __future__ import annotations

import re

import numpy as np

_HEX = rb"[0-9A-Fa-f]"
_SEP = rb" +"


def _line_pattern(address_digits: int) -> re.Pattern[bytes]:
    address = rb"(%s{%d}):(%s{4})" % (_HEX, address_digits, _HEX)
    return re.compile(
        rb"^ *[0-9]+:" + _SEP + address + _SEP + address + _SEP
        + rb"(%s{2})" % _HEX + _SEP                       # state
        + rb"(%s{1,8}):(%s{1,8})" % (_HEX, _HEX) + _SEP   # tx_queue:rx_queue
        + rb"(%s{1,2}):%s{1,16}" % (_HEX, _HEX) + _SEP    # timer:when
        + rb"(%s{1,8})" % _HEX + _SEP                     # retransmits
        + rb"([0-9]{1,10})" + _SEP                        # uid
        + rb"-?[0-9]{1,10}" + _SEP                        # timeout
        + rb"([0-9]{1,20})(?= |$)",                       # inode
        re.MULTILINE,
    )


_ROW = {4: _line_pattern(8), 6: _line_pattern(32)}
# Blank lines and the header; at the very end of text that ends in a newline
# (or is empty) this also matches the empty position after it: see _skipped().
_BLANK_OR_HEADER = re.compile(rb"^ *(?:sl(?= |$)|$)", re.MULTILINE)

_HEX_VALUE = np.full(256, 0xFF, dtype=np.uint8)
for _digit in b"0123456789":
    _HEX_VALUE[_digit] = _digit - ord("0")
for _digit in b"ABCDEF":
    _HEX_VALUE[_digit] = _HEX_VALUE[_digit + 32] = _digit - ord("A") + 10
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_NATIVE_U4 = np.dtype(np.uint32).newbyteorder("=")


def _hex_bytes(tokens: list[bytes], width: int) -> np.ndarray:
    """Fixed-width hex tokens (already validated) to an (n, width // 2) byte array."""
    nibbles = _HEX_VALUE[np.frombuffer(b"".join(tokens), dtype=np.uint8)].reshape(-1, width)
    return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def _addresses(tokens: list[bytes]) -> np.ndarray:
    """Address tokens to (n, 16) network-order bytes, as the kernel's words lie in memory."""
    printed = _hex_bytes(tokens, len(tokens[0]))              # each word big-endian
    words = printed.view(">u4").astype(_NATIVE_U4)            # host integers, as printed
    out = np.zeros((len(tokens), 16), dtype=np.uint8)
    out[:, : printed.shape[1]] = words.view(np.uint8)
    return out


def _ports(tokens: list[bytes]) -> np.ndarray:
    return _hex_bytes(tokens, 4).view(">u2").ravel()


def _skipped(text: bytes) -> int:
    phantom = 1 if not text or text.endswith(b"\n") else 0
    return len(_BLANK_OR_HEADER.findall(text)) - phantom


def _line_count(text: bytes) -> int:
    return text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)


def _valid_columns(matches: list[tuple[bytes, ...]]) -> list[list]:
    """Regex matches to columns, dropping rows whose uid or inode overflows."""
    if not matches:
        return []
    columns = [list(column) for column in zip(*matches)]
    uids, inodes = list(map(int, columns[9])), list(map(int, columns[10]))
    if max(uids) > _U32_MAX or max(inodes) > _U64_MAX:
        kept = [row for row, uid, inode in zip(matches, uids, inodes)
                if uid <= _U32_MAX and inode <= _U64_MAX]
        return _valid_columns(kept)
    return columns[:9] + [uids, inodes]


def parse_into(data: bytes, family: int, out: np.ndarray, start: int,
               final: bool) -> tuple[int, int, int]:
    """Parse the lines of ``data`` into ``out[start:]``.

    Returns ``(end, consumed, malformed)``: rows are ``out[start:end]``,
    ``consumed`` bytes of ``data`` were used (all of it when ``final``; else up
    to the last newline, so a partial line waits for more data), and
    ``malformed`` lines were skipped. ``out`` must have a row for every line.
    """
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    text = bytes(data)
    if not final:
        text = text[: text.rfind(b"\n") + 1]
    lines = _line_count(text)
    capacity = out.shape[0]
    if start < 0 or capacity - start < lines:
        raise ValueError(f"out has room for {capacity - start} rows, data has {lines} lines")
    matches = _ROW[family].findall(text)
    columns = _valid_columns(matches)
    count = len(columns[0]) if columns else 0
    rows = out[start:start + count]
    if count:
        (local, local_port, remote, remote_port, state, tx_queue, rx_queue, timer,
         retransmits, uids, inodes) = columns
        rows["local_addr"] = _addresses(local)
        rows["remote_addr"] = _addresses(remote)
        rows["local_port"] = _ports(local_port)
        rows["remote_port"] = _ports(remote_port)
        rows["family"] = family
        rows["state"] = _hex_bytes(state, 2).ravel()
        rows["tx_queue"] = [int(value, 16) for value in tx_queue]
        rows["rx_queue"] = [int(value, 16) for value in rx_queue]
        rows["timer"] = [int(value, 16) for value in timer]
        rows["retransmits"] = [int(value, 16) for value in retransmits]
        rows["uid"] = uids
        rows["inode"] = inodes
    malformed = lines - _skipped(text) - count
    return start + count, len(text), malformed

