"""The ground truth itself checked: the tracepoint sees each socket of a real loopback load
exactly once, as the load's own ledger says it opened and closed it."""

import os
import signal
import socket

import pytest
from lifetimes import Plan, run
from test_live import NO_IPV6
from tracepoint import ProgramSkipped, TraceLost, Tracepoint, trace_or_skip, until_traced_whole

#: Which state each side leaves for CLOSE, per way of closing (the first closer ends
#: in TIME_WAIT; a reset leaves both from ESTABLISHED).
CLOSED_FROM = {("client", "client"): "FIN_WAIT2", ("client", "server"): "LAST_ACK",
               ("server", "server"): "FIN_WAIT2", ("server", "client"): "LAST_ACK",
               ("reset", "client"): "ESTABLISHED", ("reset", "server"): "ESTABLISHED"}
SLACK = 0.05        # seconds: time.time() read in another process, around the kernel's stamp


def ours(trace, ledger):
    """The traced sockets that belong to the load: one end on a listener of the ledger."""
    listeners = {(opened.family, *opened.server) for opened in ledger.connections}
    return [traced for traced in trace.sockets
            if (traced.family, traced.local, traced.local_port) in listeners
            or (traced.family, traced.remote, traced.remote_port) in listeners]


@pytest.mark.parametrize("ipv6_fraction", [0.0, pytest.param(0.5, marks=NO_IPV6)],
                         ids=["ipv4", "ipv4+ipv6"])
def test_every_socket_of_a_load_is_traced_exactly_once(ipv6_fraction):
    plan = Plan(connections=90, seconds=0.9, lifetimes=(0.0, 0.05, 0.2),
                ipv6_fraction=ipv6_fraction, workers=2)

    def measure():
        with trace_or_skip() as trace:
            return trace, run(plan)

    # A window the kernel skipped the program in (a busy host's bursts) is measured again.
    trace, ledger = until_traced_whole(measure)
    assert not ledger.errors
    traced = ours(trace.trace, ledger)
    assert not trace.trace.anomalies
    by_key = {}
    for item in traced:
        by_key.setdefault(item.key, []).append(item)
    sockets = list(ledger.sockets())
    assert len(sockets) == 2 * plan.connections
    for opened, side, key in sockets:
        # A key may come back within the load (a reset client's port is free at once):
        # the socket is the one of that key established while this connection opened.
        candidates = by_key.get(key, [])
        seen = [item for item in candidates
                if opened.planned - SLACK <= item.established <= opened.opened + SLACK]
        assert len(seen) == 1, (opened, side, candidates)
        socket_seen = seen[0]
        candidates.remove(socket_seen)
        if not candidates:
            del by_key[key]
        assert socket_seen.side == side
        assert opened.planned - SLACK <= socket_seen.established <= opened.opened + SLACK
        assert socket_seen.closed is not None
        assert opened.first_closed - SLACK <= socket_seen.closed <= opened.last_closed + SLACK
        assert socket_seen.closed_from == CLOSED_FROM[(opened.close, side)]
        assert socket_seen.time_wait == (CLOSED_FROM[(opened.close, side)] == "FIN_WAIT2")
    assert not by_key, f"traced sockets the load did not open: {by_key}"
    if ipv6_fraction:
        assert {item.family for item in traced} == {4, 6}


def test_a_failed_connect_is_an_attempt_not_a_socket():
    with trace_or_skip() as trace:
        with socket.socket() as probe:      # a port nobody listens on: refused
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
    assert not [item for item in trace.sockets if port in (item.local_port, item.remote_port)]
    assert [state for _, state in trace.trace.failed_attempts] == ["SYN_SENT"]


def test_output_bpftrace_could_not_keep_is_an_error_not_a_smaller_truth():
    """bpftrace stopped while the kernel fills its smallest perf buffer: the lost events
    are said (its "Lost N events", or a gap in the kernel's numbering), never dropped."""
    if os.geteuid() != 0:
        pytest.skip("tracing needs root")
    trace_or_skip()
    with pytest.raises(TraceLost, match=r"lost|never came out"), \
            Tracepoint(perf_pages=1) as trace:
        os.kill(trace.pid, signal.SIGSTOP)
        try:
            run(Plan(connections=300, seconds=0.0, lifetimes=(0.0,), workers=1))
        finally:
            os.kill(trace.pid, signal.SIGCONT)


def test_a_window_the_kernel_skipped_is_measured_again_and_said_so():
    """Only a ProgramSkipped window is measured again, at most three times in all."""
    calls = []

    def skipped_twice():
        calls.append(1)
        if len(calls) < 3:
            raise ProgramSkipped("the kernel skipped the program 2 times")
        return "whole"

    with pytest.warns(UserWarning, match="not traced whole") as said:
        assert until_traced_whole(skipped_twice) == "whole"
    assert len(calls) == 3
    assert [str(warning.message).split(" (")[0] for warning in said] == [
        "window 1 of 3 not traced whole", "window 2 of 3 not traced whole"]

    def always_skipped():
        calls.append(1)
        raise ProgramSkipped("skipped")

    calls.clear()
    with pytest.warns(UserWarning), pytest.raises(ProgramSkipped):
        until_traced_whole(always_skipped)
    assert len(calls) == 3

    def lost():
        calls.append(1)
        raise TraceLost("bpftrace lost 3 events")

    calls.clear()
    with pytest.raises(TraceLost, match="lost 3"):
        until_traced_whole(lost)
    assert len(calls) == 1
