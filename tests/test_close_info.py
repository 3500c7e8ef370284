"""What a closed connection carried, from the kernel's destroy events (sock_diag's
INET_DIAG_INFO: the socket's last struct tcp_info), on real loopback connections
that send known byte counts and close in known ways (tests/close_sockets.py).

The rule (Linux 6.18, measured here; n = the application bytes each way):

=================  =====================  =====================  ===================
close              end                    bytes_sent             bytes_received
                                          (tcpi_bytes_acked)     (tcpi_bytes_received)
=================  =====================  =====================  ===================
FIN, client first  client (opener)        n + 2 (SYN, FIN)       n
                   server                 n + 1 (FIN)            n + 1 (FIN)
FIN, server first  client                 n + 2                  n + 1
                   server                 n + 1                  n
half close         client (SHUT_WR, then  n + 2                  n + 1
                   reads to the end)
                   server                 n + 1                  n + 1
RST (SO_LINGER 0)  the end that resets    unknown (zeroed)       unknown (zeroed)
                   the other end          n (+1 if it opened)    n
=================  =====================  =====================  ===================

- The opener's SYN counts as a sent byte once the SYN-ACK acknowledges it; the
  accepting end's SYN-ACK does not count (its counters start after it).
- A FIN counts as a byte sent by its sender once acknowledged (every FIN close),
  and as a byte received by the peer if it reaches the peer's full socket.
- The end that close()s first is destroyed as soon as its FIN is acknowledged
  (an orphan in FIN_WAIT2 becomes a timewait entry at once while
  tcp_fin_timeout <= 60 s): the peer's FIN then reaches only the timewait entry
  and is counted nowhere. It is counted (n + 1) when it came with or before the
  ACK of that end's FIN: a peer that closes within its delayed-ACK time (~40 ms
  on loopback) usually sends both in one segment. The tests make each case
  certain: the second end closes only once the first end's destroy event has
  arrived. An end that shuts down its side and reads to the end counts it.
- A reset counts nothing: no FIN either way. The end that sends it with
  SO_LINGER 0 went through tcp_disconnect, which zeroed its counters, its rtt,
  its remote port and its local address: its info is unknown (DestroyEvents
  keeps only its state, CLOSE). The end that receives it keeps its counts.
- ``data_bytes_sent`` (tcpi_bytes_sent - tcpi_bytes_retrans) is n in every
  case but the zeroed one, retransmissions or not: the application's bytes,
  without SYN or FIN, from the message alone (kernels from 4.19). Received
  bytes have no such counter: taking the FIN out of bytes_received is exact
  but for the end that closed first with close(), where it is n or n + 1.
- ``state`` (tcpi_state) is CLOSE (7) in every destroy event; rtt is > 0.

Each case runs through the compiled and the pure decoder, IPv4 and IPv6, as root
and as user nobody (who hears the same messages: binding the destroy groups needs
no privilege), and on recorded messages of this kernel, cut to the sizes of older
kernels' struct tcp_info and lengthened as a newer kernel's would be.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading

import close_sockets
import netlink_format as nl
import numpy as np
import pytest
from held import fork_as_nobody, run_as_nobody
from test_live import FAMILIES
from test_netlink_decode import DECODERS, both_info, expected_info, infos_of, rows_of

from tcpfast import schema
from tcpfast.schema import CLOSE_INFO_DTYPE
from tcpfast.sources import netlink_events

RECORDED = os.path.join(os.path.dirname(__file__), "data", "netlink")
CLOSE = 7
COUNTERS = (schema.KNOWN_BYTES_SENT | schema.KNOWN_BYTES_RECEIVED | schema.KNOWN_DATA_BYTES_SENT
            | schema.KNOWN_SEGMENTS_SENT | schema.KNOWN_SEGMENTS_RECEIVED
            | schema.KNOWN_RETRANSMITS | schema.KNOWN_RTT)


def kernel_counts(close: str, side: str, size: int) -> tuple[int, int] | None:
    """(bytes_sent, bytes_received) the rule says ``side`` reports; None: zeroed."""
    opener = side == "client"
    if close == f"reset_by_{side}":
        return None
    if close.startswith("reset_by_"):
        return size + opener, size
    first = {"client_first": "client", "server_first": "server", "half_close": None}[close]
    return size + opener + 1, size + (side != first)


def mismatches(close: str, size: int, side: str, row, info, *, cleared_known: bool) -> list[str]:
    """What in one end's destroy event breaks the rule (empty: nothing).
    ``cleared_known``: a zeroed end's info is unknown (DestroyEvents), else the raw zeros."""
    where = f"{close} {size} {side}"
    found = []
    counts = kernel_counts(close, side, size)
    if info["state"] != CLOSE or not info["known"] & schema.KNOWN_STATE:
        found.append(f"{where}: state {info['state']} (known {info['known']:#x})")
    if counts is None:
        if int(row["remote_port"]) != 0:
            found.append(f"{where}: a reset end kept its remote port")
        if cleared_known and info["known"] & COUNTERS:
            found.append(f"{where}: zeroed counters said known ({info['known']:#x})")
        for field in ("bytes_sent", "bytes_received", "data_bytes_sent", "rtt_us",
                      "segments_sent", "segments_received"):
            if info[field] != 0:
                found.append(f"{where}: {field} {info[field]} after tcp_disconnect")
        return found
    if info["known"] & COUNTERS != COUNTERS:
        found.append(f"{where}: known {info['known']:#x}")
    got = (int(info["bytes_sent"]), int(info["bytes_received"]), int(info["data_bytes_sent"]))
    if got != (*counts, size):
        found.append(f"{where}: sent, received, data sent {got}, the rule says {(*counts, size)}")
    # Every end received a segment after its counters started (the SYN-ACK, the
    # handshake's ACK); the accepting end of an empty reset connection sent none.
    if not info["rtt_us"] > 0 or not info["segments_received"] > 0:
        found.append(f"{where}: rtt {info['rtt_us']} us, segments {info['segments_sent']}"
                     f"/{info['segments_received']}")
    return found


def events_or_skip() -> netlink_events.DestroyEvents:
    try:
        return netlink_events.DestroyEvents()
    except OSError as error:
        pytest.skip(f"the kernel refuses the sock_diag destroy groups here: {error}")


@pytest.fixture(params=sorted(DECODERS))
def decoder(request, monkeypatch):
    """DestroyEvents decoding with each decoder in turn."""
    monkeypatch.setattr(netlink_events, "decode_into", DECODERS[request.param])
    return request.param


def observe(af: int, host: str, closes=close_sockets.CLOSES, sizes=close_sockets.SIZES
            ) -> list[str]:
    """Every close of every size, through DestroyEvents: what breaks the rule."""
    found = []
    with netlink_events.DestroyEvents() as events:
        heard = close_sockets.Heard(events)
        for close in closes:
            for size in sizes:
                ends = close_sockets.closed_connection(af, host, size, close, heard)
                for side, (row, info) in ends.items():
                    found += mismatches(close, size, side, row, info, cleared_known=True)
        if events.malformed or events.lost:
            found.append(f"malformed {events.malformed}, lost {events.lost}")
    return found


@pytest.mark.parametrize("close", close_sockets.CLOSES)
@pytest.mark.parametrize("af, host, family", FAMILIES)
def test_closed_connections_carry_the_bytes_the_rule_says(decoder, close, af, host, family):
    events_or_skip().close()
    assert observe(af, host, closes=(close,)) == []


def load_lazy_imports() -> None:
    """What the child imports on first use, loaded while still root: nobody cannot read
    this interpreter's library (pyenv's, under /root)."""
    "127.0.0.1".encode("idna")                 # socket.create_connection's host name


def test_as_nobody_the_same_messages_and_the_same_rule(decoder):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody")
    events_or_skip().close()
    assert run_as_nobody(lambda: observe(socket.AF_INET, "127.0.0.1"), load_lazy_imports) == []


def test_nobody_hears_roots_connections_with_what_they_carried():
    """A listener of user nobody hears a connection of root's with the very info root's
    listener hears: one message for everyone, whoever listens."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody")
    events_or_skip().close()
    ready_read, ready_write = os.pipe()
    cookies_read, cookies_write = os.pipe()
    roots: dict[str, str] = {}
    found: list[str] = []

    def connect_once_nobody_listens() -> None:
        cookies = {}
        try:
            os.read(ready_read, 1)
            with netlink_events.DestroyEvents() as events:
                ends = close_sockets.closed_connection(socket.AF_INET, "127.0.0.1", 65_536,
                                                       "half_close", close_sockets.Heard(events))
            for side, (row, info) in ends.items():
                roots[side] = info.tobytes().hex()
                cookies[side] = int(row["cookie"])
                found.extend(mismatches("half_close", 65_536, side, row, info,
                                        cleared_known=True))
        except BaseException as error:
            found.append(f"root's connection: {error!r}")
        finally:                                   # the listener never waits for ever
            os.write(cookies_write, json.dumps(cookies).encode())

    def listen_as_nobody() -> dict[str, str]:
        with netlink_events.DestroyEvents() as events:
            os.write(ready_write, b"r")
            cookies = json.loads(os.read(cookies_read, 1000))
            heard = close_sockets.Heard(events)
            return {side: heard.wait_for(cookie)[1].tobytes().hex()
                    for side, cookie in cookies.items()}

    nobodys_result = fork_as_nobody(listen_as_nobody, load_lazy_imports)   # before the thread
    connector = threading.Thread(target=connect_once_nobody_listens)
    connector.start()
    try:
        nobodys = nobodys_result()
    finally:
        os.write(ready_write, b"x")                # nor does the connector
        connector.join(30)
        for fd in (ready_read, ready_write, cookies_read, cookies_write):
            os.close(fd)
    assert found == []
    assert nobodys == roots and len(roots) == 2


# ---- recorded destroy messages of this kernel ----------------------------------------

def recordings():
    with open(os.path.join(RECORDED, "destroyed.json")) as index:
        return json.load(index)


def recorded(recording) -> bytes:
    with open(os.path.join(RECORDED, recording["name"] + ".bin"), "rb") as data:
        return data.read()


def with_info_length(data: bytes, length: int) -> bytes:
    """Every message of ``data`` with its INET_DIAG_INFO cut to ``length`` bytes, or
    lengthened with non-zero bytes (a newer kernel's fields), lengths fixed up."""
    out, pos = b"", 0
    while pos + 16 <= len(data):
        size, kind, flags, seq, port = struct.unpack_from("=IHHII", data, pos)
        payload, attributes, at = data[pos + 16:pos + 16 + 72], b"", pos + 16 + 72
        while at + 4 <= pos + size:
            attr_size, attr_type = struct.unpack_from("=HH", data, at)
            value = data[at + 4:at + attr_size]
            if attr_type == nl.INET_DIAG_INFO:
                value = (value + bytes(range(1, 256)))[:length]
            attributes += nl.attribute(attr_type, value)
            at += nl.align(attr_size)
        out += nl.message(kind, payload + attributes, seq=seq, flags=flags, port_id=port)
        pos += nl.align(size)
    return out


def recorded_ends(recording, data: bytes):
    """(close, size, side, row, info) of each recorded connection's two ends."""
    result = both_info(data, seq=recording["seq"])
    rows, infos = rows_of(result), infos_of(result)
    for connection in recording["connections"]:
        for side in ("client", "server"):
            end = connection[side]
            hit = np.flatnonzero(rows["cookie"] == end["cookie"])
            assert len(hit) == 1, (connection, side)
            assert (rows["local_port"][hit[0]], rows["remote_port"][hit[0]]) == (
                end["local_port"], end["remote_port"])
            yield connection["close"], connection["size"], side, rows[hit[0]], infos[hit[0]]


@pytest.mark.parametrize("recording", recordings(), ids=lambda r: r["name"])
def test_recorded_destroy_messages_decode_to_the_rule(recording):
    """Real messages of the kernel named in the index, decoded by both decoders (raw:
    the reset end's zeroed counters are the kernel's zeros)."""
    data = recorded(recording)
    result = both_info(data, seq=recording["seq"])
    assert result[3:] == (len(data), 0, 0, 0) and result[2] >= 2 * len(recording["connections"])
    found = []
    for close, size, side, row, info in recorded_ends(recording, data):
        found += mismatches(close, size, side, row, info, cleared_known=False)
    assert found == []


@pytest.mark.parametrize("length, missing", [
    (nl.SIZE_BEFORE_BYTES_ACKED, ("bytes_sent", "bytes_received", "segments_sent",
                                  "segments_received", "min_rtt_us", "data_bytes_sent")),
    (nl.SIZE_BEFORE_SEGS, ("segments_sent", "segments_received", "min_rtt_us",
                           "data_bytes_sent")),
    (nl.SIZE_BEFORE_BYTES_SENT, ("data_bytes_sent",)),
    (nl.TCP_INFO_BYTES + 40, ()),
], ids=["3.15-4.0", "4.1", "4.2-4.18", "newer"])
@pytest.mark.parametrize("recording", recordings(), ids=lambda r: r["name"])
def test_recorded_messages_of_an_older_or_newer_kernels_size(recording, length, missing):
    """The same messages with a shorter tcp_info: the fields past its end unknown (0),
    the others as before; with a longer one: the rest ignored."""
    data = recorded(recording)
    whole = list(recorded_ends(recording, data))
    changed = list(recorded_ends(recording, with_info_length(data, length)))
    bits = {"bytes_sent": schema.KNOWN_BYTES_SENT, "bytes_received": schema.KNOWN_BYTES_RECEIVED,
            "segments_sent": schema.KNOWN_SEGMENTS_SENT,
            "segments_received": schema.KNOWN_SEGMENTS_RECEIVED,
            "min_rtt_us": schema.KNOWN_MIN_RTT, "data_bytes_sent": schema.KNOWN_DATA_BYTES_SENT}
    for (*_, row, info), (*_, changed_row, changed_info) in zip(whole, changed):
        assert changed_row.tobytes() == row.tobytes()
        expected = info.copy()
        for field in missing:
            expected[field] = 0
            expected["known"] &= 0xFFFF & ~bits[field]
        assert changed_info.tobytes() == expected.tobytes()


def test_the_derivation_agrees_with_the_layout():
    """with_info_length against the header's layout: a synthetic message, cut and lengthened."""
    conn = nl.Conn("10.0.0.1", 5000, "192.0.2.1", 80, state=7, inode=0)
    members = {"bytes_acked": 10, "bytes_received": 20, "segs_out": 3, "segs_in": 4, "rtt": 9,
               "state": 7, "total_retrans": 1, "bytes_sent": 30, "bytes_retrans": 2}
    data = nl.destroy_message(conn, nl.tcp_info(**members))
    for length in (nl.SIZE_BEFORE_BYTES_ACKED, nl.SIZE_BEFORE_SEGS, nl.TCP_INFO_BYTES + 40):
        info = infos_of(both_info(with_info_length(data, length)))
        assert info.tobytes() == expected_info(members, length).tobytes()
    assert CLOSE_INFO_DTYPE.itemsize == 48


# ---- metrics of what closed connections carried --------------------------------------

def scraped(metrics) -> dict[tuple[str, tuple], float]:
    """The registry as a scrape reads it: text exposition, parsed back."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
            for sample in family.samples}


def test_metrics_count_closed_connections_bytes_by_direction_and_family_and_their_durations():
    pytest.importorskip("prometheus_client")
    from tcpfast.enrich.direction import IN, OUT
    from tcpfast.events import RowEvents
    from tcpfast.outputs.metrics import Metrics
    events_or_skip().close()
    sizes = (1000, 65_536)
    rows, infos, directions = [], [], []
    with netlink_events.DestroyEvents() as events:
        heard = close_sockets.Heard(events)
        for size in sizes:
            ends = close_sockets.closed_connection(socket.AF_INET, "127.0.0.1", size,
                                                   "half_close", heard)
            for side, direction in (("client", OUT), ("server", IN)):
                rows.append(ends[side][0])
                infos.append(ends[side][1])
                directions.append(direction)
        reset = close_sockets.closed_connection(socket.AF_INET, "127.0.0.1", 10,
                                                "reset_by_client", heard)["client"]
    metrics = Metrics(source="netlink")
    short = RowEvents("new_and_closed", np.array(rows), np.array(directions, np.uint8),
                      np.full(len(rows), np.nan), info=np.array(infos))
    metrics.record_closed(short)
    # A /proc poll's closed connections: durations, no info; a reset end: its info cleared.
    polled = np.array(rows[:3])
    metrics.record_closed(RowEvents("closed", polled, np.array([OUT, IN, OUT], np.uint8),
                                    np.array([0.2, 45.0, np.nan])))
    metrics.record_closed(RowEvents("closed", np.array([reset[0]]), np.array([OUT], np.uint8),
                                    np.array([1.5]), info=np.array([reset[1]])))
    sample = scraped(metrics)

    def value(name, direction, family="4"):
        return sample[(name, (("direction", direction), ("family", family)))]

    sent, received = "tcpfast_closed_connection_sent_bytes_total", \
        "tcpfast_closed_connection_received_bytes_total"
    assert value(sent, "out") == sum(size + 2 for size in sizes)      # SYN and FIN
    assert value(sent, "in") == sum(size + 1 for size in sizes)       # FIN
    assert value(received, "out") == value(received, "in") == sum(size + 1 for size in sizes)
    assert value(sent, "out", "6") == value(sent, "listen") == 0
    unknown = "tcpfast_closed_connections_unknown_bytes_total"
    assert (value(unknown, "out"), value(unknown, "in")) == (2 + 1, 1)
    lifetimes = "tcpfast_closed_connection_duration_seconds"
    assert sample[(lifetimes + "_count", ())] == 3                   # NaN: unknown, left out
    assert sample[(lifetimes + "_sum", ())] == pytest.approx(46.7)
    assert sample[(lifetimes + "_bucket", (("le", "0.5"),))] == 1
    assert sample[(lifetimes + "_bucket", (("le", "5.0"),))] == 2
    assert sample[(lifetimes + "_bucket", (("le", "60.0"),))] == 3
