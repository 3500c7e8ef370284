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

from tcpfast import CONNECTION_DTYPE, schema
from tcpfast.decode import netlink_pure
from tcpfast.decode.parsing import parse_counted
from tcpfast.schema import CLOSE_INFO_DTYPE

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


# ---- what a destroyed socket carried: INET_DIAG_INFO (struct tcp_info) -------------------

#: CLOSE_INFO_DTYPE's fields: (the tcp_info member(s) it comes from, its KNOWN_* bit).
INFO_SOURCES = {"state": (("state",), schema.KNOWN_STATE), "rtt_us": (("rtt",), schema.KNOWN_RTT),
                "retransmits": (("total_retrans",), schema.KNOWN_RETRANSMITS),
                "bytes_sent": (("bytes_acked",), schema.KNOWN_BYTES_SENT),
                "bytes_received": (("bytes_received",), schema.KNOWN_BYTES_RECEIVED),
                "segments_sent": (("segs_out",), schema.KNOWN_SEGMENTS_SENT),
                "segments_received": (("segs_in",), schema.KNOWN_SEGMENTS_RECEIVED),
                "min_rtt_us": (("min_rtt",), schema.KNOWN_MIN_RTT),
                "data_bytes_sent": (("bytes_sent", "bytes_retrans"),
                                    schema.KNOWN_DATA_BYTES_SENT)}


#: Every KNOWN_* bit: what a whole tcp_info says.
EVERYTHING = 0
for _, bit in INFO_SOURCES.values():
    EVERYTHING |= bit


def decode_info(decoder, data: bytes, room: int | None = None, seq: int = 0,
                msg_type: int = nl.SOCK_DIAG_BY_FAMILY):
    """(rows bytes, info bytes, end, consumed, malformed, status, error) with ``info``."""
    size = (len(data) // 88 + 2 if room is None else room) + 1
    out = np.empty(size, dtype=CONNECTION_DTYPE)
    info = np.zeros(size, dtype=CLOSE_INFO_DTYPE)
    info.view(np.uint8)[:] = 0xAB                     # every record written must be rewritten
    end, consumed, malformed, status, error = decoder(data, out, 1, seq, msg_type, info)
    untouched = info.view(np.uint8).reshape(size, -1)
    assert (untouched[:1] == 0xAB).all() and (untouched[end:] == 0xAB).all()   # only the rows
    return (out[1:end].tobytes(), info[1:end].tobytes(), end - 1, consumed, malformed, status,
            error)


def both_info(data: bytes, room: int | None = None, seq: int = 0,
              msg_type: int = nl.SOCK_DIAG_BY_FAMILY):
    """Every decoder with info: they agree, and give the rows and counts they give
    without it (an attribute fault adds to malformed, nothing else)."""
    results = {name: decode_info(decoder, data, room, seq, msg_type)
               for name, decoder in DECODERS.items()}
    assert len(set(results.values())) == 1, results
    result = results["pure"]
    plain = decode(DECODERS["pure"], data, room, seq) if msg_type == nl.TCPDIAG_GETSOCK else \
        _decode_type(data, room, seq, msg_type)
    assert (result[0], *result[2:4], *result[5:]) == (plain[0], *plain[1:3], *plain[4:])
    assert result[4] >= plain[3]
    return result


def _decode_type(data, room, seq, msg_type):
    out = np.empty((len(data) // 88 + 2 if room is None else room) + 1, dtype=CONNECTION_DTYPE)
    end, consumed, malformed, status, error = netlink_pure.decode_into(data, out, 1, seq,
                                                                       msg_type)
    return out[1:end].tobytes(), end - 1, consumed, malformed, status, error


def infos_of(result) -> np.ndarray:
    return np.frombuffer(result[1], dtype=CLOSE_INFO_DTYPE)


def expected_info(members: dict[str, int] | None, length: int) -> np.ndarray:
    """What a tcp_info of ``length`` bytes with ``members`` says, from the header's layout."""
    record = np.zeros(1, dtype=CLOSE_INFO_DTYPE)
    if members is None:
        return record
    known = 0
    for field, (sources, bit) in INFO_SOURCES.items():
        ends = [nl.TCP_INFO_OFFSETS[name][0] + struct.calcsize(nl.TCP_INFO_OFFSETS[name][1])
                for name in sources]
        if length < max(ends):
            continue
        values = [members.get(name, 0) for name in sources]
        if field == "data_bytes_sent":
            if values[1] > values[0]:
                continue
            values = [values[0] - values[1]]
        record[field] = values[0]
        known |= bit
    record["known"] = known
    return record


CLOSED = Conn("10.1.2.3", 41164, "192.0.2.7", 443, state=0x07, inode=0)
MEMBERS = {"state": 7, "rtt": 1234, "total_retrans": 3, "bytes_acked": 12_347,
           "bytes_received": 778, "segs_out": 21, "segs_in": 19, "bytes_sent": 12_400,
           "bytes_retrans": 55, "ca_state": 4, "rttvar": 99, "min_rtt": 17, "snd_wnd": 65535,
           "pacing_rate": 2**63, "delivered": 8}


def test_a_destroy_message_gives_its_row_and_what_the_socket_carried():
    data = nl.destroy_message(CLOSED, nl.tcp_info(**MEMBERS))
    result = both_info(data)
    assert result[2:] == (1, len(data), 0, 0, 0)
    assert rows_of(result).tobytes() == reference_rows([CLOSED]).tobytes()
    info = infos_of(result)[0]
    assert (info["bytes_sent"], info["bytes_received"], info["data_bytes_sent"]) == (
        12_347, 778, 12_345)
    assert (info["segments_sent"], info["segments_received"], info["retransmits"],
            info["rtt_us"], info["min_rtt_us"], info["state"], info["known"]) == (
        21, 19, 3, 1234, 17, 7, EVERYTHING)
    assert infos_of(result).tobytes() == expected_info(MEMBERS, nl.TCP_INFO_BYTES).tobytes()


@pytest.mark.parametrize("length, unknown", [
    (nl.TCP_INFO_BYTES, []),
    (nl.TCP_INFO_BYTES + 44, []),                                  # a newer kernel: ignored
    (232, []),                                                     # 5.4-6.1 (Debian's 6.1 header)
    (nl.SIZE_BEFORE_BYTES_SENT, ["data_bytes_sent"]),              # 4.18
    (nl.SIZE_BEFORE_SEGS, ["segments_sent", "segments_received", "min_rtt_us",
                           "data_bytes_sent"]),                    # 4.1
    (nl.SIZE_BEFORE_BYTES_ACKED, ["bytes_sent", "bytes_received", "segments_sent",
                                  "segments_received", "min_rtt_us",
                                  "data_bytes_sent"]),             # 3.15
    (124, ["bytes_sent", "bytes_received", "segments_sent", "segments_received",
           "min_rtt_us", "data_bytes_sent"]),                      # cut inside a field
    (104, ["bytes_sent", "bytes_received", "segments_sent", "segments_received",
           "min_rtt_us", "data_bytes_sent"]),
    (100, ["retransmits", "bytes_sent", "bytes_received", "segments_sent",
           "segments_received", "min_rtt_us", "data_bytes_sent"]),
    (1, [name for name in INFO_SOURCES if name != "state"]),
    (0, list(INFO_SOURCES)),
])
def test_a_shorter_tcp_info_leaves_the_fields_past_its_end_unknown(length, unknown):
    extra = bytes(range(1, 45))                         # a newer kernel's fields: not read
    info = (nl.tcp_info(**MEMBERS) + extra)[:length]
    result = both_info(nl.destroy_message(CLOSED, info))
    record = infos_of(result)[0]
    for field, (_, bit) in INFO_SOURCES.items():
        assert bool(record["known"] & bit) == (field not in unknown), field
        if field in unknown:
            assert record[field] == 0
    assert infos_of(result).tobytes() == expected_info(MEMBERS, length).tobytes()


def test_no_tcp_info_attribute_nothing_known():
    result = both_info(nl.destroy_message(CLOSED, None))
    assert result[2:5] == (1, len(nl.destroy_message(CLOSED, None)), 0)
    assert infos_of(result).tobytes() == bytes(CLOSE_INFO_DTYPE.itemsize)


def test_the_attribute_type_flags_are_masked_and_the_last_info_counts():
    first = nl.attribute(nl.INET_DIAG_INFO | nl.NLA_F_NET_BYTEORDER, nl.tcp_info(rtt=5))
    data = nl.destroy_message(CLOSED, nl.tcp_info(**MEMBERS), before=first)
    assert infos_of(both_info(data))[0]["rtt_us"] == 1234
    data = nl.destroy_message(CLOSED, None,
                              after=nl.attribute(nl.INET_DIAG_INFO | nl.NLA_F_NESTED,
                                                 nl.tcp_info(rtt=5)))
    assert infos_of(both_info(data))[0]["rtt_us"] == 5


def test_another_attributes_info_is_not_taken():
    data = nl.destroy_message(CLOSED, None, after=nl.attribute(3, nl.tcp_info(**MEMBERS)))
    assert infos_of(both_info(data))[0]["known"] == 0


def with_attributes(payload_tail: bytes) -> bytes:
    """A destroy message whose attribute area is exactly ``payload_tail``."""
    return nl.message(nl.SOCK_DIAG_BY_FAMILY, nl.diag_msg(CLOSED) + payload_tail, seq=0)


@pytest.mark.parametrize("fault, kept", [
    (struct.pack("=HH", 3, 1), False),                 # shorter than its own header
    (struct.pack("=HH", 400, 2) + bytes(8), False),    # runs past the message
    (b"\x08\x00", False),                              # a cut header
])
@pytest.mark.parametrize("info_first", [True, False], ids=["info-before", "info-after"])
def test_a_malformed_attribute_list_keeps_the_row_and_the_info_before_it(fault, kept,
                                                                         info_first):
    info = nl.attribute(nl.INET_DIAG_INFO, nl.tcp_info(**MEMBERS))
    tail = info + fault if info_first else fault + info
    data = with_attributes(tail) + nl.destroy_message(CLOSED, nl.tcp_info(**MEMBERS))
    result = both_info(data)
    assert result[2:5] == (2, len(data), 1)            # both rows; the fault counted once
    assert rows_of(result).tobytes() == reference_rows([CLOSED, CLOSED]).tobytes()
    first, second = infos_of(result)
    assert first["known"] == (EVERYTHING if info_first else 0)
    assert second["known"] == EVERYTHING


def test_a_byte_or_three_left_after_the_attributes_is_malformed():
    info = nl.attribute(nl.INET_DIAG_INFO, nl.tcp_info(**MEMBERS))
    for left in (1, 2, 3):
        payload = nl.diag_msg(CLOSED) + info + bytes(left)
        data = struct.pack("=IHHII", 16 + len(payload), 20, 0, 0, 0) + payload
        result = both_info(data + bytes(-len(data) % 4))
        assert result[4] == 1 and infos_of(result)[0]["known"] == EVERYTHING


def test_data_bytes_sent_unknown_when_more_was_retransmitted_than_sent():
    members = dict(MEMBERS, bytes_sent=10, bytes_retrans=11)
    record = infos_of(both_info(nl.destroy_message(CLOSED, nl.tcp_info(**members))))[0]
    assert record["known"] == EVERYTHING & ~schema.KNOWN_DATA_BYTES_SENT
    assert record["data_bytes_sent"] == 0


def test_dump_rows_get_info_too_and_rows_without_info_nothing():
    """A dump with the INFO extension (messages of type TCPDIAG_GETSOCK) decodes the
    same way; sequence numbers and types are honoured as for rows."""
    data = (nl.socket_message(CONNS[0], nl.attribute(nl.INET_DIAG_INFO, nl.tcp_info(rtt=9)))
            + nl.socket_message(CONNS[1]) + nl.destroy_message(CLOSED, nl.tcp_info(rtt=1))
            + nl.done())
    result = both_info(data, seq=nl.SEQ, msg_type=nl.TCPDIAG_GETSOCK)
    assert result[2] == 2
    assert infos_of(result)["rtt_us"].tolist() == [9, 0]
    assert infos_of(result)["known"].tolist() == [expected_info({}, nl.TCP_INFO_BYTES)["known"][0], 0]


def test_out_full_leaves_the_message_and_its_info_for_the_next_call():
    conns = [Conn("10.0.0.1", 1000 + i, "192.0.2.9", 80, state=7, inode=0) for i in range(5)]
    data = b"".join(nl.destroy_message(c, nl.tcp_info(rtt=i + 1, bytes_acked=i * 1000))
                    for i, c in enumerate(conns))
    for decoder in DECODERS.values():
        rows, infos, consumed = [], [], 0
        while consumed < len(data):
            out = np.empty(2, dtype=CONNECTION_DTYPE)
            info = np.empty(3, dtype=CLOSE_INFO_DTYPE)
            end, used, malformed, _, _ = decoder(data[consumed:], out, 0, 0, 20, info)
            assert malformed == 0
            rows.append(out[:end])
            infos.append(info[:end])
            consumed += used
        info = np.concatenate(infos)
        assert np.concatenate(rows)["local_port"].tolist() == [1000, 1001, 1002, 1003, 1004]
        assert info["rtt_us"].tolist() == [1, 2, 3, 4, 5]
        assert info["bytes_sent"].tolist() == [0, 1000, 2000, 3000, 4000]


other_attributes = st.lists(
    st.tuples(st.integers(1, 30).filter(lambda kind: kind != nl.INET_DIAG_INFO),
              st.binary(max_size=20)), max_size=3).map(
    lambda attrs: b"".join(nl.attribute(kind, value) for kind, value in attrs))
tcp_info_members = st.fixed_dictionaries(
    {}, optional={name: st.integers(0, 2 ** (8 * struct.calcsize(code)) - 1)
                  for name, (_, code) in nl.TCP_INFO_OFFSETS.items()})
destroyed = st.lists(st.tuples(
    st.one_of(conns(ipv4), conns(ipv6)), st.none() | tcp_info_members,
    st.sampled_from([0, 1, 99, 100, 104, 120, 127, 128, 136, 140, 143, 144, 200, 215, 216, 232,
                     248, 280, 320]) | st.integers(0, 400),
    other_attributes, other_attributes), max_size=12)


def build_destroyed(entries_list) -> tuple[bytes, list[Conn], np.ndarray]:
    data, listed, infos = b"", [], []
    for conn, members, length, before, after in entries_list:
        info = None if members is None else nl.tcp_info(length, **members)
        data += nl.destroy_message(conn, info, before, after)
        listed.append(conn)
        infos.append(expected_info(members, length))
    return data, listed, (np.concatenate(infos) if infos else np.empty(0, CLOSE_INFO_DTYPE))


@settings(max_examples=300, deadline=None)
@given(destroyed)
def test_generated_destroy_messages_decode_to_what_was_built(entries_list):
    data, listed, infos = build_destroyed(entries_list)
    result = both_info(data)
    assert result[2:] == (len(listed), len(data), 0, 0, 0)
    assert rows_of(result).tobytes() == reference_rows(listed).tobytes()
    assert infos_of(result).tobytes() == infos.tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(destroyed, st.data())
def test_cut_destroy_messages_give_a_prefix_of_rows_and_info(entries_list, data):
    whole = build_destroyed(entries_list)[0]
    expected = both_info(whole)
    cut = whole[:data.draw(st.integers(0, len(whole)))]
    result = both_info(cut, room=data.draw(st.none() | st.integers(0, 5)))
    assert rows_of(result).tobytes() == rows_of(expected)[:result[2]].tobytes()
    assert infos_of(result).tobytes() == infos_of(expected)[:result[2]].tobytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(destroyed, st.data())
def test_corrupted_destroy_messages_agree(entries_list, data):
    text = bytearray(build_destroyed(entries_list)[0])
    for _ in range(data.draw(st.integers(1, 8))):
        edit(text, data.draw(st.sampled_from(EDITS)), data.draw(st.integers(0, len(text))),
             data.draw(st.integers(0, 255)))
    both_info(bytes(text), room=data.draw(st.none() | st.integers(0, 5)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=800), st.none() | st.integers(0, 3), st.sampled_from([18, 20]))
def test_arbitrary_bytes_agree_with_info(raw, room, msg_type):
    both_info(raw, room, seq=0, msg_type=msg_type)
