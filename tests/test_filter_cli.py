"""The selection options on the command line, on real sockets in every state (the socket zoo,
its own namespace), through /proc and netlink (where --once lets the kernel filter), against
a plain-Python model of each option applied to the unfiltered output; --state's groups
against ss's."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from socket_zoo import Zoo
from test_filters_kernel import ss_endpoints

from tcpfast.schema import STATE_CODES

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and ip(8): the zoo lives in a namespace of its own")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def zoo():
    """A zoo for each test (0.1 s to make): its TIME_WAIT, SYN_RECV and SYN_SENT
    sockets last a minute or two, which a module's tests outlast on a busy machine."""
    with Zoo() as made:
        yield made


def run(zoo: Zoo, *options: str) -> list[dict]:
    """``tcpfast --once --json OPTIONS`` inside the zoo's namespace: its events, time left out."""
    result = subprocess.run(["ip", "netns", "exec", zoo.name, sys.executable, "-m", "tcpfast",
                             "--once", "--json", *options], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        del event["time"]
    return events


def key(event: dict) -> tuple:
    return (event["family"], event["local"], event["local_port"], event["remote"],
            event["remote_port"], event["inode"], event["state"])


def inside(address: str, family: int, networks: list[str]) -> bool:
    """The mask's rule: an IPv4 network holds IPv4 addresses and IPv4-mapped IPv6 ones."""
    parsed = ipaddress.ip_address(address)
    mapped = parsed.ipv4_mapped if family == 6 else None
    candidates = [parsed] if mapped is None else [parsed, mapped]
    return any(candidate in ipaddress.ip_network(network, strict=False)
               for network in networks for candidate in candidates
               if candidate.version == ipaddress.ip_network(network, strict=False).version)


def model(events: list[dict], options: list[str]) -> set[tuple]:
    """What the options keep of ``events``, decided one event at a time in plain Python."""
    kept = []
    flags = {option for option in options if option in ("--inbound", "--outbound")}
    rest = [option for option in options if option not in flags]
    pairs = dict(zip(rest[::2], rest[1::2]))
    for event in events:
        ports = lambda name: {int(p) for p in pairs[name].split(",")}      # noqa: E731
        networks = lambda name: pairs[name].split(",")                      # noqa: E731
        checks = [
            "--port" not in pairs or bool({event["local_port"], event["remote_port"]} & ports("--port")),
            "--local-port" not in pairs or event["local_port"] in ports("--local-port"),
            "--remote-port" not in pairs or event["remote_port"] in ports("--remote-port"),
            "--local" not in pairs or inside(event["local"], event["family"], networks("--local")),
            "--remote" not in pairs or inside(event["remote"], event["family"], networks("--remote")),
            "--uid" not in pairs or event["uid"] in ports("--uid"),
            not flags or event["direction"] in {"--inbound": {"in"}, "--outbound": {"out"}}.get(
                next(iter(flags)) if len(flags) == 1 else "", {"in", "out"}),
        ]
        if all(checks):
            kept.append(key(event))
    return set(kept)


def ports_of(zoo: Zoo) -> tuple[list[int], list[int]]:
    """Ports the zoo holds: its listeners' (v4 and v6), and its clients' (the local port
    of an established socket whose remote port is a listener's)."""
    rows = zoo.dump()
    listeners = sorted(set(rows["local_port"][rows["state"] == STATE_CODES["LISTEN"]].tolist()))
    connected = rows[rows["state"] == STATE_CODES["ESTABLISHED"]]
    clients = sorted(set(connected["local_port"][np.isin(connected["remote_port"],
                                                          listeners)].tolist()))
    return listeners, clients


@pytest.fixture
def ports(zoo):
    return ports_of(zoo)


CASES = [
    ("--port", "{listener}"), ("--port", "{listener},{client}"), ("--local-port", "{listener}"),
    ("--remote-port", "{listener}"), ("--local", "127.0.0.2/32"), ("--remote", "127.0.0.0/8"),
    ("--remote", "2001:db8::/32"), ("--local", "::1/128,192.0.2.0/24"), ("--inbound",),
    ("--outbound",), ("--inbound", "--outbound"), ("--uid", "0"), ("--uid", "65534"),
    ("--inbound", "--local-port", "{listener}"), ("--remote", "127.0.0.0/8", "--outbound"),
    ("--port", "{listener}", "--local", "127.0.0.0/8", "--uid", "0"),
]


@pytest.mark.parametrize("source", ["proc", "netlink"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: " ".join(case))
def test_each_option_keeps_what_the_model_keeps(zoo, ports, source, case):
    listeners, clients = ports
    options = [part.format(listener=listeners[0], client=clients[0]) for part in case]
    everything = run(zoo, "--source", source, "--state", "all")
    chosen = run(zoo, "--source", source, "--state", "all", *options)
    assert {key(event) for event in chosen} == model(everything, options)
    assert len(chosen) == len({key(event) for event in chosen})       # each once


def test_the_kernel_filter_changes_nothing_but_the_work(zoo, ports):
    """With --once the kernel filters netlink's dump (--state as the states a chosen
    connection lives through): the same events as /proc's, which the mask alone selects."""
    listener = str(ports[0][0])
    for options in (["--remote-port", listener], ["--state", "established", "--port", listener],
                    ["--state", "listen"], ["--state", "syn-recv,time-wait"]):
        pushed = run(zoo, "--source", "netlink", *options)
        by_proc = run(zoo, "--source", "proc", *options)
        assert {key(e) for e in pushed} == {key(e) for e in by_proc} != set(), options


def endpoints(events: list[dict]) -> list[tuple]:
    """(local, local port, remote, remote port) of each event, as ss_endpoints gives ss's."""
    return sorted(((ipaddress.ip_address(e["local"]), e["local_port"],
                    ipaddress.ip_address(e["remote"]), e["remote_port"]) for e in events), key=str)


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2 ss is not installed")
@pytest.mark.parametrize("source", ["proc", "netlink"])
@pytest.mark.parametrize("group", ["all", "connected", "synchronized", "bucket", "big",
                                   "time-wait", "listening"])
def test_state_groups_select_what_ss_selects(zoo, source, group):
    """``--state GROUP``: the first poll prints what ``ss -tanH state GROUP`` lists."""
    assert endpoints(run(zoo, "--source", source, "--state", group)) == \
        ss_endpoints(zoo.ss("-tanH", "state", group))


@pytest.mark.parametrize("source", ["proc", "netlink"])
def test_watching_new_and_closed_follow_the_selection(source):
    """--port A while connections to A and B open and close: A's are reported new and
    closed; B's, closed first, never (had they been, they would be there by A's closes)."""
    import socket

    from watcher_process import WatcherProcess
    with socket.socket() as a, socket.socket() as b, socket.socket() as marker:
        for server in (a, b, marker):
            server.bind(("127.0.0.1", 0))
            server.listen()
        port_a, port_b = a.getsockname()[1], b.getsockname()[1]
        watcher = WatcherProcess("--source", source, "--interval", "0.2", "--json",
                                 "--events", "new,closed", "--port", f"{port_a},{marker.getsockname()[1]}")
        try:                     # the first poll prints the marker listener: polling has begun
            watcher.wait_until(lambda: any(e["local_port"] == marker.getsockname()[1]
                                           for e in watcher.events()))
            pairs = {}
            for name, server in (("a", a), ("b", b)):
                client = socket.create_connection(server.getsockname())
                pairs[name] = (client, server.accept()[0])
            watcher.wait_until(lambda: sum(e["event"] == "new" and e["state"] == "ESTABLISHED"
                                           for e in watcher.events()) >= 2)
            for name in ("b", "a"):
                for end in pairs[name]:
                    end.close()
            watcher.wait_until(lambda: sum(e["event"] == "closed" for e in watcher.events()) >= 2)
            watcher.stop()
        finally:
            watcher.kill()
    events = watcher.events()
    assert not [e for e in events if port_b in (e["local_port"], e["remote_port"])]
    closed = [e for e in events if e["event"] == "closed"]
    assert len(closed) == 2 and all(port_a in (e["local_port"], e["remote_port"]) for e in closed)
    assert {e["direction"] for e in closed} == {"in", "out"} and watcher.err == []
