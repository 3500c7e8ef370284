"""The sock_diag decoders: kernel-format dumps to the right rows; the compiled and the
pure-Python decoder agree on every input, cut or corrupted (no crash, no wrong row)."""

import ipaddress
import json
import os
import struct

import netlink_format as nl
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_format import Conn
from test_agree import EDITS, edit

from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import netlink_pure
from tcpfast.decode.parsing import parse_counted

try:
    from tcpfast.decode import _netlink
except ImportError:
    _netlink = None

DECODERS = {"pure": netlink_pure.decode_into}
if _netlink is not None:
    DECODERS["compiled"] = _netlink.decode_into
RECORDED = os.path.join(os.path.dirname(__file__), "data", "netlink")


def decode(decoder, data: bytes, room: int | None = None, seq: int = nl.SEQ):
    """(rows bytes, end, consumed, malformed, status, error) with one decoder."""
    out = np.empty((len(data) // 88 + 2 if room is None else room) + 1, dtype=CONNECTION_DTYPE)
    end, consumed, malformed, status, error = decoder(data, out, 1, seq, nl.TCPDIAG_GETSOCK)
    return out[1:end].tobytes(), end - 1, consumed, malformed, status, error


def both(data: bytes, room: int | None = None, seq: int = nl.SEQ):
    """Run every decoder; assert they agree; return the result."""
    results = {name: decode(decoder, data, room, seq) for name, decoder in DECODERS.items()}
    assert len(set(results.values())) == 1, results
    return results["pure"]


def rows_of(result) -> np.ndarray:
    return np.frombuffer(result[0], dtype=CONNECTION_DTYPE)


def expected_rows(conns: list[Conn]) -> np.ndarray:
    """What /proc's parser gives for the same connections: the reference."""
    from kernel_format import table
    parts = [parse_counted(table([c], c.family), c.family)[0] for c in conns]
    return np.concatenate(parts) if parts else np.empty(0, CONNECTION_DTYPE)


CONNS = [
    Conn("127.0.0.1", 8080, "0.0.0.0", 0, state=0x0A, rx_queue=3, inode=11),
    Conn("10.1.2.3", 41164, "172.217.13.110", 443, tx_queue=5, rx_queue=7, uid=1000, inode=12,
         timer=1, retransmits=2),
    Conn("2001:db8::1", 443, "2001:db8::5", 50000, state=0x06, uid=0, inode=0, timer=3),
    Conn("::ffff:127.0.0.1", 22, "::ffff:127.0.0.2", 5555, state=0x08, inode=13),
    Conn("::", 22, "::", 0, state=0x0A, inode=14),
]


def test_a_kernel_format_dump_decodes_to_the_rows_proc_gives():
    # Attributes of different lengths after each message: the decoder must walk the headers.
    extras = [b"", nl.attribute(8, b"\x00"), nl.attribute(1, bytes(13)) + nl.attribute(2, b"ab"),
              b"", nl.attribute(21, bytes(8))]
    data = b"".join(nl.socket_message(c, extra, wqueue=128 if c.state == 0x0A else None)
                    for c, extra in zip(CONNS, extras)) + nl.done()
    result = both(data)
    assert result[1:] == (len(CONNS), len(data), 0, netlink_pure.STATUS_DONE, 0)
    assert rows_of(result).tobytes() == expected_rows(CONNS).tobytes()   # LISTEN: tx_queue 0


def test_the_socket_cookie_is_decoded_and_the_rest_is_procs():
    cookies = [0x1122334455667788, 1, 2**64 - 1, 0x0000000100000000]
    data = b"".join(nl.socket_message(c, cookie=cookie) for c, cookie in zip(CONNS, cookies))
    rows = rows_of(both(data + nl.done())).copy()
    assert rows["cookie"].tolist() == cookies
    rows["cookie"] = 0
    assert rows.tobytes() == expected_rows(CONNS[:4]).tobytes()


def test_foreign_sequence_numbers_noop_and_ack_are_skipped_and_done_stops_the_walk():
    data = (nl.socket_message(CONNS[0]) + nl.message(18, nl.diag_msg(CONNS[1]), seq=7)
            + nl.message(nl.NLMSG_NOOP, b"") + nl.error(0) + nl.socket_message(CONNS[2])
            + nl.done() + nl.socket_message(CONNS[3]))
    result = both(data)
    assert rows_of(result).tobytes() == expected_rows([CONNS[0], CONNS[2]]).tobytes()
    assert result[3:] == (0, netlink_pure.STATUS_DONE, 0)
    assert result[2] == len(data) - len(nl.socket_message(CONNS[3]))


def test_an_error_reply_ends_the_dump_with_its_errno():
    result = both(nl.socket_message(CONNS[0]) + nl.error(22) + nl.socket_message(CONNS[1]))
    assert (result[1], result[4], result[5]) == (1, netlink_pure.STATUS_DONE, 22)


def test_a_dump_that_failed_part_way_ends_with_the_errno_in_its_done():
    result = both(nl.socket_message(CONNS[0]) + nl.done(code=2))
    assert (result[1], result[4], result[5]) == (1, netlink_pure.STATUS_DONE, 2)


def test_dump_interrupted_flag_is_reported():
    data = nl.message(18, nl.diag_msg(CONNS[1]), flags=nl.NLM_F_MULTI | nl.NLM_F_DUMP_INTR)
    assert both(data)[4] == netlink_pure.STATUS_INTERRUPTED


def test_short_wrong_family_or_state_messages_are_malformed_and_skipped():
    bad_family = bytearray(nl.diag_msg(CONNS[1]))
    bad_family[0] = 1
    bad_state = bytearray(nl.diag_msg(CONNS[1]))
    bad_state[1] = 13                                   # bound-only: not a row /proc lists
    data = (nl.message(18, nl.diag_msg(CONNS[1])[:71]) + nl.message(18, bytes(bad_family))
            + nl.message(18, bytes(bad_state)) + nl.socket_message(CONNS[0]))
    result = both(data)
    assert (result[1], result[3]) == (1, 3)


@pytest.mark.parametrize("into_second", [10, 40], ids=["header", "payload"])
def test_a_cut_message_ends_the_walk(into_second):
    first = nl.socket_message(CONNS[0])
    data = (first + nl.socket_message(CONNS[1]))[:len(first) + into_second]
    result = both(data)
    assert (result[1], result[2], result[3]) == (1, len(data), 1)


def test_out_full_leaves_the_message_for_the_next_call():
    data = b"".join(nl.socket_message(c) for c in CONNS) + nl.done()
    whole = both(data)
    for decoder in DECODERS.values():
        rows, consumed = [], 0
        while True:
            out = np.empty(2, dtype=CONNECTION_DTYPE)
            end, used, _, status, _ = decoder(data[consumed:], out, 0, nl.SEQ, 18)
            rows.append(out[:end])
            consumed += used
            if status & netlink_pure.STATUS_DONE:
                break
        assert np.concatenate(rows).tobytes() == whole[0] and consumed == len(data)


def recorded_dumps():
    with open(os.path.join(RECORDED, "dumps.json")) as index:
        return json.load(index)


@pytest.mark.parametrize("recording", recorded_dumps(), ids=lambda r: r["name"])
def test_recorded_dumps_decode_to_the_proc_tables_recorded_with_them(recording):
    """Real replies of a 6.x kernel (as root: with the privileged attributes) and the
    /proc tables read at the same moment, of sockets in every state a test can make."""
    with open(os.path.join(RECORDED, recording["name"] + ".bin"), "rb") as dump:
        data = dump.read()
    result = both(data, seq=recording["seq"])
    assert result[3:] == (0, netlink_pure.STATUS_DONE, 0) and result[2] == len(data)
    proc = []
    for family in (4, 6):
        with open(os.path.join(RECORDED, f"{recording['name']}.tcp{'6' if family == 6 else ''}"),
                  "rb") as table:
            proc.append(parse_counted(table.read(), family)[0])
    ignore = ["retransmits", "timer",        # timers tick between the two reads
              "cookie"]                      # sock_diag's own: /proc has none
    fields = [name for name in CONNECTION_DTYPE.names if name not in ignore]

    def as_set(rows):
        return sorted(tuple(bytes(np.asarray(row[f]).tobytes()) for f in fields) for row in rows)
    assert as_set(rows_of(result)) == as_set(np.concatenate(proc))
    assert set(recording["states"]) <= set(rows_of(result)["state"].tolist())


# ---- generated dumps ---------------------------------------------------------------

ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.one_of(st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
                 ipv4.map(lambda a: f"::ffff:{a}"))
port = st.integers(0, 65535)


def conns(address):
    return st.builds(Conn, address, port, address, port, state=st.integers(1, 11),
                     tx_queue=st.integers(0, 2**32 - 1), rx_queue=st.integers(0, 2**32 - 1),
                     uid=st.integers(0, 2**32 - 1), inode=st.integers(0, 2**32 - 1),
                     timer=st.integers(0, 4), retransmits=st.integers(0, 255))


attributes = st.lists(st.tuples(st.integers(1, 30), st.binary(max_size=20)), max_size=3).map(
    lambda attrs: b"".join(nl.attribute(kind, value) for kind, value in attrs))
entries = st.lists(st.tuples(st.one_of(conns(ipv4), conns(ipv6)), attributes,
                             st.sampled_from(["ours", "ours", "ours", "stale", "noop"])),
                   max_size=30)


def build(entries_list):
    """The dump's bytes, the connections it lists (in order), and every one it holds
    (those of an earlier dump too: sockets the kernel did list)."""
    data, listed, held = b"", [], []
    for conn, extra, kind in entries_list:
        if kind == "ours":
            data += nl.socket_message(conn, extra)
            listed.append(conn)
        elif kind == "stale":                              # the tail of an earlier dump
            data += nl.message(18, nl.diag_msg(conn) + extra, seq=nl.SEQ - 1)
        else:
            data += nl.message(nl.NLMSG_NOOP, b"")
        if kind != "noop":
            held.append(conn)
    return data + nl.done(), listed, held


@settings(max_examples=300, deadline=None)
@given(entries)
def test_generated_dumps_decode_to_what_was_built(entries_list):
    data, listed, _ = build(entries_list)
    result = both(data)
    assert result[1:] == (len(listed), len(data), 0, netlink_pure.STATUS_DONE, 0)
    assert rows_of(result).tobytes() == reference_rows(listed).tobytes()


def reference_rows(conns: list[Conn]) -> np.ndarray:
    rows = expected_rows(conns)
    rows["tx_queue"][rows["state"] == 0x0A] = 0           # a listener's wqueue is its backlog
    return rows


def key_view(rows):
    return {row.tobytes() for row in rows}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, st.data())
def test_cut_dumps_give_a_prefix_of_the_rows(entries_list, data):
    whole, _, _ = build(entries_list)
    expected = rows_of(both(whole))
    cut = whole[:data.draw(st.integers(0, len(whole)))]
    result = both(cut, room=data.draw(st.none() | st.integers(0, 5)))
    rows = rows_of(result)
    assert rows.tobytes() == expected[:len(rows)].tobytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, st.data())
def test_corrupted_headers_never_give_a_wrong_row(entries_list, data):
    """Any bytes of any nlmsghdr overwritten: rows are lost, never invented or altered."""
    whole, _, held = build(entries_list)
    expected = key_view(reference_rows(held))
    text = bytearray(whole)
    starts, pos = [], 0
    while pos < len(whole):
        starts.append(pos)
        pos += nl.align(struct.unpack_from("=I", whole, pos)[0])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.sampled_from(starts)) + data.draw(st.integers(0, 15))
        text[at] = data.draw(st.integers(0, 255))
    rows = rows_of(both(bytes(text), room=data.draw(st.none() | st.integers(0, 5))))
    assert key_view(rows) <= expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, st.data())
def test_corrupted_bytes_anywhere_agree(entries_list, data):
    text = bytearray(build(entries_list)[0])
    for _ in range(data.draw(st.integers(1, 8))):
        what = data.draw(st.sampled_from(EDITS))
        at = data.draw(st.integers(0, len(text)))
        byte = data.draw(st.integers(0, 255))
        edit(text, what, at, byte)
    both(bytes(text), room=data.draw(st.none() | st.integers(0, 5)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=800), st.none() | st.integers(0, 3))
def test_arbitrary_bytes_agree(raw, room):
    both(raw, room)
