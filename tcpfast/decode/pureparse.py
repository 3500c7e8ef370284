"""Pure-Python parser of /proc/net/tcp and /proc/net/tcp6 text (the fallback).

It accepts exactly what the compiled parser (``_parse.pyx``) accepts and gives
the same rows, the same malformed count and the same stopping point for every
input. The grammar of a line (fields are separated by one or more spaces,
``HEX`` is ``[0-9A-Fa-f]``):

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

Speed: one regular expression finds the rows; rows in the kernel's canonical
layout (single spaces, ``%08X`` widths: all of them, in practice) are decoded
column-wise with numpy; any other valid row is decoded field by field.
"""

from __future__ import annotations

import re
import sys
from itertools import compress
from operator import itemgetter

import numpy as np

from ..schema import check_rows

_HEX = rb"[0-9A-Fa-f]"
_SEP = rb" +"
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


def _fields_pattern(address_digits: int, group: bytes) -> bytes:
    """LOCAL:PORT ... RETR, each field wrapped in ``group`` (capturing or not)."""
    field = lambda body: group % body  # noqa: E731
    address = field(rb"%s{%d}" % (_HEX, address_digits)) + b":" + field(rb"%s{4}" % _HEX)
    return (address + _SEP + address + _SEP + field(rb"%s{2}" % _HEX) + _SEP
            + field(rb"%s{1,8}" % _HEX) + b":" + field(rb"%s{1,8}" % _HEX) + _SEP
            + field(rb"%s{1,2}" % _HEX) + b":" + rb"%s{1,16}" % _HEX + _SEP
            + field(rb"%s{1,8}" % _HEX))


def _row_pattern(address_digits: int) -> re.Pattern[bytes]:
    """A whole row: groups (fields, uid, inode), one match per row line."""
    return re.compile(
        rb"^ *[0-9]+:" + _SEP + rb"(" + _fields_pattern(address_digits, rb"(?:%s)") + rb")"
        + _SEP + rb"([0-9]{1,10})" + _SEP + rb"-?[0-9]{1,10}" + _SEP
        + rb"([0-9]{1,20})(?= |$)",
        re.MULTILINE,
    )


_ROW = {4: _row_pattern(8), 6: _row_pattern(32)}
_FIELDS = {4: re.compile(_fields_pattern(8, rb"(%s)")), 6: re.compile(_fields_pattern(32, rb"(%s)"))}
# A blank line or the header, at the start of the text.
_SKIPPED_LINE = re.compile(rb" *(?:sl(?=[ \n]|\Z)|(?=\n|\Z))")

# The kernel's layout of the fields group, one letter per field (WHEN, "W",
# is not kept): family -> (length, [(offset, width) per kept field], separator offsets).
_CANONICAL = {}
for _family, _digits in ((4, 8), (6, 32)):
    _layout = b"%s:PPPP %s:QQQQ SS TTTTTTTT:XXXXXXXX MM:WWWWWWWW EEEEEEEE" % (
        b"L" * _digits, b"R" * _digits)
    _CANONICAL[_family] = (
        len(_layout),
        [(_layout.index(letter), _layout.count(letter)) for letter in b"LPRQSTXME"],
        [i for i, c in enumerate(_layout) if c in b" :"],
    )

_HEX_VALUE = np.full(256, 0xFF, dtype=np.uint8)
for _digit in b"0123456789":
    _HEX_VALUE[_digit] = _digit - ord("0")
for _digit in b"ABCDEF":
    _HEX_VALUE[_digit] = _HEX_VALUE[_digit + 32] = _digit - ord("A") + 10
_BIG_ENDIAN: dict[int, np.dtype] = {1: np.dtype(np.uint8), 2: np.dtype(">u2"), 4: np.dtype(">u4")}


def _hex_column(nibbles: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Fixed-width hex digits at ``offset`` of each row: their values (widths 2, 4, 8)."""
    high = nibbles[:, offset:offset + width:2].astype(np.uint8) << 4
    octets = np.ascontiguousarray(high | nibbles[:, offset + 1:offset + width:2])
    return octets.view(_BIG_ENDIAN[width // 2]).ravel()


def _address_column(nibbles: np.ndarray, offset: int, width: int) -> np.ndarray:
    """Address digits to (n, 16) network-order bytes: each printed word is a host integer."""
    words = np.stack([_hex_column(nibbles, offset + 8 * i, 8) for i in range(width // 8)], 1)
    out = np.zeros((len(nibbles), 16), dtype=np.uint8)
    out[:, : width // 2] = words.astype(np.uint32).view(np.uint8)     # native byte order
    return out


def _decode_canonical(nibbles: np.ndarray, family: int, rows: np.ndarray) -> None:
    """Fill ``rows`` from the (n, length) hex digit values of canonical field groups."""
    (local, local_port, remote, remote_port, state, tx_queue, rx_queue, timer,
     retransmits) = _CANONICAL[family][1]
    rows["local_addr"] = _address_column(nibbles, *local)
    rows["remote_addr"] = _address_column(nibbles, *remote)
    for name, (offset, width) in (("local_port", local_port), ("remote_port", remote_port),
                                  ("state", state), ("tx_queue", tx_queue),
                                  ("rx_queue", rx_queue), ("timer", timer),
                                  ("retransmits", retransmits)):
        rows[name] = _hex_column(nibbles, offset, width)


def _decode_other(fields: list[bytes], family: int, rows: np.ndarray) -> None:
    """Fill ``rows`` from valid field groups in any other layout, one by one."""
    pattern = _FIELDS[family]
    for row, text in zip(rows, fields):
        (local, local_port, remote, remote_port, state, tx_queue, rx_queue, timer,
         retransmits) = pattern.fullmatch(text).groups()  # type: ignore[union-attr]  # _ROW matched it
        for name, address in (("local_addr", local), ("remote_addr", remote)):
            words = (int(address[i:i + 8], 16) for i in range(0, len(address), 8))
            row[name] = np.frombuffer(b"".join(w.to_bytes(4, sys.byteorder) for w in words)
                                      .ljust(16, b"\0"), dtype=np.uint8)
        row["local_port"], row["remote_port"] = int(local_port, 16), int(remote_port, 16)
        row["state"], row["timer"] = int(state, 16), int(timer, 16)
        row["tx_queue"], row["rx_queue"] = int(tx_queue, 16), int(rx_queue, 16)
        row["retransmits"] = int(retransmits, 16)


def _split_canonical(fields: list[bytes], family: int) -> tuple[np.ndarray, np.ndarray]:
    """Which field groups are in the canonical layout, and the hex digit values of
    those as an (n, length) array. Canonical: the right length, a separator at
    each separator offset and a hex digit everywhere else."""
    length, _, separators = _CANONICAL[family]
    right_length = np.fromiter(map(len, fields), dtype=np.int64, count=len(fields)) == length
    everything = right_length.all()
    chars = np.frombuffer(b"".join(fields if everything else compress(fields, right_length)),
                          dtype=np.uint8).reshape(-1, length)
    nibbles = _HEX_VALUE[chars]
    digits = np.ones(length, dtype=bool)
    digits[separators] = False
    at_separators = chars[:, separators]
    laid_out = (((at_separators == ord(" ")) | (at_separators == ord(":"))).all(axis=1)
                & (nibbles[:, digits] < 16).all(axis=1))
    canonical = right_length.copy()
    canonical[right_length] = laid_out
    return canonical, nibbles if laid_out.all() else nibbles[laid_out]


_FIELDS_OF, _UID_OF, _INODE_OF = itemgetter(0), itemgetter(1), itemgetter(2)


def _fits(uid: int, inode: int) -> bool:
    """A uid fits 32 bits and an inode 64: else the row is malformed."""
    return uid <= _U32_MAX and inode <= _U64_MAX


def _valid(matches: list[tuple[bytes, bytes, bytes]]) -> tuple[list, list[int], list[int]]:
    """Field groups, uids and inodes of the matches, without rows whose numbers overflow."""
    if not matches:
        return [], [], []
    fields = list(map(_FIELDS_OF, matches))
    uids = list(map(int, map(_UID_OF, matches)))
    inodes = list(map(int, map(_INODE_OF, matches)))
    if max(uids) > _U32_MAX or max(inodes) > _U64_MAX:
        keep = list(map(_fits, uids, inodes))
        return (list(compress(fields, keep)), list(compress(uids, keep)),
                list(compress(inodes, keep)))
    return fields, uids, inodes


def _skipped_lines(text: bytes, unmatched: int) -> int:
    """How many of the lines that are not rows are blank or the header."""
    if unmatched == 0:
        return 0
    if unmatched == 1 and _SKIPPED_LINE.match(text):      # just the header, as usual
        return 1
    lines = text.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return sum(1 for line in lines if _SKIPPED_LINE.match(line))


def _line_count(text: bytes) -> int:
    return text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)


def _row_line_start(text: bytes, family: int, index: int) -> int:
    """Where the line of the ``index``-th valid row (from 0) begins; the text's
    length if it has no more rows. Reads only as far as it needs."""
    valid = 0
    for match in _ROW[family].finditer(text):
        if _fits(int(match[2]), int(match[3])):
            if valid == index:
                return match.start()
            valid += 1
    return len(text)


def parse_into(data: bytes | memoryview, family: int, out: np.ndarray, start: int,
               final: bool) -> tuple[int, int, int]:
    """Parse the lines of ``data`` into ``out[start:]`` until either runs out.

    Returns ``(end, consumed, malformed)``: rows are ``out[start:end]``;
    ``consumed`` bytes of ``data`` were used: all of it when ``final``, else up
    to the last newline (a partial line waits for more data), and less when
    ``out`` filled up (the next row's line is left for the next call);
    ``malformed`` lines among them were skipped.
    """
    check_rows(out, "out", writable=True)
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    capacity = out.shape[0]
    if not 0 <= start <= capacity:
        raise ValueError(f"start {start} is outside out (0..{capacity})")
    text = bytes(data)
    if not final:
        text = text[: text.rfind(b"\n") + 1]
    lines = _line_count(text)
    if lines > capacity - start:                  # may not fit: stop before the row that does not
        cut = _row_line_start(text, family, capacity - start)
        if cut < len(text):
            return parse_into(text[:cut], family, out, start, True)
    matches = _ROW[family].findall(text)
    fields, uids, inodes = _valid(matches)
    count = len(fields)
    rows = out[start:start + count]
    if count:
        canonical, nibbles = _split_canonical(fields, family)
        if canonical.all():
            _decode_canonical(nibbles, family, rows)
        else:                                     # decode each kind apart, then put back
            part = np.zeros(len(nibbles), dtype=out.dtype)
            _decode_canonical(nibbles, family, part)
            rows[canonical] = part
            part = np.zeros(count - len(nibbles), dtype=out.dtype)
            _decode_other(list(compress(fields, ~canonical)), family, part)
            rows[~canonical] = part
        rows["family"] = family
        rows["netns"] = 0
        rows["cookie"] = 0
        rows["uid"] = uids
        rows["inode"] = inodes
    unmatched = lines - len(matches)
    malformed = unmatched - _skipped_lines(text, unmatched) + (len(matches) - count)
    return start + count, len(text), malformed
