"""Filters on arrays: the option texts parsed (and refused in one line), and the mask held
against a plain-Python model of the same filter, row by row, on hypothesis-made rows
(IPv4, IPv6, IPv4-mapped IPv6, every state) and filters. The kernel's side is
tests/test_filters_kernel.py."""

import ipaddress
import pwd

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpfast.enrich import direction
from tcpfast.filters import (
    STATE_GROUPS,
    Filter,
    kernel_filter,
    kernel_state_mask,
    parse_networks,
    parse_ports,
    parse_states,
    parse_uids,
)
from tcpfast.filters.kernel import MAX_BYTECODE
from tcpfast.schema import CONNECTION_DTYPE, STATE_CODES, STATE_NAMES

S = STATE_CODES

# ---- option texts ------------------------------------------------------------------


def test_ports_lists_and_their_bounds():
    assert parse_ports("22") == {22}
    assert parse_ports(" 80, 443 ,80") == {80, 443}
    assert parse_ports("0,65535") == {0, 65535}


@pytest.mark.parametrize("text,message", [
    ("65536", "not a port number (0 to 65535): '65536'"),
    ("80,http", "not a port number (0 to 65535): 'http' in '80,http'"),
    ("-1", "not a port number (0 to 65535): '-1'"),
    ("+22", "not a port number (0 to 65535): '+22'"),
    ("٢٢", "not a port number (0 to 65535): '٢٢'"),        # digits, but not ASCII ones
    ("1_000", "not a port number (0 to 65535): '1_000'"),
    (" , ", "no value in ' , '"),
    ("", "no value in ''"),
])
def test_bad_ports_are_one_line_quoting_the_text(text, message):
    with pytest.raises(ValueError) as raised:
        parse_ports(text)
    assert str(raised.value) == message


def test_networks_v4_v6_and_single_addresses():
    assert parse_networks("10.0.0.0/8,2001:db8::/32,192.0.2.7") == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"))
    assert parse_networks("10.1.2.3/8") == (ipaddress.ip_network("10.0.0.0/8"),)   # as ip and ss
    assert parse_networks("::ffff:10.0.0.0/104, 10.0.0.0/8,10.0.0.0/8") == (
        ipaddress.ip_network("::ffff:10.0.0.0/104"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize("text,message", [
    ("10.0.0.0/33", "not an address or CIDR network: '10.0.0.0/33'"),
    ("10.0.0.0/8,example.com", "not an address or CIDR network: 'example.com' in "
                               "'10.0.0.0/8,example.com'"),
    ("[::1]", "not an address or CIDR network: '[::1]'"),
    (",", "no value in ','"),
])
def test_bad_networks(text, message):
    with pytest.raises(ValueError) as raised:
        parse_networks(text)
    assert str(raised.value) == message


def test_uids_by_number_or_by_name():
    nobody = pwd.getpwnam("nobody").pw_uid
    assert parse_uids("0,1000") == {0, 1000}
    assert parse_uids("root, nobody") == {0, nobody}
    assert parse_uids("4294967295") == {2**32 - 1}


@pytest.mark.parametrize("text,message", [
    ("4294967296", "not a user id (0 to 4294967295): '4294967296'"),
    ("0,no-such-user-here", "no such user: 'no-such-user-here' in '0,no-such-user-here'"),
    ("-5", "no such user: '-5'"),
])
def test_bad_uids(text, message):
    with pytest.raises(ValueError) as raised:
        parse_uids(text)
    assert str(raised.value) == message


def test_states_by_kernel_and_ss_names_and_groups():
    assert parse_states("established,listen") == {S["ESTABLISHED"], S["LISTEN"]}
    assert parse_states("Time_Wait,time-wait") == {S["TIME_WAIT"]}
    spellings = {"estab": "ESTABLISHED", "syn-sent": "SYN_SENT", "syn-recv": "SYN_RECV",
                 "syn-rcv": "SYN_RECV", "SYN-RECV": "SYN_RECV", "fin-wait-1": "FIN_WAIT1",
                 "FIN-WAIT-2": "FIN_WAIT2", "unconnected": "CLOSE", "UNCONN": "CLOSE",
                 "closed": "CLOSE", "close": "CLOSE", "close-wait": "CLOSE_WAIT",
                 "last-ack": "LAST_ACK", "listening": "LISTEN", "closing": "CLOSING"}
    for spelling, name in spellings.items():
        assert parse_states(spelling) == {S[name]}, spelling
    every = set(STATE_NAMES)
    assert parse_states("all") == every
    assert parse_states("connected") == every - {S["LISTEN"], S["CLOSE"]}
    assert parse_states("synchronized") == every - {S["LISTEN"], S["CLOSE"], S["SYN_SENT"]}
    assert parse_states("bucket") == {S["SYN_RECV"], S["TIME_WAIT"]}
    assert parse_states("BIG") == every - {S["SYN_RECV"], S["TIME_WAIT"]}
    assert parse_states("bucket,listen") == {S["SYN_RECV"], S["TIME_WAIT"], S["LISTEN"]}
    assert set(STATE_GROUPS) == {"all", "connected", "synchronized", "bucket", "big"}


@pytest.mark.parametrize("text,quoted", [
    ("bogus", "unknown state 'bogus'"),
    ("established,nope", "unknown state 'nope'"),
    ("new-syn-recv", "unknown state 'new-syn-recv' ('new-syn-recv': the kernel's own, never listed)"),
    ("bound-inactive", "unknown state 'bound-inactive' ('bound-inactive': the kernel's own"),
    (" ", "unknown state ' '"),
])
def test_bad_states_are_one_line(text, quoted):
    with pytest.raises(ValueError) as raised:
        parse_states(text)
    message = str(raised.value)
    assert message.startswith(quoted) and "\n" not in message and "connected" in message


def test_filter_checks_and_freezes_its_values():
    spec = Filter(ports=[80, 80, 443], remote_networks=["10.1.2.3/8", "::1"], states={1})
    assert spec.ports == frozenset({80, 443})
    assert spec.remote_networks == (ipaddress.ip_network("10.0.0.0/8"),
                                    ipaddress.ip_network("::1/128"))
    assert spec.conditions == ("ports", "remote_networks", "states") and spec
    assert not Filter() and Filter().conditions == ()
    assert hash(spec) == hash(Filter(ports={443, 80}, remote_networks=["10.0.0.0/8", "::1"],
                                     states=[1]))
    for bad, message in ((dict(ports={70000}), "ports: ports are whole numbers"),
                         (dict(local_ports={"22"}), "local_ports: ports are whole numbers"),
                         (dict(states={12}), "states: not all TCP state codes"),
                         (dict(directions={7}), "directions: not all direction codes"),
                         (dict(uids={-1}), "uids: not all user ids"),
                         (dict(local_networks=["nonsense"]), "local_networks: ")):
        with pytest.raises(ValueError, match=message):
            Filter(**bad)


def test_kernel_state_mask():
    assert kernel_state_mask(None) == 0xFFFFFFFF & ~(1 << 13)     # all but BOUND_INACTIVE
    assert kernel_state_mask({S["LISTEN"]}) == 1 << 10
    assert kernel_state_mask({S["SYN_RECV"]}) == 1 << 3 | 1 << 12  # with pending handshakes
    assert kernel_state_mask(set()) == 0
    with pytest.raises(ValueError):
        kernel_state_mask({13})


# ---- the mask against a model --------------------------------------------------------

IPV4_POOL = [ipaddress.IPv4Address(a) for a in ("10.1.2.3", "10.1.200.9", "10.77.0.1",
                                                  "127.0.0.1", "192.0.2.7", "0.0.0.0")]
IPV6_POOL = [ipaddress.IPv6Address(a) for a in ("2001:db8::1", "2001:db8:0:1::5", "::1",
                                                  "fe80::1", "::", "::10.1.2.3")]
PORT_POOL = [0, 22, 80, 443, 8080, 32768, 60999, 65535]


def _ipv4():
    return st.one_of(st.sampled_from(IPV4_POOL), st.builds(ipaddress.IPv4Address,
                                                           st.integers(0, 2**32 - 1)))


def _ipv6():
    return st.one_of(st.sampled_from(IPV6_POOL),
                     st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)))


def _mapped():
    return _ipv4().map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}"))


@st.composite
def _row(draw):
    family = draw(st.sampled_from([4, 6]))
    if family == 4:
        local, remote = draw(_ipv4()), draw(_ipv4())
    else:
        kinds = st.one_of(_ipv6(), _mapped())
        local, remote = draw(kinds), draw(kinds)
    port = st.one_of(st.sampled_from(PORT_POOL), st.integers(0, 65535))
    return (family, local, draw(port), remote, draw(port), draw(st.sampled_from(sorted(STATE_NAMES))),
            draw(st.sampled_from([0, 1000, 65534, 2**32 - 1])), draw(st.sampled_from(range(4))))


def to_rows(raw) -> np.ndarray:
    rows = np.zeros(len(raw), dtype=CONNECTION_DTYPE)
    for index, (family, local, lport, remote, rport, state, uid, _) in enumerate(raw):
        row = rows[index]
        row["family"], row["local_port"], row["remote_port"] = family, lport, rport
        row["state"], row["uid"], row["inode"] = state, uid, index + 1
        row["local_addr"][:len(local.packed)] = np.frombuffer(local.packed, np.uint8)
        row["remote_addr"][:len(remote.packed)] = np.frombuffer(remote.packed, np.uint8)
    return rows


def _network():
    v4 = st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
                   _ipv4(), st.integers(0, 32))
    v6 = st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
                   st.one_of(_ipv6(), _mapped()), st.integers(0, 128))
    return st.one_of(v4, v6)


def _maybe(values):
    return st.one_of(st.none(), values)


FILTERS = st.builds(
    Filter,
    ports=_maybe(st.frozensets(st.sampled_from(PORT_POOL), max_size=3)),
    local_ports=_maybe(st.frozensets(st.sampled_from(PORT_POOL), max_size=3)),
    remote_ports=_maybe(st.frozensets(st.sampled_from(PORT_POOL), max_size=3)),
    local_networks=_maybe(st.lists(_network(), max_size=3).map(tuple)),
    remote_networks=_maybe(st.lists(_network(), max_size=3).map(tuple)),
    directions=_maybe(st.frozensets(st.sampled_from([direction.IN, direction.OUT]), min_size=1)),
    uids=_maybe(st.frozensets(st.sampled_from([0, 1000, 4242]), max_size=2)),
    states=_maybe(st.one_of(st.sampled_from(sorted(STATE_GROUPS)).map(parse_states),
                            st.frozensets(st.sampled_from(sorted(STATE_NAMES)), max_size=4))),
)


def in_network(address, family: int, network) -> bool:
    """The documented rule: an IPv4 network holds IPv4 rows' addresses and the IPv4-mapped
    addresses of IPv6 rows; an IPv6 network holds IPv6 rows' addresses only."""
    if network.version == 4:
        ipv4 = address if family == 4 else address.ipv4_mapped
        return ipv4 is not None and ipv4 in network
    return family == 6 and address in network


def model(spec: Filter, raw_row, row_direction: int) -> bool:
    """The filter on one row, in plain Python, from the Filter's documented meaning."""
    family, local, lport, remote, rport, state, uid, _ = raw_row
    checks = [
        spec.ports is None or lport in spec.ports or rport in spec.ports,
        spec.local_ports is None or lport in spec.local_ports,
        spec.remote_ports is None or rport in spec.remote_ports,
        spec.local_networks is None or any(in_network(local, family, n)
                                           for n in spec.local_networks),
        spec.remote_networks is None or any(in_network(remote, family, n)
                                            for n in spec.remote_networks),
        spec.directions is None or row_direction in spec.directions,
        spec.uids is None or uid in spec.uids,
        spec.states is None or state in spec.states,
    ]
    return all(checks)


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(_row(), max_size=40), spec=FILTERS)
def test_mask_equals_the_model(raw, spec):
    rows = to_rows(raw)
    codes = np.array([row[-1] for row in raw], dtype=np.uint8)
    got = spec.mask(rows, codes)
    assert got.dtype == bool and got.shape == (len(rows),)
    assert got.tolist() == [model(spec, row, code) for row, code in zip(raw, codes.tolist())]


@settings(max_examples=100, deadline=None)
@given(raw=st.lists(_row(), max_size=40), spec=FILTERS)
def test_mask_without_directions_takes_them_from_the_rows(raw, spec):
    rows = to_rows(raw)
    codes = direction.directions(rows).tolist()
    assert spec.mask(rows).tolist() == [model(spec, row, code) for row, code in zip(raw, codes)]


def test_ipv4_networks_match_mapped_addresses_and_ipv6_networks_only_ipv6_rows():
    """The rule spelled out on the rows it is about."""
    raw = [(4, ipaddress.IPv4Address("10.1.2.3"), 1, ipaddress.IPv4Address("10.9.9.9"), 2, 1, 0, 0),
           (6, ipaddress.IPv6Address("::ffff:10.1.2.3"), 1,
            ipaddress.IPv6Address("::ffff:10.9.9.9"), 2, 1, 0, 0),
           (6, ipaddress.IPv6Address("::10.1.2.3"), 1, ipaddress.IPv6Address("::1"), 2, 1, 0, 0)]
    rows = to_rows(raw)
    assert Filter(local_networks=["10.0.0.0/8"]).mask(rows).tolist() == [True, True, False]
    assert Filter(local_networks=["::ffff:10.0.0.0/104"]).mask(rows).tolist() == [False, True, False]
    assert Filter(local_networks=["::/0"]).mask(rows).tolist() == [False, True, True]
    assert Filter(local_networks=["0.0.0.0/0"]).mask(rows).tolist() == [True, True, False]
    assert Filter(remote_networks=["10.9.9.9", "::1"]).mask(rows).tolist() == [True, True, True]


def test_an_empty_set_keeps_nothing_and_no_condition_keeps_everything():
    rows = to_rows([(4, IPV4_POOL[0], 80, IPV4_POOL[1], 443, 1, 0, 0)] * 3)
    assert Filter().mask(rows).tolist() == [True] * 3
    for empty in ("ports", "local_ports", "uids", "states", "remote_networks"):
        assert Filter(**{empty: ()}).mask(rows).tolist() == [False] * 3, empty
    assert Filter().mask(rows[:0]).shape == (0,)


def test_mask_refuses_what_is_not_rows():
    with pytest.raises(TypeError, match="CONNECTION_DTYPE"):
        Filter(ports={1}).mask(np.zeros(3))
    rows = to_rows([(4, IPV4_POOL[0], 80, IPV4_POOL[1], 443, 1, 0, 0)] * 3)
    with pytest.raises(ValueError, match="one code per row"):
        Filter(directions={direction.IN}).mask(rows, np.zeros(2, np.uint8))


# ---- what the kernel is handed -------------------------------------------------------


def test_what_is_pushed_and_what_is_left():
    spec = Filter(ports={22}, remote_networks=["10.0.0.0/8"], uids={0},
                  directions={direction.IN}, states=parse_states("established"))
    kernel = kernel_filter(spec)
    assert kernel.pushed == ("ports", "remote_networks", "states")
    assert kernel.left == ("directions", "uids")
    assert kernel.state_mask == 1 << S["ESTABLISHED"]
    assert kernel_filter(Filter(uids={0})) .bytecode == b""
    assert kernel_filter(Filter()).attribute() == b""


def test_program_size_limit_leaves_a_long_list_to_the_mask():
    fits = kernel_filter(Filter(remote_ports=range(4095)))      # 16 bytes a port, the last 12
    assert len(fits.bytecode) == 16 * 4095 - 4 <= MAX_BYTECODE and fits.pushed == ("remote_ports",)
    too_long = kernel_filter(Filter(remote_ports=range(4096), states={1}))
    assert too_long.bytecode == b"" and too_long.attribute() == b""
    assert too_long.pushed == ("states",) and too_long.left == ("remote_ports",)
