"""The kernel's TCP counters: read by name from the real file, and what they count checked
with real sockets, against the tests' own ledger and against the tracepoint."""

import os
import socket
import subprocess
from pathlib import Path

import pytest
from lifetimes import Plan, run
from namespaces import add_namespace, peer
from tracepoint import trace_or_skip, until_traced_whole

from tcpfast.sources.snmp import SnmpCounters, SnmpFormatError, parse, read_counters

REAL = Path("/proc/net/snmp").read_text()


def tcp_lines(text):
    return [line.split() for line in text.splitlines() if line.startswith("Tcp:")]


def with_tcp_lines(text, names, values):
    others = [line for line in text.splitlines() if not line.startswith("Tcp:")]
    return "\n".join([*others, " ".join(["Tcp:", *names]), " ".join(["Tcp:", *values])]) + "\n"


def test_the_real_file_is_read_by_name():
    (names, values) = tcp_lines(REAL)
    counters = dict(zip(names[1:], values[1:]))
    read = parse(REAL)
    assert read.active_opens == int(counters["ActiveOpens"])
    assert read.attempt_fails == int(counters["AttemptFails"])
    assert read.curr_estab == int(counters["CurrEstab"])
    assert read.opened == (int(counters["ActiveOpens"]) + int(counters["PassiveOpens"])
                           - int(counters["AttemptFails"]))


def test_columns_a_kernel_adds_or_moves_change_nothing():
    (names, values) = tcp_lines(REAL)
    names, values = names[1:], values[1:]
    pairs = list(zip(names, values))
    moved = [("NewCounter", "12345"), *reversed(pairs[:6]), ("Other", "-1"), *pairs[6:]]
    text = with_tcp_lines(REAL, [name for name, _ in moved], [value for _, value in moved])
    assert parse(text) == parse(REAL)


@pytest.mark.parametrize("edit,message", [
    (lambda names, values: ([], []), "found 0 Tcp: line"),
    (lambda names, values: (names, values[:-1]), "names and"),
    (lambda names, values: ([n for n in names if n != "AttemptFails"],
                            [v for n, v in zip(names, values) if n != "AttemptFails"]),
     "no Tcp: counter AttemptFails"),
    (lambda names, values: (names, ["x" if n == "PassiveOpens" else v
                                    for n, v in zip(names, values)]),
     "PassiveOpens is 'x', not a number"),
])
def test_a_malformed_file_is_one_clear_error(edit, message):
    (names, values) = tcp_lines(REAL)
    names, values = edit(names[1:], values[1:])
    text = (with_tcp_lines(REAL, names, values) if names or values
            else "\n".join(line for line in REAL.splitlines() if not line.startswith("Tcp:")))
    with pytest.raises(SnmpFormatError, match=message) as raised:
        parse(text, "/somewhere/net/snmp")
    assert str(raised.value).startswith("/somewhere/net/snmp: ")


def test_a_missing_file_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"cannot open {tmp_path}/net/snmp"):
        read_counters(str(tmp_path))


def connected_pairs(count):
    """``count`` loopback connections, accepted: two sockets each reached ESTABLISHED."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(count)
    sockets = [server]
    for _ in range(count):
        sockets.append(socket.create_connection(server.getsockname()))
        sockets.append(server.accept()[0])
    return sockets


def test_each_connection_counts_its_two_sockets_and_a_refused_one_none():
    with SnmpCounters() as counters:
        before = counters.read()
        sockets = connected_pairs(7)
        for sock in sockets:
            sock.close()
        middle = counters.read()
        with socket.socket() as probe:           # nobody listens there: a RST answers
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
        after = counters.read()
    assert middle.opened_since(before) == 14
    assert (middle.active_opens - before.active_opens,
            middle.passive_opens - before.passive_opens) == (7, 7)
    assert after.active_opens - middle.active_opens == 1      # its SYN was sent ...
    assert after.attempt_fails - middle.attempt_fails == 1    # ... and it failed
    assert after.opened_since(middle) == 0


def test_a_connect_abandoned_in_syn_sent_is_the_counters_over_count():
    """The documented inexactness: a SYN no one answered, then close(): ActiveOpens
    counted it, nothing takes it back (tcp_close, not tcp_done)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)                           # one queued child fills the accept queue
    queued = socket.create_connection(server.getsockname())
    with SnmpCounters() as counters:
        before = counters.read()
        waiting = socket.socket()
        waiting.setblocking(False)
        assert waiting.connect_ex(server.getsockname()) == 115     # EINPROGRESS
        waiting.close()                        # its SYN was dropped: never ESTABLISHED
        after = counters.read()
    for sock in (queued, server):
        sock.close()
    assert after.active_opens - before.active_opens == 1
    assert after.attempt_fails - before.attempt_fails == 0
    assert after.opened_since(before) == 1


@pytest.fixture
def namespace():
    name = f"tf15-s{os.getpid() % 100000}"
    add_namespace(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_another_namespace_has_counters_of_its_own(namespace):
    """Three connections made in a namespace of the test's: its /proc/PID/net/snmp and a
    file opened inside it count them, ours does not. The listener never accepts: a
    child waiting in the accept queue is a passive open already."""
    ours = read_counters()
    with peer(namespace, "listen", "127.0.0.1", "8015") as server:
        assert server.stdout.readline().strip() == "ready"
        with peer(namespace, "client") as client:
            for _ in range(3):
                client.stdin.write("127.0.0.1 127.0.0.1 8015 5\n")
                client.stdin.flush()
                assert client.stdout.readline().strip() == "ok"
            by_pid = read_counters(f"/proc/{server.pid}")
            with SnmpCounters(netns_path=f"/var/run/netns/{namespace}") as inside:
                by_path = inside.read()
    assert (by_pid.active_opens, by_pid.passive_opens, by_pid.opened) == (3, 3, 6)
    assert by_path == by_pid
    assert read_counters().active_opens == ours.active_opens
    with pytest.raises(OSError, match="cannot read the TCP counters of /nonexistent"):
        SnmpCounters(netns_path="/nonexistent")


def test_under_a_load_of_every_lifetime_and_close_the_counters_equal_the_tracepoint():
    """Over a whole run, ActiveOpens + PassiveOpens - AttemptFails is exactly the number
    of sockets the tracepoint saw reach ESTABLISHED in the namespace."""
    plan = Plan(connections=150, seconds=1.0, lifetimes=(0.0, 0.05, 0.3), workers=2)

    def measure():
        with trace_or_skip() as trace, SnmpCounters() as counters:
            before = counters.read()
            ledger = run(plan)
            after = counters.read()
        return trace, ledger, before, after

    trace, ledger, before, after = until_traced_whole(measure)
    assert not ledger.errors
    assert len(trace.sockets) >= 2 * plan.connections
    assert after.opened_since(before) == len(trace.sockets)
    assert after.attempt_fails == before.attempt_fails
