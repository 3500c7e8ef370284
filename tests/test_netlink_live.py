"""The netlink source on real sockets: the same rows as /proc in every state, inside
network namespaces the tests create and remove; /proc when netlink cannot be had;
--netns watching another namespace."""

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from namespaces import SESSION_TAG, add_namespace
from test_cli import SAMPLE_ROOT, tcpfast
from test_live import FAMILIES, NO_IPV6

from tcpfast.filters import Filter, kernel_filter
from tcpfast.sources import ProcTables, open_source, proc, sockdiag
from tcpfast.sources.fallback import FallbackSource, NetlinkFallbackWarning
from tcpfast.sources.netlink import NetlinkSource

ROOT = Path(__file__).parent.parent
HELPER = Path(__file__).parent / "netns_sockets.py"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
needs_ip = pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 ip is not installed")
STATE_CODES = {"LISTEN": 10, "ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "TIME_WAIT": 6,
               "CLOSE_WAIT": 8, "FIN_WAIT2": 5}


def env_with_checkout() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}


@needs_root
@needs_ip
@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed")
@pytest.mark.parametrize("af,host,family", FAMILIES)
def test_netlink_rows_equal_proc_rows_in_every_state(af, host, family):
    """LISTEN, ESTABLISHED, SYN_SENT, SYN_RECV, TIME_WAIT, CLOSE_WAIT, FIN_WAIT2 over
    IPv4, and over IPv6 with IPv4-mapped IPv6: family, addresses, ports, state, uid,
    inode and both queues equal (a listener's backlog limit included)."""
    result = subprocess.run(["unshare", "--net", sys.executable, str(HELPER),
                             "--families", str(family)],
                            capture_output=True, text=True, timeout=60, env=env_with_checkout())
    if "unshare failed" in result.stderr:             # a container build, say
        pytest.skip(f"cannot create a network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    tables = json.loads(result.stdout)
    assert tables["netlink"] == tables["proc"]
    seen = {(row[0], row[5]) for row in tables["netlink"]}
    assert {row[0] for row in tables["netlink"]} == {family}
    for name, code in STATE_CODES.items():
        assert (family, code) in seen, f"no {name} socket over IPv{family}"
    if family == 6:
        mapped_prefix = "00000000000000000000ffff7f000001"           # ::ffff:127.0.0.1
        assert any(row[0] == 6 and row[1] == mapped_prefix and row[5] == 1
                   for row in tables["netlink"])


@contextlib.contextmanager
def listening(host: str = "127.0.0.1"):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as server:
        server.bind((host, 0))
        server.listen(4)
        yield server.getsockname()[1]


def on_port(rows, port: int) -> bytes:
    """The rows of ``port``'s sockets, cookie left out (sock_diag gives it, /proc does not)."""
    chosen = rows[rows["local_port"] == port].copy()
    chosen["cookie"] = 0
    return chosen.tobytes()


def test_source_reads_the_same_rows_as_proc_for_our_socket():
    with listening() as port, NetlinkSource() as source:
        rows = source.read().rows
        assert on_port(rows, port) == on_port(proc.read_snapshot().rows, port)
        assert rows[rows["local_port"] == port]["cookie"].all()      # the socket's own cookie


def test_falls_back_to_proc_with_one_warning_when_the_socket_cannot_be_opened(monkeypatch):
    def refused():
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(sockdiag, "_new_socket", refused)
    with listening() as port:
        with pytest.warns(NetlinkFallbackWarning, match="Permission denied"):
            source = open_source("netlink")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first, second = source.read(), source.read()
        assert source.kind == "proc" and source.where == "/proc/net/tcp*"
        assert port in first.rows["local_port"] and port in second.rows["local_port"]


def test_falls_back_with_one_warning_when_a_dump_fails(monkeypatch):
    source = open_source("netlink")
    assert source.kind == "netlink"

    def failing(*args, **kwargs):
        raise OSError(errno.ENOBUFS, "No buffer space available")
    monkeypatch.setattr(sockdiag.SockDiag, "dump", failing)
    with listening() as port:
        with pytest.warns(NetlinkFallbackWarning, match="sock_diag dump failed .No buffer space"):
            assert port in source.read().rows["local_port"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert port in source.read().rows["local_port"]


def test_recorded_tables_have_no_namespace_so_netlink_falls_back_to_them():
    with pytest.warns(NetlinkFallbackWarning):
        source = open_source("netlink", str(SAMPLE_ROOT))
    assert source.read().rows.tobytes() == proc.read_snapshot(str(SAMPLE_ROOT)).rows.tobytes()


def test_cli_netlink_on_recorded_tables_prints_what_proc_prints_and_one_warning():
    by_proc = tcpfast("--once", "--json", "--proc-root", str(SAMPLE_ROOT))
    by_netlink = tcpfast("--once", "--json", "--source", "netlink", "--proc-root", str(SAMPLE_ROOT))
    assert by_netlink.returncode == 0
    drop_time = lambda out: [{k: v for k, v in json.loads(line).items() if k != "time"}  # noqa: E731
                             for line in out.splitlines()]
    assert drop_time(by_netlink.stdout) == drop_time(by_proc.stdout)
    assert len(by_netlink.stderr.splitlines()) == 1
    assert by_netlink.stderr.startswith("tcpfast: ") and "instead" in by_netlink.stderr


def test_cli_state_filter_on_netlink():
    with listening() as port:
        result = tcpfast("--once", "--json", "--source", "netlink", "--state", "listen")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {event["state"] for event in events} == {"LISTEN"}
    assert port in {event["local_port"] for event in events}
    assert result.stderr == ""


# ---- another network namespace ------------------------------------------------------

@contextlib.contextmanager
def named_netns():
    """A namespace named with this issue's prefix, loopback up; removed on exit."""
    name = f"tf10-{SESSION_TAG}-{time.monotonic_ns() % 100000}"
    add_namespace(name)               # or skip where that is not permitted (a container build)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@contextlib.contextmanager
def listener_in(name: str):
    """A process listening on loopback inside namespace ``name``; yields its port."""
    script = ("import socket, sys\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\n"
              "s.listen(1)\nprint(s.getsockname()[1], flush=True)\nsys.stdin.read()\n")
    process = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", script],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield int(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=10)


@needs_root
@needs_ip
def test_netns_sees_the_namespace_sockets_and_not_the_hosts():
    with named_netns() as name, listener_in(name) as inside, listening():
        result = tcpfast("--once", "--json", "--netns", f"/var/run/netns/{name}")
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert {(e["local"], e["local_port"], e["state"]) for e in events} == {
            ("127.0.0.1", inside, "LISTEN")}                  # nothing of the host
        with NetlinkSource(f"/var/run/netns/{name}") as source:
            assert source.read().rows["local_port"].tolist() == [inside]
        assert result.stderr == ""


@needs_root
@needs_ip
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv is not installed")
def test_netns_without_the_privilege_is_one_line_and_exit_2():
    with named_netns() as name:
        result = subprocess.run(
            ["setpriv", "--bounding-set=-sys_admin", sys.executable, "-m", "tcpfast", "--once",
             "--netns", f"/var/run/netns/{name}"],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("tcpfast: cannot enter network namespace")
    assert len(result.stderr.splitlines()) == 1


def test_netns_errors_are_one_line_and_exit_2(tmp_path):
    missing = tcpfast("--once", "--netns", str(tmp_path / "missing"))
    assert missing.returncode == 2 and missing.stderr.startswith("tcpfast: cannot open network")
    assert len(missing.stderr.splitlines()) == 1
    usage = tcpfast("--once", "--source", "proc", "--netns", str(tmp_path))
    assert usage.returncode == 2 and "--netns needs --source netlink" in usage.stderr


@NO_IPV6
def test_both_request_types_give_the_same_rows_and_families_filter():
    with listening() as port4, listening("::1") as port6, \
            sockdiag.SockDiag(request=sockdiag.TCPDIAG_GETSOCK) as legacy, \
            sockdiag.SockDiag(request=sockdiag.SOCK_DIAG_BY_FAMILY) as by_family:
        ours = lambda rows: sorted(row.tobytes() for row in rows                  # noqa: E731
                                   if row["local_port"] in (port4, port6))
        assert ours(legacy.dump().rows) == ours(by_family.dump().rows)
        assert len(ours(legacy.dump().rows)) == 2
        for diag in (legacy, by_family):
            assert set(diag.dump(families=(6,)).rows["family"].tolist()) <= {6}
            assert port6 in diag.dump(families=(6,)).rows["local_port"]


def test_state_filter_goes_into_the_request():
    with listening() as port, sockdiag.SockDiag() as diag:
        listen = kernel_filter(Filter(states={10}))
        assert set(diag.dump(listen).rows["state"].tolist()) == {10}
        assert port not in diag.dump(kernel_filter(Filter(states={1}))).rows["local_port"]


def test_an_abandoned_dump_is_incomplete_and_the_next_starts_clean():
    with listening() as port, sockdiag.SockDiag() as diag:
        cut = diag.dump(stop_reading=lambda: True)
        assert not cut.complete and len(cut.rows) == 0
        again = diag.dump()
        assert again.complete and port in again.rows["local_port"]


def test_a_kernel_error_reply_falls_back_to_proc(monkeypatch):
    """A dump the kernel cannot do (here: of a protocol without a sock_diag handler)
    ends with an error code in its NLMSG_DONE."""
    said = []
    source = FallbackSource(NetlinkSource(request=sockdiag.SOCK_DIAG_BY_FAMILY), ProcTables(),
                            said.append)
    monkeypatch.setattr(sockdiag, "IPPROTO_TCP", 253)           # no sock_diag handler
    with listening() as port:
        assert port in source.read().rows["local_port"]
    assert source.kind == "proc"
    assert len(said) == 1 and "dump failed" in said[0] and said[0].endswith("instead")


def test_watcher_on_netlink_reports_each_connection_once():
    """The whole loop with --source netlink: connections opened over several polls
    and held, each reported once with the inode its socket has."""
    from watcher_process import WatcherProcess
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        port = server.getsockname()[1]
        watcher = WatcherProcess("--source", "netlink", "--interval", "0.2", "--json",
                                 "--state", "established")
        held, truth = [], set()
        try:
            watcher.wait_ready()
            for _ in range(4):
                for _ in range(5):
                    client = socket.create_connection(server.getsockname())
                    accepted, _ = server.accept()
                    held += [client, accepted]
                    for sock in (client, accepted):
                        truth.add((sock.getsockname()[1], sock.getpeername()[1],
                                   os.fstat(sock.fileno()).st_ino))
                watcher.more_polls()             # over several polls
            watcher.wait_until(lambda: len([e for e in watcher.events()
                                            if port in (e["local_port"], e["remote_port"])])
                               >= len(truth))
            watcher.more_polls()                 # more polls: none reported again
            assert watcher.stop() < 5
        finally:
            watcher.kill()
            for sock in held:
                sock.close()
    seen = [(e["local_port"], e["remote_port"], e["inode"]) for e in watcher.events()
            if port in (e["local_port"], e["remote_port"])]
    assert sorted(seen) == sorted(truth)
    assert watcher.err == []


def test_netlink_needs_no_root():
    """sock_diag dumps work unprivileged; entering another namespace does not."""
    from test_faults import run_cli_without_root
    with listening() as port:
        result = run_cli_without_root("--once", "--json", "--source", "netlink",
                                      "--state", "listen")
    assert result.returncode == 0 and result.stderr == ""
    assert port in {json.loads(line)["local_port"] for line in result.stdout.splitlines()}


@pytest.mark.parametrize("af,host,family", FAMILIES)
def test_library_snapshot_and_read_snapshot_take_the_source(af, host, family):
    import tcpfast
    with listening(host) as port:
        by_netlink = tcpfast.snapshot(source="netlink")
        result = tcpfast.read_snapshot(source="netlink")
        by_proc = tcpfast.snapshot()
    assert on_port(by_netlink, port) == on_port(by_proc, port) == on_port(result.rows, port) != b""
    assert isinstance(result, tcpfast.Snapshot) and result.complete
    with pytest.raises(ValueError, match="source must be"):
        tcpfast.read_snapshot(source="ss")


@needs_root
@needs_ip
def test_netns_watch_hears_short_connections_of_that_namespace_only():
    """Destroy events are taken in the watched namespace too: a connection opened and
    closed inside it between polls is reported; one of the host's is not."""
    from watcher_process import WatcherProcess
    script = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen(1)\n"
              "c = socket.create_connection(s.getsockname())\na, _ = s.accept()\n"
              "c.sendall(b'x'); a.recv(1, socket.MSG_PEEK); a.close(); c.close()\n"
              "print(s.getsockname()[1])\n")
    with named_netns() as name:
        watcher = WatcherProcess("--netns", f"/var/run/netns/{name}", "--interval", "0.3",
                                 "--json")
        try:
            watcher.wait_ready()                 # past the first poll (the baseline)
            inside = int(subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c",
                                         script], capture_output=True, text=True,
                                        check=True).stdout)
            outside = int(subprocess.run([sys.executable, "-c", script], capture_output=True,
                                         text=True, check=True).stdout)
            watcher.wait_until(lambda: any(e["event"] == "new_and_closed"
                                           for e in watcher.events()))
            watcher.more_polls()                 # the host's would have come by now
            assert watcher.stop() < 5
        finally:
            watcher.kill()
    short = [e for e in watcher.events() if e["event"] == "new_and_closed"]
    assert len(short) == 2 and {e["remote_port"] for e in short} >= {inside}
    assert outside not in {p for e in short for p in (e["local_port"], e["remote_port"])}
    assert watcher.err == []
