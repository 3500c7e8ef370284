"""Filters the kernel evaluates, run by the real kernel on real sockets in every state.

The sockets are tests/socket_zoo.py's, in a network namespace of their own.
The kernel's answer to a dump carrying a filter's state mask and bytecode
(both request types: TCPDIAG_GETSOCK and SOCK_DIAG_BY_FAMILY) must be the
rows the mask keeps of an unfiltered dump; as user nobody too; ss's state
groups must select the rows ``--state`` selects.
"""

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from socket_zoo import Zoo, snapshot_of

from tcpfast.enrich import direction
from tcpfast.filters import STATE_GROUPS, Filter, KernelFilter, kernel_filter, parse_states
from tcpfast.schema import STATE_CODES
from tcpfast.sources.sockdiag import SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK

ROOT = Path(__file__).parent.parent
REQUESTS = {"TCPDIAG_GETSOCK": TCPDIAG_GETSOCK, "SOCK_DIAG_BY_FAMILY": SOCK_DIAG_BY_FAMILY}

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 ip is not installed"),
]


@pytest.fixture
def zoo():
    """A zoo for each test (0.1 s to make): its TIME_WAIT, SYN_RECV and SYN_SENT
    sockets last a minute or two, which a module's tests outlast on a busy machine."""
    with Zoo() as made:
        yield made


def cookies(rows: np.ndarray) -> list[int]:
    return sorted(rows["cookie"].tolist())


def addresses_of(rows: np.ndarray) -> list:
    """Every address the rows hold, as ipaddress objects (IPv4 rows' 4 bytes, IPv6 rows' 16)."""
    found = set()
    for family, *ends in zip(rows["family"].tolist(), rows["local_addr"], rows["remote_addr"]):
        for end in ends:
            found.add(ipaddress.ip_address(bytes(end[:4] if family == 4 else end)))
    return sorted(found, key=lambda address: (address.version, address))


@st.composite
def zoo_filters(draw, rows: np.ndarray):
    """Filters over the ports and addresses the zoo has (and a few it has not)."""
    ports = sorted(set(rows["local_port"].tolist()) | set(rows["remote_port"].tolist())
                   | {1, 65535})
    port_sets = st.frozensets(st.sampled_from(ports), max_size=4)
    known = addresses_of(rows)
    known += [ipaddress.IPv6Address(f"::ffff:{a}") for a in known if a.version == 4]

    def network(address, shorter):
        """The address itself, mostly, or a network around it."""
        length = max(address.max_prefixlen - shorter, 0) if shorter < 24 else shorter % 129
        return ipaddress.ip_network(f"{address}/{min(length, address.max_prefixlen)}",
                                    strict=False)

    networks = st.lists(st.one_of(
        st.builds(network, st.sampled_from(known),
                  st.one_of(st.just(0), st.integers(0, 8), st.integers(0, 255))),
        st.sampled_from([ipaddress.ip_network(n) for n in (
            "127.0.0.0/8", "127.0.0.0/16", "::ffff:127.0.0.0/104", "::/0", "0.0.0.0/0",
            "2001:db8::/32", "2001:db8::/64", "10.0.0.0/8", "::1/128", "192.0.2.0/24")])),
        max_size=3).map(tuple)

    choices = {
        "ports": port_sets, "local_ports": port_sets, "remote_ports": port_sets,
        "local_networks": networks, "remote_networks": networks,
        "directions": st.sampled_from([frozenset({direction.IN}), frozenset({direction.OUT})]),
        "uids": st.sampled_from([frozenset({0}), frozenset({65534})]),
        "states": st.one_of(st.sampled_from(sorted(STATE_GROUPS)).map(parse_states),
                            st.frozensets(st.sampled_from(sorted(STATE_CODES.values())),
                                          min_size=1, max_size=4)),
    }
    # A few conditions at a time: with all of them most filters would keep nothing.
    names = draw(st.sets(st.sampled_from(sorted(choices)), min_size=1, max_size=3))
    return Filter(**{name: draw(choices[name]) for name in names})


def pushed_part(spec: Filter, kernel: KernelFilter) -> Filter:
    return Filter(**{name: getattr(spec, name) for name in kernel.pushed})


@pytest.mark.parametrize("request_type", sorted(REQUESTS))
def test_kernel_answers_what_the_mask_keeps(zoo, request_type):
    kind = REQUESTS[request_type]
    whole = zoo.dump()

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              database=None)
    @given(spec=zoo_filters(whole))
    def check(spec):
        kernel = kernel_filter(spec)
        before = zoo.dump()
        answer = zoo.dump(kernel, kind)
        assert snapshot_of(zoo.dump()) == snapshot_of(before), "the zoo changed during the check"
        assert cookies(answer) == cookies(before[pushed_part(spec, kernel).mask(before)])
        # What a source does with it: the mask on the kernel's rows, directions from all listeners.
        listeners = before[before["state"] == STATE_CODES["LISTEN"]]
        codes = direction.directions(answer, listeners=listeners)
        assert (cookies(answer[spec.mask(answer, codes)])
                == cookies(before[spec.mask(before, direction.directions(before))]))

    check()


def test_the_zoo_is_what_the_filters_are_tested_on(zoo):
    """Every state over both families, IPv4-mapped rows, several addresses and ports: a
    filter drawn from them selects some rows and leaves others."""
    rows = zoo.dump()
    mapped = [address for address in addresses_of(rows)
              if address.version == 6 and address.ipv4_mapped]
    assert len(mapped) >= 3 and len(addresses_of(rows)) >= 15
    assert len(rows) > 150
    some = Filter(local_networks=["127.0.0.0/16"], remote_ports={0})
    assert 0 < some.mask(rows).sum() < len(rows)


@pytest.mark.parametrize("request_type", sorted(REQUESTS))
def test_one_kind_of_condition_at_a_time(zoo, request_type):
    """Each pushed condition alone narrows the dump to what the mask keeps (and is not empty)."""
    kind = REQUESTS[request_type]
    rows = zoo.dump()
    listener = rows[(rows["state"] == STATE_CODES["LISTEN"]) & (rows["family"] == 4)][0]
    port = int(listener["local_port"])
    for spec in (Filter(local_ports={port}), Filter(remote_ports={port}), Filter(ports={port}),
                 Filter(local_networks=["127.0.1.0/24"]), Filter(remote_networks=["127.0.0.1"]),
                 Filter(remote_networks=["::ffff:127.0.0.0/104"]),
                 Filter(local_networks=["2001:db8::/64", "::1"]),
                 Filter(states=parse_states("syn-sent,closing"))):
        kernel = kernel_filter(spec)
        answer = zoo.dump(kernel, kind)
        assert 0 < len(answer) < len(rows), spec
        assert cookies(answer) == cookies(rows[spec.mask(rows)]), spec


def test_the_longest_program_is_accepted_and_right(zoo):
    rows = zoo.dump()
    seen = sorted(set(rows["remote_port"].tolist()) - {0})[:40]
    filler = [port for port in range(1, 5000) if port not in seen]
    spec = Filter(remote_ports=seen + filler[:4095 - len(seen)])        # 4095 ports: the most
    kernel = kernel_filter(spec)
    assert kernel.pushed == ("remote_ports",) and len(kernel.bytecode) > 65_000
    assert cookies(zoo.dump(kernel)) == cookies(rows[spec.mask(rows)]) != []


def test_the_kernel_audits_the_program(zoo):
    """The attribute reaches the kernel's audit: a jump that lands inside an op, or an op the
    kernel does not know, is refused (EINVAL), so the answers above are its own filtering."""
    good = kernel_filter(Filter(ports={1, 2}))
    cut = bytearray(good.bytecode)
    struct.pack_into("=H", cut, 2, 8)                       # "no" 8: the middle of an op
    for bytecode in (bytes(cut), b"\x63\x04\x08\x00"):
        with pytest.raises(OSError) as refused:
            zoo.dump(KernelFilter(good.state_mask, bytecode, (), ()))
        assert refused.value.errno == 22


AS_NOBODY = """
import json, os, sys
sys.path.insert(0, {tests!r})
from tcpfast.filters import Filter, KernelFilter, kernel_filter
from tcpfast.sources.sockdiag import SockDiag
os.setgroups([]); os.setgid(65534); os.setuid(65534)
answers = []
for spec in json.loads(sys.argv[1]):
    if spec.pop("mark", None):
        # MARK_COND (mark 0, mask 0): the one op the kernel refuses without CAP_NET_ADMIN.
        kernel = KernelFilter(kernel_filter(Filter()).state_mask,
                              bytes([10, 12, 16, 0]) + bytes(8), (), ())
    else:
        kernel = kernel_filter(Filter(**spec))
    try:
        with SockDiag() as diag:
            answers.append(sorted(diag.dump(kernel).rows["cookie"].tolist()))
    except OSError as error:
        answers.append(error.errno)
print(json.dumps(answers))
"""


def test_unprivileged_dumps_take_the_bytecode(zoo):
    """As user nobody (sock_diag dumps need no privilege) the kernel filters the same; only
    MARK_COND, which no option uses, is refused (EPERM) where root may use it."""
    rows = zoo.dump()
    port = int(rows[(rows["state"] == STATE_CODES["LISTEN"]) & (rows["family"] == 4)]["local_port"][0])
    specs = [dict(local_ports=[port]), dict(remote_networks=["::ffff:127.0.0.0/104"]),
             dict(ports=[port], local_networks=["127.0.0.0/8"], states=[1, 10]), dict(mark=True)]
    script = AS_NOBODY.format(tests=str(Path(__file__).parent))
    result = subprocess.run(["ip", "netns", "exec", zoo.name, sys.executable, "-c", script,
                             json.dumps(specs)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    for spec, answer in zip(specs[:3], answers):
        assert answer == cookies(rows[Filter(**spec).mask(rows)]) != [], spec
    assert answers[3] == 1                                   # EPERM
    mark = KernelFilter(kernel_filter(Filter()).state_mask, bytes([10, 12, 16, 0]) + bytes(8), (), ())
    assert cookies(zoo.dump(mark)) == cookies(rows)          # root: every mark & 0 == 0


# ---- ss's state groups ---------------------------------------------------------------


def ss_endpoints(text: str) -> list[tuple]:
    """(local, local port, peer, peer port) of each line ``ss -tanH`` printed: its last two
    columns (the state column is left out when one state is asked for)."""
    found = []
    for line in text.splitlines():
        ends = []
        for column in line.split()[-2:]:
            address, port = column.rsplit(":", 1)
            address = address.strip("[]")
            ends += [ipaddress.ip_address("::" if address == "*" else address),
                     0 if port == "*" else int(port)]
        found.append(tuple(ends))
    return sorted(found, key=str)


def row_endpoints(rows: np.ndarray) -> list[tuple]:
    found = []
    for row in rows:
        size = 4 if row["family"] == 4 else 16
        found.append((ipaddress.ip_address(bytes(row["local_addr"][:size])), int(row["local_port"]),
                      ipaddress.ip_address(bytes(row["remote_addr"][:size])),
                      int(row["remote_port"])))
    return sorted(found, key=str)


SS_NAMES = [*STATE_GROUPS, "established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2",
            "time-wait", "closed", "close-wait", "last-ack", "listening", "closing"]


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2 ss is not installed")
@pytest.mark.parametrize("name", SS_NAMES)
def test_state_names_select_what_ss_selects(zoo, name):
    """``--state NAME`` keeps the sockets ``ss -tanH state NAME`` lists, by the mask on an
    unfiltered dump and by the kernel's state mask alike."""
    spec = Filter(states=parse_states(name))
    rows = zoo.dump()
    by_ss = ss_endpoints(zoo.ss("-tanH", "state", name))
    assert snapshot_of(zoo.dump()) == snapshot_of(rows), "the zoo changed during the check"
    assert row_endpoints(rows[spec.mask(rows)]) == by_ss
    assert row_endpoints(zoo.dump(kernel_filter(spec))) == by_ss
    if name in STATE_GROUPS:
        assert by_ss, f"ss lists nothing in state {name}"


def test_a_listen_only_dump_lists_the_listeners(zoo):
    rows = zoo.dump()
    listeners = zoo.dump(kernel_filter(Filter(states={STATE_CODES["LISTEN"]})))
    assert cookies(listeners) == cookies(rows[rows["state"] == STATE_CODES["LISTEN"]]) != []
