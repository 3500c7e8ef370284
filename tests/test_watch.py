"""The watcher's rules for new and closed connections, poll by poll, on made-up rows."""

import numpy as np
from test_diff import rows_of

from tcpfast.enrich.owners import Owner
from tcpfast.schema import CLOSE_INFO_DTYPE, KNOWN_BYTES_SENT, STATE_CODES
from tcpfast.sources import Snapshot
from tcpfast.sources.netlink_events import Destroyed
from tcpfast.watch import Watcher

EST, SYN_RECV, TIME_WAIT = STATE_CODES["ESTABLISHED"], STATE_CODES["SYN_RECV"], STATE_CODES["TIME_WAIT"]

#: A drain that heard no destroyed socket.
NO_EVENTS = Destroyed(rows_of([]), np.empty(0), np.zeros(0, dtype=CLOSE_INFO_DTYPE))


def conn(port: int, inode: int, state: int = EST):
    return (4, 1, port, 2, 443, state, inode)


def run(watcher: Watcher, *polls, complete=()):
    """The inodes (new, closed) of each poll; ``complete``: indexes of polls cut short."""
    results = []
    for number, specs in enumerate(polls):
        poll = watcher.update(Snapshot(rows_of(specs), complete=number not in complete),
                              float(number))
        results.append((poll.new.rows["inode"].tolist(), poll.closed.rows["inode"].tolist()))
    return results


def test_a_socket_one_read_missed_is_not_new_when_it_is_back():
    a, b = conn(50000, 7), conn(50001, 8)
    assert run(Watcher(), [a, b], [a], [a, b]) == [([7, 8], []), ([], [8]), ([], [])]


def test_a_poll_cut_short_closes_nothing_and_the_next_reports_what_it_missed():
    a, b, c = conn(50000, 7), conn(50001, 8), conn(50002, 9)
    assert run(Watcher(), [a, b], [a], [a, b, c], complete={1}) == [
        ([7, 8], []), ([], []), ([9], [])]


def test_reopened_with_a_new_inode_is_new_and_the_old_one_closed():
    assert run(Watcher(), [conn(50000, 7)], [conn(50000, 9)]) == [([7], []), ([9], [7])]


def test_a_connection_entering_a_chosen_state_is_new_then():
    watcher = Watcher({EST})
    assert run(watcher, [conn(50000, 0, SYN_RECV)], [conn(50000, 0, EST)],
               [conn(50000, 12, EST)]) == [([], []), ([0], []), ([], [])]


def test_time_wait_is_never_new_unless_asked_for_and_closes_what_it_ends():
    established, time_wait = conn(50000, 7), conn(50000, 0, TIME_WAIT)
    assert run(Watcher(), [time_wait], [time_wait]) == [([], []), ([], [])]
    assert run(Watcher(), [established], [time_wait], [time_wait]) == [
        ([7], []), ([], [7]), ([], [])]
    assert run(Watcher({TIME_WAIT}), [time_wait]) == [([0], [])]


def test_a_connection_reported_in_the_accept_queue_is_closed_when_it_goes():
    """Accepted by the kernel, not yet by the application: no inode, but a socket; its
    end is a closed event as any other's (a reset before accept(), say)."""
    pending = conn(50000, 0)
    assert run(Watcher(), [], [pending], []) == [([], []), ([0], []), ([], [0])]
    accepted = conn(50000, 12)                    # then accept()ed: the same connection
    assert run(Watcher(), [], [pending], [accepted], []) == [
        ([], []), ([0], []), ([], []), ([], [12])]


def test_what_is_left_of_a_closed_connection_never_closes_anything():
    """TIME_WAIT and FIN_WAIT2 minisockets, orphans: no socket, nothing to close."""
    for state in (TIME_WAIT, STATE_CODES["FIN_WAIT2"], STATE_CODES["LAST_ACK"]):
        leftover = conn(50000, 0, state)
        assert run(Watcher(set(STATE_CODES.values())), [leftover], []) == [([0], []), ([], [])]


def test_a_connect_reusing_a_time_wait_entrys_ports_is_new():
    """net.ipv4.tcp_tw_reuse lets a connect take the ports of a TIME_WAIT entry: another
    connection, new, and never taken for the one that entry is what is left of."""
    ended, reused = conn(50000, 0, TIME_WAIT), conn(50000, 12)
    assert run(Watcher(), [conn(50000, 7)], [ended], [reused]) == [
        ([7], []), ([], [7]), ([12], [])]


def test_skip_existing_takes_the_first_poll_as_the_baseline():
    a, b = conn(50000, 7), conn(50001, 8)
    assert run(Watcher(skip_existing=True), [a], [a, b], [b]) == [
        ([], []), ([8], []), ([], [7])]


def test_closed_durations_count_from_the_first_poll_that_saw_it():
    watcher = Watcher()
    a, b = conn(50000, 7), conn(50001, 8)
    for now, specs in ((0.0, [a]), (10.0, [a, b]), (25.0, [])):
        poll = watcher.update(Snapshot(rows_of(specs)), now)
    assert poll.closed.rows["inode"].tolist() == [7, 8]
    assert np.isnan(poll.closed.duration[0]) and poll.closed.duration[1] == 15.0


def test_what_appeared_counts_every_state_and_nothing_seen_before():
    """What port-scan detection counts: connections first seen, whatever --state prints."""
    watcher = Watcher({EST})
    a, b, c = conn(50000, 7), conn(50001, 0, TIME_WAIT), conn(50002, 8, SYN_RECV)
    appeared = [watcher.update(Snapshot(rows_of(specs)), float(n)).appeared.rows["inode"].tolist()
                for n, specs in enumerate(([a], [a, b, c], [a], [a, c]))]
    assert appeared == [[], [0, 8], [], []]            # c came back from a missed read


def test_closed_events_carry_the_owner_named_when_new():
    """Through polls that match it, a poll cut short, and a read that missed it."""
    watcher = Watcher()
    a, b, c = conn(50000, 7), conn(50001, 8), conn(50002, 9)
    first = watcher.update(Snapshot(rows_of([a, b])), 0.0)
    assert first.closed.owners is None                     # no owner named yet: none looked up
    watcher.name_owners([Owner(10, "curl"), None])
    assert watcher.update(Snapshot(rows_of([a, b, c])), 1.0).new.rows["inode"].tolist() == [9]
    watcher.name_owners([Owner(11, "nginx")])
    polls = [([b, c], True), ([b], False), ([b, c], True),   # a closes; a cut read closes none
             ([b], True), ([b, c], True), ([b], True),      # c missed, back (not new), closed
             ([], True)]
    closed = []
    for number, (specs, complete) in enumerate(polls, 2):
        poll = watcher.update(Snapshot(rows_of(specs), complete=complete), float(number))
        assert poll.new.rows["inode"].tolist() == []
        watcher.name_owners([])
        closed.append(list(zip(poll.closed.rows["inode"].tolist(), poll.closed.owners)))
    curl, nginx = Owner(10, "curl"), Owner(11, "nginx")
    assert closed == [[(7, curl)], [], [], [(9, nginx)], [], [(9, nginx)], [(8, None)]]


def test_owners_of_closed_connections_are_forgotten():
    """A new process per connection for a long time: what is held follows the open ones."""
    watcher = Watcher()
    watcher.update(Snapshot(rows_of([])), 0.0)
    for step in range(1, 400):
        specs = [conn(40000 + (10 * step + i) % 20000, 10 * step + i) for i in range(10)]
        poll = watcher.update(Snapshot(rows_of(specs)), float(step))
        watcher.name_owners([Owner(10 * step + i, "job") for i in range(10)])
        if step > 1:          # the last step's ten, each with the owner named for it
            assert [owner.pid for owner in poll.closed.owners] == \
                poll.closed.rows["inode"].tolist()
        assert watcher.owners_held <= 1024 + 10
    assert watcher.owners_held <= 1024 + 10 and len(poll.closed) == 10


def test_with_destroy_events_an_orphan_is_open_until_it_goes():
    """A socket its process closed (FIN_WAIT1 without an inode) is still the kernel's:
    with destroy events it is new when first listed, and closed when it goes, with what
    its destroy event said it carried; without them (/proc), what has no inode never
    closes anything (it may be what is left of a closed one)."""
    established, fin_wait1 = rows_of([conn(50000, 7), conn(50000, 0, STATE_CODES["FIN_WAIT1"])])
    orphan, other = rows_of([conn(50001, 0, STATE_CODES["FIN_WAIT1"]),
                             conn(50002, 0, STATE_CODES["FIN_WAIT1"])])
    established["cookie"] = fin_wait1["cookie"] = 10
    orphan["cookie"], other["cookie"] = 11, 12
    timewait = rows_of([conn(50003, 0, STATE_CODES["FIN_WAIT2"])])[0]     # not an orphan
    timewait["timer"] = 3
    gone = rows_of([conn(50000, 0, STATE_CODES["CLOSE"]), conn(50001, 0, STATE_CODES["CLOSE"])])
    gone["cookie"] = [10, 11]
    info = np.zeros(2, dtype=CLOSE_INFO_DTYPE)
    info["bytes_sent"], info["known"] = [1000, 1234], KNOWN_BYTES_SENT

    def polls(*snapshots, events=True):
        watcher = Watcher(skip_existing=True)
        watcher.update(Snapshot(rows_of([])), 0.0, NO_EVENTS if events else None)
        return [watcher.update(Snapshot(np.array(rows, dtype=established.dtype)), float(at),
                               heard if events else None)
                for at, (rows, heard) in enumerate(snapshots, start=1)]
    first, second, third = polls(([established, orphan, other, timewait], NO_EVENTS),
                                 ([fin_wait1, orphan, other, timewait], NO_EVENTS),
                                 ([other], Destroyed(gone, np.array([2.5, 2.5]), info)))
    assert first.new.rows["local_port"].tolist() == [50000, 50001, 50002]
    assert first.new_and_closed.rows["local_port"].tolist() == [50003]   # what is left
    assert len(second.closed) == 0                       # the orphan of 50000 is still open
    assert third.closed.rows["local_port"].tolist() == [50000, 50001]      # not 50002
    assert third.closed.info["bytes_sent"].tolist() == [1000, 1234]
    assert third.closed.duration.tolist() == [2.0, 2.0]
    assert len(third.new_and_closed) == 0
    first, second, third = polls(([established, orphan, other], None), ([fin_wait1, orphan], None),
                                 ([], None), events=False)
    assert second.closed.rows["local_port"].tolist() == [50000]            # /proc's rule
    assert len(third.closed) == 0


def test_a_key_that_came_back_is_each_socket_once():
    """A listed socket is destroyed; its key comes back (a reset client's port reused at
    once) for a socket opened and closed before the next poll, whose read lists that
    one's TIME_WAIT entry (with a cookie of its own: the socket had none when it was
    made). The listed socket closes with what it carried; the other is new_and_closed
    once, with what it carried."""
    listed = rows_of([conn(50000, 5)])
    listed["cookie"] = 21
    timewait = rows_of([conn(50000, 0, TIME_WAIT)])
    timewait["cookie"], timewait["timer"] = 23, 3
    gone = rows_of([conn(50000, 0, STATE_CODES["CLOSE"]), conn(50000, 0, STATE_CODES["CLOSE"])])
    gone["cookie"] = [21, 22]
    info = np.zeros(2, dtype=CLOSE_INFO_DTYPE)
    info["bytes_sent"], info["known"] = [100, 1], KNOWN_BYTES_SENT
    watcher = Watcher(skip_existing=True)
    watcher.update(Snapshot(rows_of([])), 0.0, NO_EVENTS)
    assert len(watcher.update(Snapshot(listed), 1.0, NO_EVENTS).new) == 1
    poll = watcher.update(Snapshot(timewait), 3.0, Destroyed(gone, np.array([2.2, 2.6]), info))
    assert poll.closed.info["bytes_sent"].tolist() == [100]
    assert poll.new_and_closed.info["bytes_sent"].tolist() == [1]


def test_a_fin_wait2_timewait_entry_is_what_is_left_not_a_new_connection():
    """FIN_WAIT2 with the timewait timer (3) is a timewait entry's substate: like a
    TIME_WAIT row, not new by default; first seen after the first poll, it is
    new_and_closed, once, and no later row of it (TIME_WAIT) is new either. A full
    FIN_WAIT2 socket (another timer) is a connection like any other."""
    fin_wait2 = STATE_CODES["FIN_WAIT2"]
    entry, full = rows_of([conn(50000, 0, fin_wait2), conn(50001, 0, fin_wait2)])
    entry["timer"], full["timer"] = 3, 2
    later = rows_of([conn(50000, 0, TIME_WAIT)])[0]
    later["timer"] = 3
    watcher = Watcher()
    watcher.update(Snapshot(rows_of([])), 0.0)
    first = watcher.update(Snapshot(np.array([entry, full])), 1.0)
    assert first.new.rows["local_port"].tolist() == [50001]
    assert first.new_and_closed.rows["local_port"].tolist() == [50000]
    second = watcher.update(Snapshot(np.array([later, full])), 2.0)
    assert len(second.new) == len(second.new_and_closed) == 0


def test_a_destroy_event_polls_late_is_the_closed_connections_not_a_new_one():
    """A socket reset by its peer leaves the table at once and is destroyed when its
    process closes it: a listed connection is closed (without what it carried) when it
    leaves the table, and its event comes two polls later. It is that connection's, not
    one opened and closed between polls: nothing more is reported. An event of a socket
    no poll listed, as late, is still new_and_closed."""
    listed = rows_of([conn(50000, 5)])
    listed["cookie"] = 21
    gone = rows_of([conn(50000, 0, STATE_CODES["CLOSE"]), conn(50001, 0, STATE_CODES["CLOSE"])])
    gone["cookie"] = [21, 22]
    info = np.zeros(2, dtype=CLOSE_INFO_DTYPE)
    watcher = Watcher(skip_existing=True)
    watcher.update(Snapshot(rows_of([])), 0.0, NO_EVENTS)
    assert len(watcher.update(Snapshot(listed), 1.0, NO_EVENTS).new) == 1
    assert len(watcher.update(Snapshot(rows_of([])), 2.0, NO_EVENTS).closed) == 1
    watcher.update(Snapshot(rows_of([])), 3.0, NO_EVENTS)
    late = watcher.update(Snapshot(rows_of([])), 4.0, Destroyed(gone, np.array([3.9, 3.9]), info))
    assert late.new_and_closed.rows["cookie"].tolist() == [22]
    assert len(late.new) == len(late.closed) == 0


def one_destroyed(port: int, cookie: int, bytes_sent: int, at: float) -> Destroyed:
    """One destroyed socket's event: its row, when it came, and the bytes it sent."""
    gone = rows_of([conn(port, 0, STATE_CODES["CLOSE"])])
    gone["cookie"] = cookie
    info = np.zeros(1, dtype=CLOSE_INFO_DTYPE)
    info["bytes_sent"], info["known"] = bytes_sent, KNOWN_BYTES_SENT
    return Destroyed(gone, np.array([at]), info)


def test_a_socket_heard_of_while_listed_is_not_awaited_when_it_goes():
    """Destroyed between a poll's read and its drain, a socket's event comes while it is
    still listed; when it leaves the table its closed event has that info, and nothing
    more is awaited of it (what is awaited is bounded: room is kept for what may come)."""
    listed = rows_of([conn(50000, 5)])
    listed["cookie"] = 21
    destroyed = one_destroyed(50000, 21, 77, 1.9)
    watcher = Watcher(skip_existing=True)
    watcher.update(Snapshot(rows_of([])), 0.0, NO_EVENTS)
    watcher.update(Snapshot(listed), 1.0, NO_EVENTS)
    watcher.update(Snapshot(listed), 2.0, destroyed)
    closed = watcher.update(Snapshot(rows_of([])), 3.0, NO_EVENTS).closed
    assert closed.info["bytes_sent"].tolist() == [77]
    assert 21 not in watcher._awaiting._cookies.tolist()


def test_a_handshake_listed_with_another_cookie_than_its_socket_is_one_connection():
    """A dump that names a request socket (SYN_RECV) after the kernel cloned its socket
    from it gives the two different cookies (the clone copied none: the request had none
    yet). Then its socket established and destroyed before the drain, or listed by the
    next poll, or destroyed before it: one connection each time, reported once (a
    coverage run under load reported such a server-side socket as new SYN_RECV and as
    new_and_closed in one poll)."""
    request = rows_of([conn(50000, 0, SYN_RECV)])
    request["cookie"] = 31
    socket_row = rows_of([conn(50000, 7)])
    socket_row["cookie"] = 32
    destroyed = one_destroyed(50000, 32, 9, 0.5)

    def watched(*polls):
        watcher = Watcher(skip_existing=True)
        watcher.update(Snapshot(rows_of([])), 0.0, NO_EVENTS)
        return [watcher.update(Snapshot(rows), float(at), events)
                for at, (rows, events) in enumerate(polls, start=1)]

    def reports(polls):
        return [(event, len(getattr(poll, event))) for poll in polls
                for event in ("new", "new_and_closed", "closed") if len(getattr(poll, event))]

    same_poll = watched((request, destroyed), (rows_of([]), NO_EVENTS), (rows_of([]), NO_EVENTS))
    assert reports(same_poll) == [("new", 1), ("closed", 1)]
    listed_next = watched((request, NO_EVENTS), (socket_row, NO_EVENTS), (rows_of([]), destroyed))
    assert reports(listed_next) == [("new", 1), ("closed", 1)]
    assert listed_next[2].closed.info["bytes_sent"].tolist() == [9]
    gone_next = watched((request, NO_EVENTS), (rows_of([]), destroyed))
    assert reports(gone_next) == [("new", 1), ("closed", 1)]
    assert gone_next[1].closed.info["bytes_sent"].tolist() == [9]
