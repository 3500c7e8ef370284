"""What --block never blocks, decided without touching any firewall (the ip command only)."""

import ipaddress
import json
import shutil
import subprocess

import pytest

from tcpfast.detect import AllowList
from tcpfast.outputs.firewall import Firewall

pytestmark = pytest.mark.skipif(not shutil.which("ip"), reason="needs the ip command (iproute2)")


def test_loopback_own_and_allowed_addresses_are_exempt():
    firewall = Firewall(allow=AllowList.parse("198.51.100.0/24,2001:db8:1::/48"))
    links = json.loads(subprocess.run(["ip", "-json", "address", "show"], check=True,
                                      capture_output=True, text=True).stdout)
    own = [ipaddress.ip_address(info["local"]) for link in links
           for info in link.get("addr_info", ())]
    exempt = ["127.0.0.1", "127.9.9.9", "::1", "198.51.100.7", "2001:db8:1::5"]
    for address in [*map(ipaddress.ip_address, exempt), *own]:
        assert firewall.exempt(address), address
    for address in ("192.0.2.99", "2001:db8:2::1", "198.51.101.1"):
        assert not firewall.exempt(ipaddress.ip_address(address)), address


def test_exempt_address_is_not_blocked_and_nft_never_runs():
    firewall = Firewall(nft="/nonexistent/nft")          # nft would fail if it ran
    assert firewall.block("127.0.0.1") is None
    assert firewall.block("::ffff:127.0.0.1") is None
