"""Both parsers on tables in the kernel's exact format, checked field by field."""

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
from kernel_format import Conn, row_line, table

import tcpfast
from tcpfast import CONNECTION_DTYPE

DATA = Path(__file__).parent / "data" / "proc" / "net"


def run(parse_into, data: bytes, family: int, final: bool = True):
    out = np.empty(data.count(b"\n") + 1, dtype=CONNECTION_DTYPE)
    end, consumed, malformed = parse_into(data, family, out, 0, final)
    return out[:end], consumed, malformed


def address(row, field: str) -> str:
    """The C library's text of an address: the same on every Python (3.13's
    ipaddress prints IPv4-mapped addresses dotted, older ones in hex)."""
    family = int(row["family"])
    packed = bytes(row[field])[: 4 if family == 4 else 16]
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, packed)


def fields(row) -> tuple:
    return (address(row, "local_addr"), int(row["local_port"]), address(row, "remote_addr"),
            int(row["remote_port"]), int(row["state"]), int(row["tx_queue"]),
            int(row["rx_queue"]), int(row["uid"]), int(row["inode"]))


def test_seed_like_ipv4_table_field_by_field(parse_into):
    data = (DATA / "tcp").read_bytes()
    assert b"3500007F:0035" in data and b":0050 " in data and b":01BB " in data
    assert all(len(line) == 149 for line in data.splitlines())    # the kernel's padding
    rows, consumed, malformed = run(parse_into, data, 4)
    assert (consumed, malformed) == (len(data), 0)
    assert [fields(row) for row in rows] == [
        ("0.0.0.0", 8089, "0.0.0.0", 0, 0x0A, 0, 0, 0, 31001),
        ("127.0.0.53", 53, "0.0.0.0", 0, 0x0A, 0, 0, 101, 17744),          # the resolver
        ("0.0.0.0", 22, "0.0.0.0", 0, 0x0A, 0, 0, 0, 21987),
        ("10.162.15.225", 41164, "172.217.13.110", 443, 0x01, 0, 0, 1000, 2710532),
        ("10.162.15.225", 36088, "91.189.91.15", 80, 0x01, 0x1F4, 0, 1000, 2710600),
        ("10.162.15.225", 52384, "169.254.169.254", 80, 0x06, 0, 0, 0, 0),  # TIME_WAIT
        ("10.162.15.225", 22, "204.225.215.59", 55627, 0x01, 0, 0x24, 0, 2709000),
    ]
    assert set(rows["family"].tolist()) == {4}
    assert not rows["local_addr"][:, 4:].any() and not rows["remote_addr"][:, 4:].any()


def test_ipv6_table_loopback_mapped_and_global(parse_into):
    data = (DATA / "tcp6").read_bytes()
    rows, consumed, malformed = run(parse_into, data, 6)
    assert (consumed, malformed) == (len(data), 0)
    assert [fields(row) for row in rows] == [
        ("::", 22, "::", 0, 0x0A, 0, 0, 0, 21989),
        ("::1", 22, "2001:db8::5", 443, 0x01, 0, 0, 1000, 3001),
        ("::ffff:127.0.0.1", 8080, "::ffff:127.0.0.1", 45000, 0x01, 0, 0, 33, 3002),
        ("2001:db8:0:1::10", 443, "2001:db8::ff", 50000, 0x03, 0, 0, 0, 0),
    ]
    assert set(rows["family"].tolist()) == {6}
    # The bytes are in network order, ready for inet_ntop.
    assert socket.inet_ntop(socket.AF_INET6, bytes(rows[2]["local_addr"])) == "::ffff:127.0.0.1"


def test_more_than_ten_thousand_rows_widen_the_sl_column(parse_into):
    conns = [Conn("10.0.%d.%d" % divmod(i, 256), 1024 + i, "127.0.0.1", 443, inode=i + 1)
             for i in range(10_050)]
    data = table(conns, 4)
    assert b"\n10049: " in data and b"\n9999: " in data
    rows, consumed, malformed = run(parse_into, data, 4)
    assert (len(rows), consumed, malformed) == (10_050, len(data), 0)
    assert fields(rows[10_020]) == ("10.0.39.36", 1024 + 10_020, "127.0.0.1", 443,
                                    1, 0, 0, 1000, 10_021)
    np.testing.assert_array_equal(rows["inode"], np.arange(1, 10_051))


GOOD = row_line(0, Conn("127.0.0.1", 8080, "127.0.0.1", 40000, inode=77))
MALFORMED = {
    "too few fields": "   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000",
    "non-hex digit": GOOD.replace("0100007F:1F90", "0100007G:1F90"),
    "short address": GOOD.replace("0100007F:1F90", "100007F:1F90"),
    "long address": GOOD.replace("0100007F:1F90", "00100007F:1F90"),
    "short port": GOOD.replace("0100007F:1F90", "0100007F:F90"),
    "no colon": GOOD.replace("0100007F:1F90", "0100007F-1F90"),
    "tab separator": GOOD.replace(" 01 ", "\t01 "),
    "uid over 32 bits": GOOD.replace(" 1000 ", " 4294967296 "),
    "inode over 64 bits": GOOD.replace(" 77 ", " 18446744073709551616 "),
    "carriage return after inode": GOOD.split(" 77 ")[0] + " 77\r",
    "no sl colon": GOOD.replace("0:", "0 ", 1),
    "garbage": "\x00\xff\xfe binary noise",
    "cut in the middle of an address": GOOD[:12],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_rows_are_counted_and_skipped(parse_into, name):
    good_after = row_line(2, Conn("127.0.0.2", 9, "127.0.0.3", 10, inode=78))
    data = f"{GOOD}\n{MALFORMED[name]}\n{good_after}\n".encode("latin-1")
    rows, consumed, malformed = run(parse_into, data, 4)
    assert (malformed, consumed) == (1, len(data))
    assert rows["inode"].tolist() == [77, 78]
    assert fields(rows[1]) == ("127.0.0.2", 9, "127.0.0.3", 10, 1, 0, 0, 1000, 78)


def test_largest_uid_and_inode_are_kept(parse_into):
    line = GOOD.replace(" 1000 ", " 4294967295 ").replace(" 77 ", " 18446744073709551615 ")
    rows, _, malformed = run(parse_into, line.encode(), 4)
    assert malformed == 0
    assert (int(rows[0]["uid"]), int(rows[0]["inode"])) == (2**32 - 1, 2**64 - 1)


def test_empty_header_only_and_blank_lines(parse_into):
    for data in (b"", table([], 4), table([], 6), b"\n   \n\n"):
        for family in (4, 6):
            rows, consumed, malformed = run(parse_into, data, family)
            assert (len(rows), consumed, malformed) == (0, len(data), 0)


def test_last_line_without_newline(parse_into):
    data = table([Conn("127.0.0.1", 1, "127.0.0.1", 2, inode=5)], 4, trailing_newline=False)
    rows, consumed, malformed = run(parse_into, data, 4, final=True)
    assert (rows["inode"].tolist(), consumed, malformed) == ([5], len(data), 0)
    # Mid-stream, the unterminated line waits for more data instead.
    rows, consumed, malformed = run(parse_into, data, 4, final=False)
    assert (len(rows), malformed) == (0, 0)
    assert consumed == data.rfind(b"\n") + 1


def test_a_line_cut_mid_address_then_completed_parses_once(parse_into):
    data = table([Conn("127.0.0.1", 1, "127.0.0.1", 2, inode=5),
                  Conn("127.0.0.1", 3, "127.0.0.1", 4, inode=6)], 4)
    cut = data.rfind(b"0100007F") + 4
    out = np.empty(8, dtype=CONNECTION_DTYPE)
    end, consumed, bad = parse_into(data[:cut], 4, out, 0, False)
    end, _, bad2 = parse_into(data[consumed:], 4, out, end, True)
    assert out[:end]["inode"].tolist() == [5, 6] and bad == bad2 == 0


def test_rows_from_ipv4_table_as_ipv6_are_malformed(parse_into):
    data = (DATA / "tcp").read_bytes()
    rows, _, malformed = run(parse_into, data, 6)
    assert (len(rows), malformed) == (0, 7)


def test_a_full_out_stops_before_the_next_row_and_the_rest_follows(parse_into):
    data = (DATA / "tcp").read_bytes() + b"junk\n"
    out = np.empty(3, dtype=CONNECTION_DTYPE)
    end, consumed, malformed = parse_into(data, 4, out, 0, True)
    assert (end, malformed) == (3, 0)
    assert data[consumed:].startswith(b"   3: E10FA20A:A0CC")
    more = np.empty(10, dtype=CONNECTION_DTYPE)
    end2, consumed2, malformed2 = parse_into(data[consumed:], 4, more, 0, True)
    assert (end2, consumed + consumed2, malformed2) == (4, len(data), 1)
    whole, _, _ = run(parse_into, data, 4)
    assert np.concatenate([out, more[:end2]]).tobytes() == whole.tobytes()
    assert parse_into(data, 4, out, 3, True)[:2] == (3, data.index(b"   0:"))


def test_bad_family_and_start_are_errors(parse_into):
    data = (DATA / "tcp").read_bytes()
    with pytest.raises(ValueError, match="family"):
        parse_into(data, 5, np.empty(100, dtype=CONNECTION_DTYPE), 0, True)
    for start in (-1, 101):
        with pytest.raises(ValueError, match="outside"):
            parse_into(data, 4, np.empty(100, dtype=CONNECTION_DTYPE), start, True)


def test_public_parse_warns_about_skipped_rows():
    data = f"{GOOD}\nnot a row\n".encode()
    for parse in (tcpfast.parse, tcpfast.parse_pure):
        with pytest.warns(tcpfast.MalformedRowsWarning, match="1 malformed"):
            rows = parse(data, 4)
        assert rows["inode"].tolist() == [77]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tcpfast.parse(GOOD.encode(), 4)) == 1
