"""This host's own addresses read from a namespace's /proc tables, checked against iproute2's view.

A network namespace made by the test holds documentation addresses on a veth pair, an
AnyIP range routed ``local``, and a TPROXY-style ``local 0.0.0.0/0`` in a table of its
own; a process inside it gives its /proc/PID, as ``--proc-root`` would.
"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys

import pytest

from tcpfast.enrich.addresses import WatchedNetworks, own_networks, proc_root_in
from tests.namespaces import SESSION_TAG, add_namespace

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating a network namespace needs root"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs the ip command (iproute2)"),
]

ANYIP = ipaddress.ip_network("198.51.100.0/24")


def _ip(*arguments: str) -> str:
    return subprocess.run(["ip", *arguments], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def namespace():
    """(name, a process inside it): 192.0.2.7/24 and 2001:db8::7/64 on a veth pair's end."""
    name = f"tf14-a{SESSION_TAG}"
    add_namespace(name)
    inside = None
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", name, "addr", "add", "192.0.2.7/24", "dev", "v0")
        _ip("-n", name, "addr", "add", "2001:db8::7/64", "dev", "v0", "nodad")
        for link in ("v0", "v1"):          # no link-local address appearing between reads
            _ip("-n", name, "link", "set", link, "addrgenmode", "none")
            _ip("-n", name, "link", "set", link, "up")
        _ip("-n", name, "route", "add", "local", str(ANYIP), "dev", "lo")
        _ip("-n", name, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        inside = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c",
                                   "import sys; print('in', flush=True); sys.stdin.read()"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert inside.stdout.readline() == "in\n"
        yield name, inside.pid
    finally:
        if inside is not None:
            inside.stdin.close()
            inside.wait(timeout=10)
            inside.stdout.close()
        subprocess.run(["ip", "netns", "del", name], check=False)


def addresses_ip_lists(name: str) -> set:
    links = json.loads(_ip("-n", name, "-json", "address", "show"))
    return {ipaddress.ip_address(info["local"]) for link in links
            for info in link.get("addr_info", ())}


def test_own_networks_are_what_ip_lists_plus_local_routes(namespace):
    name, pid = namespace
    networks = own_networks(f"/proc/{pid}")
    listed = addresses_ip_lists(name)
    assert listed >= {ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::7")}
    for address in listed:                                   # each address ip lists is own
        assert any(address in network for network in networks), address
    # ... and nothing else but the local table's routes: 127.0.0.0/8 and the AnyIP range,
    # not table 100's local 0.0.0.0/0 (that would make every source "own").
    extra = {network for network in networks if network.num_addresses > 1}
    assert extra == {ipaddress.ip_network("127.0.0.0/8"), ANYIP}
    assert {network.network_address for network in networks if network.num_addresses == 1} \
        == listed
    assert own_networks("/proc") != networks                 # not the test's own namespace


def test_a_namespace_without_a_proc_root_is_found_through_a_process_in_it(namespace):
    name, pid = namespace
    assert proc_root_in(f"/var/run/netns/{name}") == f"/proc/{pid}"
    said = []
    watched = WatchedNetworks(None, f"/var/run/netns/{name}", said.append)
    assert ipaddress.ip_network("192.0.2.7/32") in watched()
    assert said == []


def test_what_cannot_be_read_is_said_once_and_counts_as_no_address(tmp_path):
    (tmp_path / "net").mkdir()
    assert own_networks(str(tmp_path)) == []                 # recorded tables: none known
    (tmp_path / "net" / "fib_trie").mkdir()                  # there, and unreadable
    said = []
    watched = WatchedNetworks(str(tmp_path), warn=said.append)
    assert watched() == [] and watched() == []
    assert said == [f"port scans: cannot tell this host's own addresses (cannot read "
                    f"{tmp_path}/net/fib_trie: Is a directory); scans from them are "
                    "reported, from loopback not (said once)"]
