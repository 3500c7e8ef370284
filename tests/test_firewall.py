"""What --block never blocks, decided without touching any firewall (the ip command only)."""

import ipaddress
import json
import shutil
import subprocess

import pytest

from tcpfast.detect import AllowList
from tcpfast.outputs.firewall import MAX_BLOCK_SECONDS, Firewall, nft_duration

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


def test_block_timeouts_are_written_as_nft_parses_them():
    """nft refuses nine digits in one unit ("100000000ms": value too large): each unit holds
    its part, up to the kernel's limit (test_block sets a long one in a real namespace)."""
    assert nft_duration(3600) == "1h"
    assert nft_duration(1.5) == "1s500ms"
    assert nft_duration(0.001) == "1ms"
    assert nft_duration(1e9) == "11574d1h46m40s"
    assert nft_duration(MAX_BLOCK_SECONDS) == "213503d23h34m33s708ms"   # 2**64 ns - 1 ms
    with pytest.raises(ValueError, match=r"block_for must be from 0\.001 to 18446744073\.708"):
        Firewall(block_for=MAX_BLOCK_SECONDS + 0.001)
