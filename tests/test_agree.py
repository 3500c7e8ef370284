"""The compiled and the pure-Python parser agree on every input, valid or not."""

import ipaddress

import numpy as np
from conftest import COMPILED_PARSE_INTO, needs_compiled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_format import Conn, table

from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import pureparse

pytestmark = needs_compiled

ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.one_of(
    st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    st.sampled_from(["::", "::1", "fe80::1"]),
    ipv4.map(lambda a: f"::ffff:{a}"),                      # IPv4-mapped
)
port = st.integers(0, 65535)


def conns(address):
    return st.builds(Conn, address, port, address, port,
                     state=st.integers(0, 255), tx_queue=st.integers(0, 2**32 - 1),
                     rx_queue=st.integers(0, 2**32 - 1), uid=st.integers(0, 2**32 - 1),
                     inode=st.integers(0, 2**64 - 1), timer=st.integers(0, 255),
                     retransmits=st.integers(0, 2**32 - 1))


tables = st.one_of(
    st.tuples(st.just(4), st.lists(conns(ipv4), max_size=40)),
    st.tuples(st.just(6), st.lists(conns(ipv6), max_size=40)),
)


def both(data: bytes, family: int, final: bool, room: int | None = None):
    """Run both parsers (into ``room`` rows, or enough); assert they agree; return the result."""
    results = []
    for parse_into in (COMPILED_PARSE_INTO, pureparse.parse_into):
        rows = data.count(b"\n") + 1 if room is None else room
        out = np.empty(rows + 1, dtype=CONNECTION_DTYPE)
        end, consumed, malformed = parse_into(data, family, out, 1, final)
        results.append((out[1:end].tobytes(), end, consumed, malformed))
    assert results[0] == results[1]
    return results[1]


EDITS = ["replace", "insert", "delete", "truncate"]


def edit(text: bytearray, what: str, at: int, byte: int) -> None:
    """One edit of ``text`` in place: replace, insert or delete the byte at ``at``,
    or cut the text there (past the end, replace and delete do nothing)."""
    if what == "replace" and at < len(text):
        text[at] = byte
    elif what == "insert":
        text.insert(at, byte)
    elif what == "delete" and at < len(text):
        del text[at]
    elif what == "truncate":
        del text[at:]


@settings(max_examples=300, deadline=None)
@given(tables, st.booleans())
def test_generated_tables_parse_to_what_was_rendered(family_conns, trailing_newline):
    family, rendered = family_conns
    data = table(rendered, family, trailing_newline)
    rows_bytes, end, consumed, malformed = both(data, family, final=True)
    assert (end - 1, consumed, malformed) == (len(rendered), len(data), 0)
    rows = np.frombuffer(rows_bytes, dtype=CONNECTION_DTYPE)
    width = 4 if family == 4 else 16
    for row, conn in zip(rows, rendered):
        assert bytes(row["local_addr"])[:width] == ipaddress.ip_address(conn.local).packed
        assert bytes(row["remote_addr"])[:width] == ipaddress.ip_address(conn.remote).packed
        assert not row["local_addr"][width:].any()
        assert (int(row["local_port"]), int(row["remote_port"]), int(row["state"]),
                int(row["tx_queue"]), int(row["rx_queue"]), int(row["uid"]),
                int(row["inode"]), int(row["family"]), int(row["timer"]),
                int(row["retransmits"])) == (
            conn.local_port, conn.remote_port, conn.state, conn.tx_queue, conn.rx_queue,
            conn.uid, conn.inode, family, conn.timer, conn.retransmits)


NOISE = b" :0123456789ABCDEFabcdef-\n\r\tslGx\x00\xff"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables, st.data())
def test_mutated_tables_agree(family_conns, data):
    family, rendered = family_conns
    text = bytearray(table(rendered, family))
    for _ in range(data.draw(st.integers(1, 8))):
        spaces = [i for i in range(1, len(text)) if text[i] == 32 != text[i - 1]] or [0]
        at = data.draw(st.one_of(st.integers(0, len(text)), st.sampled_from(spaces)))
        what = data.draw(st.sampled_from(EDITS))
        byte = data.draw(st.sampled_from(NOISE))
        edit(text, what, at, byte)
    room = data.draw(st.none() | st.integers(0, 45))
    for final in (True, False):
        both(bytes(text), family, final, room)
    both(bytes(text), 10 - family, True)                    # the other family's grammar


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.lists(st.sampled_from(NOISE), max_size=400).map(bytes)),
       st.sampled_from([4, 6]), st.booleans(), st.none() | st.integers(0, 3))
def test_arbitrary_bytes_agree(data, family, final, room):
    both(data, family, final, room)


def single_edits(line: bytes):
    """Every line one edit away from ``line``: each byte replaced by, or preceded by,
    each noise byte, or deleted; and every prefix (a line cut short)."""
    for at in range(len(line) + 1):
        yield line[:at]
        for byte in NOISE:
            if byte != 10:
                yield line[:at] + bytes([byte]) + line[at:]
                if at < len(line):
                    yield line[:at] + bytes([byte]) + line[at + 1:]
        if at < len(line):
            yield line[:at] + line[at + 1:]


def test_every_single_edit_of_a_row_agrees():
    for family, conn in ((4, Conn("10.1.2.3", 443, "127.0.0.1", 51000, inode=77)),
                         (6, Conn("2001:db8::1", 443, "::1", 51000, inode=77))):
        line = table([conn], family).splitlines()[1]
        edits = list(single_edits(line))
        data = b"\n".join(edits)
        _, end, consumed, malformed = both(data, family, True)
        assert consumed == len(data) and malformed > 0 and end - 1 > 0
