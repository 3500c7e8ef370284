"""The compiled line formatter writes what the reference (outputs/report.py) writes, byte
for byte, on generated events of every kind; the new keys' exact lines; and both refuse
the same bad columns."""

import json
import socket
import struct
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpfast.enrich.owners import Owner
from tcpfast.events import (
    UNKNOWN_LOCAL_ADDRESS,
    UNKNOWN_LOCAL_PORT,
    UNKNOWN_REMOTE_PORT,
    Holder,
    RowEvents,
)
from tcpfast.outputs.lines import LineFormatter
from tcpfast.schema import (
    CLOSE_INFO_DTYPE,
    CONNECTION_DTYPE,
    KNOWN_BYTES_RECEIVED,
    KNOWN_BYTES_SENT,
    KNOWN_RTT,
    KNOWN_SEGMENTS_SENT,
)

try:
    from tcpfast.outputs import _format
except ImportError:                      # a TCPFAST_PURE run without a build
    _format = None

needs_compiled = pytest.mark.skipif(_format is None, reason="the compiled formatter is not built")
#: Each formatter under test: the reference, and the compiled one where it is built.
FORMATTERS = [pytest.param(None, id="reference"),
              pytest.param(_format, id="compiled", marks=needs_compiled)]
EVENTS = ("new", "closed", "new_and_closed")
FIRST_SECOND, LAST_SECOND = -62135596800, 253402300799       # datetime's years 1 to 9999
POLL = datetime(2021, 8, 9, 11, 43, 46, tzinfo=timezone.utc)


def both(events, when=POLL, buffer_bytes=1 << 20, **options):
    """(reference bytes, compiled bytes) of the same events."""
    return (LineFormatter(compiled=None, **options).format(events, when),
            LineFormatter(compiled=_format, buffer_bytes=buffer_bytes, **options).format(events, when))


def rows_of(*specs):
    """Rows from (family, local, local_port, remote, remote_port, state, uid, inode, netns),
    addresses as text."""
    rows = np.zeros(len(specs), CONNECTION_DTYPE)
    for row, (family, local, lport, remote, rport, state, uid, inode, netns) in zip(rows, specs):
        kind = socket.AF_INET if family == 4 else socket.AF_INET6
        for field, address in (("local_addr", local), ("remote_addr", remote)):
            packed = socket.inet_pton(kind, address)
            row[field][:len(packed)] = list(packed)
        row["family"], row["local_port"], row["remote_port"] = family, lport, rport
        row["state"], row["uid"], row["inode"], row["netns"] = state, uid, inode, netns
    return rows


# -- generated events ------------------------------------------------------------------

WORD = st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABCD, 0x0DB8]) | st.integers(0, 0xFFFF)
V4 = st.binary(min_size=4, max_size=4)
IPV6 = st.one_of(
    st.lists(WORD, min_size=8, max_size=8).map(lambda words: struct.pack("!8H", *words)),
    V4.map(lambda v4: bytes(10) + b"\xff\xff" + v4),                 # ::ffff:a.b.c.d
    V4.map(lambda v4: bytes(12) + v4),                               # ::a.b.c.d
    V4.map(lambda v4: bytes(8) + b"\xff\xff\x00\x00" + v4),          # ::ffff:0:a.b.c.d
    V4.map(lambda v4: bytes(11) + b"\x01" + v4),                     # ::1:a.b.c.d
    st.binary(min_size=16, max_size=16))
#: Text with what JSON and UTF-8 must take care of: controls, quotes, non-ASCII (also
#: outside the BMP), and lone surrogates (a comm that is not UTF-8, os.fsdecode's).
TEXT = st.text(st.characters() | st.sampled_from('"\\\x00\x1f\x7f\t\n\u2028\udc80\udcff\U0001f600é'),
               max_size=20)
SECONDS = st.one_of(
    st.floats(),                                                     # NaN, infinities, any size
    st.integers(0, 2**24).map(lambda k: k / 16),                     # exact ties: 0.0625, 2.5625 ...
    st.integers(0, 2**24).map(lambda k: k / 2000),                   # near-ties: 0.0005, 1.0015 ...
    st.floats(0, 1e13), st.floats(-1e-3, 1e-3), st.floats(0, 1e-300),
    st.sampled_from([0.0, -0.0, 0.0005, 0.0015, 2.675, 1e12, 999999999999.9995, 1e16, 5e-324]))
TIMES = st.one_of(st.floats(FIRST_SECOND, LAST_SECOND + 0.999),
                  st.floats(1.6e9, 1.8e9), st.sampled_from([FIRST_SECOND, LAST_SECOND, -0.5, -1.0]))
HOLDER = st.none() | st.builds(Holder, *[st.none() | TEXT] * 4)      # (None: as no holder)
OWNER = st.none() | st.builds(Owner, st.integers(0, 2**22) | st.integers(-2**63, 2**63 - 1), TEXT)


@st.composite
def row_events(draw, max_rows=12):
    count = draw(st.integers(0, max_rows))
    event = draw(st.sampled_from(EVENTS))
    rows = np.zeros(count, CONNECTION_DTYPE)
    for row in rows:
        family = draw(st.sampled_from([4, 6]))
        for field in ("local_addr", "remote_addr"):
            address = draw(V4 if family == 4 else IPV6)
            row[field][:len(address)] = list(address)
        row["family"] = family
        row["local_port"], row["remote_port"] = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
        row["state"] = draw(st.integers(0, 255) | st.integers(1, 11))
        row["uid"] = draw(st.integers(0, 2**32 - 1))
        row["inode"] = draw(st.integers(0, 2**64 - 1) | st.integers(0, 10**6))
        row["netns"] = draw(st.just(0) | st.integers(0, 2**64 - 1))

    def column(elements, dtype):
        return draw(st.none() | st.lists(elements, min_size=count, max_size=count).map(
            lambda values: np.array(values, dtype)))

    info = None
    if draw(st.booleans()):
        info = np.zeros(count, CLOSE_INFO_DTYPE)
        for entry in info:
            for name, top in (("bytes_sent", 2**64), ("bytes_received", 2**64), ("segments_sent", 2**32),
                              ("segments_received", 2**32), ("retransmits", 2**32), ("rtt_us", 2**32)):
                entry[name] = draw(st.integers(0, top - 1))
            entry["known"] = draw(st.integers(0, 255))
    holders = tuple(draw(st.lists(HOLDER, max_size=3)))
    owners = draw(st.none() | st.lists(OWNER, min_size=count, max_size=count))
    return RowEvents(
        event, rows, np.array(draw(st.lists(st.integers(0, 3), min_size=count, max_size=count)), np.uint8),
        duration=column(SECONDS, np.float64), owners=owners, times=column(TIMES, np.float64),
        unknown=column(st.integers(0, 255) | st.integers(0, 15), np.uint8), info=info,
        holder=column(st.integers(-1, len(holders) - 1), np.int32), holders=holders)


POLL_TIMES = st.integers(FIRST_SECOND, LAST_SECOND).map(
    lambda second: datetime.fromtimestamp(second, timezone.utc)) | st.just(POLL)
OPTIONS = st.fixed_dictionaries({"json": st.booleans(), "show_direction": st.booleans(),
                                 "show_bytes": st.booleans(), "show_namespace": st.booleans()})


@needs_compiled
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=row_events(), when=POLL_TIMES, options=OPTIONS,
       buffer_bytes=st.sampled_from([1 << 20, 700, 3000]))
def test_compiled_and_reference_write_the_same_bytes(events, when, options, buffer_bytes):
    """Small buffers too: lines split over several calls, and a buffer that must grow."""
    reference, compiled = both(events, when, buffer_bytes, **options)
    assert compiled == reference
    if options["json"]:                              # (text writes comm raw: it may hold a newline)
        assert [json.loads(line)["event"] for line in reference.splitlines()] == [events.event] * len(events)


@needs_compiled
@pytest.mark.parametrize("value", [5, 0xFFFF, 0xABCD, 0x0DB8])
def test_every_ipv6_zero_pattern_is_printed_as_inet_ntop_prints_it(value):
    """Each of the 256 patterns of zero words, with word 5 also 0xffff (the mapped and
    compatible forms), as text and JSON."""
    addresses = []
    for mask in range(256):
        words = [0 if mask >> i & 1 else value for i in range(8)]
        addresses.append(struct.pack("!8H", *words))
        addresses.append(struct.pack("!8H", *words[:5], 0xFFFF, *words[6:]))
    rows = np.zeros(len(addresses), CONNECTION_DTYPE)
    rows["family"] = 6
    rows["local_addr"] = np.frombuffer(b"".join(addresses), np.uint8).reshape(-1, 16)
    rows["remote_addr"] = rows["local_addr"][::-1]
    events = RowEvents("new", rows, np.zeros(len(rows), np.uint8))
    expected = [socket.inet_ntop(socket.AF_INET6, address) for address in addresses]
    reference, compiled = both(events, json=True)
    assert compiled == reference
    assert [json.loads(line)["local"] for line in compiled.splitlines()] == expected
    reference, compiled = both(events)
    assert compiled == reference
    assert [line.split(": ")[2].split(" -> ")[0] for line in compiled.decode().splitlines()] == [
        f"[{address}]:0" for address in expected]


@needs_compiled
def test_durations_over_the_whole_range_print_as_python_rounds_them():
    """round(x, 3)'s repr on ties (k/16), near-ties (k/2000), random doubles of every
    size and the limit where the compiled formatter hands over to Python."""
    rng = np.random.default_rng(17)
    values = np.concatenate([
        np.arange(0, 200_000) / 16, np.arange(0, 200_000) / 2000, rng.uniform(0, 1e12, 100_000),
        np.exp(rng.uniform(-750, 709, 100_000)), -np.exp(rng.uniform(-20, 30, 20_000)),
        np.nextafter(1e12, [0, np.inf]), [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324]])
    rows = np.zeros(len(values), CONNECTION_DTYPE)
    rows["family"] = 4
    events = RowEvents("closed", rows, np.zeros(len(rows), np.uint8), duration=values)
    reference, compiled = both(events, json=True)
    assert compiled == reference
    printed = [json.loads(line)["duration"] for line in compiled.splitlines()[:200_000:997]]
    assert printed == [round(value, 3) for value in values[:200_000:997]]


@needs_compiled
def test_every_second_of_a_leap_years_cycle_edges_and_the_far_years():
    """Per-row times: the day and year boundaries of 400 years, and datetime's ends."""
    days = np.arange(-800 * 366, 800 * 366, 7, dtype=np.int64)
    seconds = np.concatenate([days * 86400, days * 86400 - 1, [FIRST_SECOND, LAST_SECOND],
                              np.random.default_rng(3).integers(FIRST_SECOND, LAST_SECOND, 50_000)])
    times = seconds.astype(np.float64) + 0.75
    rows = np.zeros(len(times), CONNECTION_DTYPE)
    rows["family"] = 4
    events = RowEvents("new_and_closed", rows, np.zeros(len(rows), np.uint8), times=times)
    for as_json in (False, True):
        reference, compiled = both(events, json=as_json)
        assert compiled == reference


# -- the contract's new keys, exactly ---------------------------------------------------

HOLDERS = (Holder(container_id="0123456789abcdef0123", pod_uid="u-1", pod_namespace="default",
                  pod_name="web-1"),
           Holder(container_id="0123456789abcdef0123"))


def closed_events():
    rows = rows_of((4, "10.0.0.1", 41164, "192.0.2.7", 443, 7, 1000, 0, 4026531840),
                   (6, "::1", 41164, "2001:db8::5", 443, 7, 0, 0, 0))
    info = np.zeros(2, CLOSE_INFO_DTYPE)
    info[0]["bytes_sent"], info[0]["bytes_received"], info[0]["rtt_us"] = 1200, 53, 1250
    info[0]["segments_sent"], info[0]["retransmits"] = 10, 3
    info[0]["known"] = KNOWN_BYTES_SENT | KNOWN_BYTES_RECEIVED | KNOWN_RTT | KNOWN_SEGMENTS_SENT
    closed_at = datetime(2021, 8, 9, 11, 43, 40, 900_000, tzinfo=timezone.utc).timestamp()
    return RowEvents("new_and_closed", rows, np.array([2, 1], np.uint8),
                     duration=np.array([12.3456, np.nan]),
                     owners=[Owner(1234, "curl"), Owner(77, "wörk\ter")],
                     times=np.array([POLL.timestamp(), closed_at]),
                     unknown=np.array([0, UNKNOWN_LOCAL_ADDRESS | UNKNOWN_REMOTE_PORT], np.uint8),
                     info=info, holder=np.array([0, 1], np.int32), holders=HOLDERS)


@pytest.mark.parametrize("compiled", FORMATTERS)
def test_json_lines_of_closed_events_carry_tcp_info_netns_and_holder(compiled):
    lines = LineFormatter(json=True, compiled=compiled).format(closed_events(), POLL).decode()
    assert lines.splitlines() == [
        '{"time": "2021-08-09T11:43:46+00:00", "event": "new_and_closed", "family": 4, '
        '"local": "10.0.0.1", "local_port": 41164, "remote": "192.0.2.7", "remote_port": 443, '
        '"state": "CLOSE", "uid": 1000, "inode": 0, "direction": "out", "pid": 1234, '
        '"comm": "curl", "duration": 12.346, "bytes_sent": 1200, "bytes_received": 53, '
        '"rtt_ms": 1.25, "retransmits": null, "segments_sent": 10, "segments_received": null, '
        '"netns": 4026531840, "container_id": "0123456789abcdef0123", "pod_uid": "u-1", '
        '"pod_namespace": "default", "pod_name": "web-1"}',
        '{"time": "2021-08-09T11:43:40+00:00", "event": "new_and_closed", "family": 6, '
        '"local": null, "local_port": 41164, "remote": "2001:db8::5", "remote_port": null, '
        '"state": "CLOSE", "uid": 0, "inode": 0, "direction": "in", "pid": 77, '
        '"comm": "w\\u00f6rk\\ter", "duration": null, "bytes_sent": null, "bytes_received": null, '
        '"rtt_ms": null, "retransmits": null, "segments_sent": null, "segments_received": null, '
        '"netns": null, "container_id": "0123456789abcdef0123", "pod_uid": null, '
        '"pod_namespace": null, "pod_name": null}']


@pytest.mark.parametrize("compiled", FORMATTERS)
def test_text_lines_of_closed_events_with_every_suffix(compiled):
    formatter = LineFormatter(show_direction=True, show_bytes=True, show_namespace=True,
                              compiled=compiled)
    assert formatter.format(closed_events(), POLL).decode("utf-8").splitlines() == [
        "2021-08-09 11:43:46+00:00: New and closed connection: 10.0.0.1:41164 -> 192.0.2.7:443"
        " direction=out pid=1234 curl sent=1200 received=53 rtt=1.25ms netns=4026531840"
        " pod=default/web-1",
        "2021-08-09 11:43:40+00:00: New and closed connection: *:41164 -> [2001:db8::5]:*"
        " direction=in pid=77 wörk\ter sent=* received=* rtt=* netns=* container=0123456789ab"]
    plain = LineFormatter(compiled=compiled).format(closed_events(), POLL).decode("utf-8")
    assert plain.splitlines() == [
        "2021-08-09 11:43:46+00:00: New and closed connection: 10.0.0.1:41164 -> 192.0.2.7:443"
        " pid=1234 curl",
        "2021-08-09 11:43:40+00:00: New and closed connection: *:41164 -> [2001:db8::5]:*"
        " pid=77 wörk\ter"]


@pytest.mark.parametrize("compiled", FORMATTERS)
def test_new_events_have_no_closed_keys_and_unknown_ends_are_stars(compiled):
    rows = rows_of((4, "10.0.0.1", 41164, "127.0.0.1", 8080, 1, 1000, 99, 0),
                   (6, "::1", 22, "::ffff:127.0.0.1", 50000, 1, 0, 7, 12))
    events = RowEvents("new", rows, np.array([2, 1], np.uint8),
                       unknown=np.array([UNKNOWN_LOCAL_ADDRESS | UNKNOWN_REMOTE_PORT,
                                         UNKNOWN_LOCAL_PORT], np.uint8),
                       holder=np.array([-1, 0], np.int32),
                       holders=(Holder(pod_name="db-0"),))
    text = LineFormatter(show_bytes=True, show_namespace=True, compiled=compiled).format(events, POLL)
    assert text.decode().splitlines() == [
        "2021-08-09 11:43:46+00:00: New connection: *:41164 -> 127.0.0.1:* netns=*",
        "2021-08-09 11:43:46+00:00: New connection: [::1]:* -> [::ffff:127.0.0.1]:50000"
        " netns=12 pod=*/db-0"]
    lines = LineFormatter(json=True, compiled=compiled).format(events, POLL).splitlines()
    assert [list(json.loads(line))[13:] for line in lines] == [
        ["netns", "container_id", "pod_uid", "pod_namespace", "pod_name"]] * 2
    assert [(event["local"], event["local_port"], event["remote"], event["remote_port"],
             event["netns"], event["pod_name"]) for event in map(json.loads, lines)] == [
        (None, 41164, "127.0.0.1", None, None, None), ("::1", None, "::ffff:127.0.0.1", 50000, 12, "db-0")]


# -- bad columns ---------------------------------------------------------------------------

def _good(count=3):
    rows = rows_of(*[(4, "10.0.0.1", 1, "10.0.0.2", 2, 1, 0, 1, 0)] * count)
    return dict(event="closed", rows=rows, direction=np.zeros(count, np.uint8),
                duration=np.zeros(count), times=np.full(count, 1.6e9),
                unknown=np.zeros(count, np.uint8), info=np.zeros(count, CLOSE_INFO_DTYPE),
                holder=np.zeros(count, np.int32), holders=(Holder(),),
                owners=[Owner(1, "x")] * count)


def _bad_columns():
    """(what, changes to good columns, the error both formatters raise)."""
    rows = _good(6)["rows"]
    cases = [("rows of another dtype", {"rows": np.zeros(3, np.float64)}, TypeError),
             ("strided rows", {"rows": rows[::2]}, ValueError),
             ("unknown event", {"event": "opened"}, ValueError),
             ("owners too short", {"owners": [None]}, ValueError)]
    for name, dtype in (("direction", np.uint8), ("duration", np.float64), ("times", np.float64),
                        ("unknown", np.uint8), ("info", CLOSE_INFO_DTYPE), ("holder", np.int32)):
        other = np.int64 if dtype != np.int64 else np.int32
        cases += [(f"{name} of another dtype", {name: np.zeros(3, other)}, TypeError),
                  (f"{name} too short", {name: np.zeros(2, dtype)}, ValueError),
                  (f"{name} too long", {name: np.zeros(4, dtype)}, ValueError),
                  (f"{name} strided", {name: np.zeros(6, dtype)[::2]}, ValueError),
                  (f"{name} 2-d", {name: np.zeros((3, 1), dtype)}, ValueError),
                  (f"{name} a list", {name: [0, 0, 0]}, TypeError)]
    family = rows.copy()[:3]
    family["family"][1] = 5
    cases += [("family 5", {"rows": family}, ValueError),
              ("direction code 4", {"direction": np.array([0, 4, 0], np.uint8)}, ValueError),
              ("holder index past the holders", {"holder": np.array([0, 1, 0], np.int32)}, ValueError),
              ("holder index -2", {"holder": np.array([0, -2, 0], np.int32)}, ValueError),
              ("a NaN time", {"times": np.array([1.0, np.nan, 1.0])}, ValueError),
              ("a time past the year 9999", {"times": np.array([1.0, 2.6e11, 1.0])}, ValueError),
              ("a time before the year 1", {"times": np.array([1.0, -6.3e10, 1.0])}, ValueError)]
    return cases


@pytest.mark.parametrize("compiled", FORMATTERS)
@pytest.mark.parametrize("what, changes, error", _bad_columns(), ids=[case[0] for case in _bad_columns()])
def test_both_formatters_refuse_bad_columns(compiled, what, changes, error):
    columns = {**_good(), **changes}
    events = RowEvents(columns.pop("event"), **columns)
    for as_json in (False, True):
        with pytest.raises(error):
            LineFormatter(json=as_json, compiled=compiled).format(events, POLL)


@needs_compiled
@pytest.mark.parametrize("what, changes, error", _bad_columns(), ids=[case[0] for case in _bad_columns()])
def test_the_compiled_entry_point_checks_what_it_is_handed(what, changes, error):
    """Called directly, without the wrapper's checks: it raises before writing a byte."""
    columns = {**_good(), **changes}
    out = np.zeros(1 << 16, np.uint8)
    with pytest.raises(error):
        _format.format_into(out, columns["rows"], columns["event"], columns["direction"], 0,
                            json_lines=True, poll_time=0, duration=columns["duration"],
                            times=columns["times"], unknown=columns["unknown"], info=columns["info"],
                            holder=columns["holder"], holders=columns["holders"],
                            owners=columns["owners"])
    if what not in ("family 5", "direction code 4") and "holder index" not in what and "time" not in what:
        assert not out.any()                 # checked before the first line


@needs_compiled
def test_the_compiled_entry_point_writes_whole_lines_into_what_fits():
    events = closed_events()
    whole = LineFormatter(json=True, compiled=_format).format(events, POLL)
    out = np.zeros(1100 + len(whole.splitlines(True)[0]), np.uint8)
    done, size = _format.format_into(out, events.rows, events.event, events.direction, 0,
                                     json_lines=True, poll_time=int(POLL.timestamp()),
                                     duration=events.duration, times=events.times,
                                     unknown=events.unknown, info=events.info, holder=events.holder,
                                     holders=events.holders, owners=events.owners)
    assert (done, out[:size].tobytes()) == (1, whole.splitlines(True)[0])
    assert _format.format_into(np.zeros(100, np.uint8), events.rows, events.event,
                               events.direction, 0) == (0, 0)      # a buffer too small for any line
    with pytest.raises(ValueError, match="start"):
        _format.format_into(out, events.rows, events.event, events.direction, 3)
