"""Owning process of sockets: real child processes, named by the test, holding real loopback sockets."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import traceback
from datetime import datetime, timezone

import numpy as np
import pytest
from test_live import NO_IPV6

from tcpfast import snapshot
from tcpfast.enrich.owners import Owner, OwnerFinder, fd_counts_supported, procfs_of
from tcpfast.outputs import report
from tcpfast.poller import Poller
from tcpfast.sources import ProcTables
from tcpfast.watch import Watcher

FD_COUNTS = fd_counts_supported()
GENEROUS_BUDGET = 30.0
"""Tests check what is found, not how fast: the budget only has to outlast a busy machine."""

# A child that names itself (PR_SET_NAME) and then, one stdin command at a time,
# opens connections or closes them, answering each command with a JSON line:
# "connect HOST PORT N" -> [[inode, fd], ...]; "close INODE" -> [];
# "files N" (N more fds open, on /dev/null) -> [].
CHILD = textwrap.dedent("""
    import ctypes, json, os, socket, sys
    ctypes.CDLL(None, use_errno=True).prctl(15, sys.argv[1].encode(), 0, 0, 0)
    held, files = {}, []
    for line in sys.stdin:
        command, *args = line.split()
        answer = []
        if command == "connect":
            for _ in range(int(args[2])):
                sock = socket.create_connection((args[0], int(args[1])))
                inode = os.fstat(sock.fileno()).st_ino
                held[inode] = sock
                answer.append([inode, sock.fileno()])
        elif command == "close":
            held.pop(int(args[0])).close()
        elif command == "files":
            files += [os.open(os.devnull, os.O_RDONLY) for _ in range(int(args[0]))]
        print(json.dumps(answer), flush=True)
""")


class Child:
    """A named process holding connections on the test's command."""

    def __init__(self, name: str, python: str = sys.executable, **popen: object) -> None:
        self.name = name
        self.process = subprocess.Popen([python, "-I", "-c", CHILD, name], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, **popen)
        self.pid = self.process.pid

    def _ask(self, command: str) -> list:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def connect(self, server: socket.socket, count: int) -> list[int]:
        """Inodes of ``count`` new connections to ``server``."""
        host, port = server.getsockname()[:2]
        return [inode for inode, _ in self._ask(f"connect {host} {port} {count}")]

    def connect_fds(self, server: socket.socket) -> tuple[int, int]:
        host, port = server.getsockname()[:2]
        [(inode, fd)] = self._ask(f"connect {host} {port} 1")
        return inode, fd

    def close(self, inode: int) -> None:
        self._ask(f"close {inode}")

    def open_files(self, count: int) -> None:
        self._ask(f"files {count}")

    def exit(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture
def start_child():
    children: list[Child] = []

    def start(name: str, **popen: object) -> Child:
        children.append(Child(name, **popen))
        return children[-1]

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()
        for stream in (child.process.stdin, child.process.stdout):
            if not stream.closed:
                stream.close()


#: Both loopbacks, always collected: without IPv6 the ::1 cases are skipped, visibly.
LOOPBACKS = [pytest.param((socket.AF_INET, "127.0.0.1"), id="127.0.0.1"),
             pytest.param((socket.AF_INET6, "::1"), id="::1", marks=NO_IPV6)]


@pytest.fixture(params=LOOPBACKS)
def server(request):
    """A loopback listener with room in its backlog: children connect, nobody accepts."""
    family, host = request.param
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(256)
        yield listener


@pytest.fixture(params=[True, False], ids=["fd-counts", "no-fd-counts"])
def finder(request) -> OwnerFinder:
    """Both search paths: with fd counts (kernel 6.2+), and the fallback that does not use them."""
    if request.param and not FD_COUNTS:
        pytest.skip("st_size of /proc/PID/fd is 0 on this kernel (fd counts need Linux 6.2+)")
    return OwnerFinder(budget=GENEROUS_BUDGET, use_fd_counts=request.param)


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_child_sockets_named_by_pid_and_comm(finder, start_child, server):
    """First lookup (nothing cached), then a later one with the child's table cached and grown."""
    child = start_child("tf8-owner-a")
    first = child.connect(server, 5)
    assert finder.find(first) == {inode: Owner(child.pid, "tf8-owner-a") for inode in first}
    more = child.connect(server, 7)
    assert finder.find(more) == {inode: Owner(child.pid, "tf8-owner-a") for inode in more}
    assert finder.find(first + more) == {inode: Owner(child.pid, "tf8-owner-a") for inode in first + more}


def test_a_new_process_after_the_first_lookup(finder, start_child, server):
    own = inode_of(server)
    assert finder.find([own]) == {own: Owner(os.getpid(), _comm(os.getpid()))}
    child = start_child("tf8-owner-b")
    inodes = child.connect(server, 3)
    assert finder.find(inodes) == {inode: Owner(child.pid, "tf8-owner-b") for inode in inodes}


def test_process_gone_before_the_lookup_owns_nothing(finder, start_child, server):
    seen, unseen = start_child("tf8-seen"), start_child("tf8-unseen")
    seen_inodes, unseen_inodes = seen.connect(server, 3), unseen.connect(server, 3)
    assert finder.find(seen_inodes) == {inode: Owner(seen.pid, "tf8-seen") for inode in seen_inodes}
    seen.exit()
    unseen.exit()
    assert finder.find(seen_inodes + unseen_inodes) == {}
    assert seen.pid not in finder.cached_pids()


def test_inode_zero_and_unknown_inodes_own_nothing(finder):
    assert finder.find([0]) == {}
    assert finder.find(np.array([0], dtype=np.uint64)) == {}
    assert finder.find([2**63 - 1]) == {}


@pytest.mark.parametrize("hinted", [True, False], ids=["vanished-hint", "rotation"])
def test_fd_closed_and_another_opened(hinted, start_child, server):
    """Same fd number, same fd count: found through the vanished socket's fd, or the rotation."""
    finder = OwnerFinder(budget=GENEROUS_BUDGET, use_fd_counts=FD_COUNTS)
    child = start_child("tf8-reuse")
    child.connect(server, 2)
    old, old_fd = child.connect_fds(server)
    assert finder.find([old]) == {old: Owner(child.pid, "tf8-reuse")}
    fd_count = os.stat(f"/proc/{child.pid}/fd").st_size
    child.close(old)
    new, new_fd = child.connect_fds(server)
    assert new_fd == old_fd
    assert os.stat(f"/proc/{child.pid}/fd").st_size == fd_count      # the count cannot tell
    assert finder.find([new], vanished=[old] if hinted else []) == {new: Owner(child.pid, "tf8-reuse")}


def test_socket_shared_after_fork_names_the_lowest_pid(finder, start_child, server):
    with socket.create_connection(server.getsockname()[:2]) as shared:
        child = start_child("tf8-sharer", pass_fds=[shared.fileno()])
        child.connect(server, 1)           # the child is up, holding the inherited fd
        owner = finder.find([inode_of(shared)])[inode_of(shared)]
        assert owner.pid == min(os.getpid(), child.pid)


def test_rows_of_a_snapshot(start_child, server):
    """The library path: rows from snapshot(), owners in row order."""
    child = start_child("tf8-rows")
    inodes = set(child.connect(server, 4))
    rows = snapshot()
    rows = rows[np.isin(rows["inode"], np.array(sorted(inodes | {inode_of(server)}), dtype=np.uint64))]
    owners = OwnerFinder(budget=GENEROUS_BUDGET).owners_of(rows)
    expected = [Owner(child.pid, "tf8-rows") if inode in inodes else Owner(os.getpid(), _comm(os.getpid()))
                for inode in rows["inode"].tolist()]
    assert len(rows) == 5 and owners == expected


class StepClock:
    """Time that advances one unit per look: a lookup's budget is a number of steps."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> float:
        self.now += 1
        return float(self.now)


def lookups_enough(budget: int) -> int:
    """How many lookups of ``budget`` steps a search that always progresses needs, at most,
    to read every fd table on this host once (every process is new to a new finder): each
    lookup spends at least half its steps reading links, a handful on its own overhead."""
    fds = processes = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            processes += 1
            try:
                fds += len(os.listdir(f"/proc/{name}/fd"))
            except OSError:
                continue
    return 2 * (fds + processes) // budget + 100


def find_in_small_lookups(finder: OwnerFinder, clock: StepClock, budget: int, inodes: list[int],
                          between=lambda: None) -> dict[int, Owner]:
    """Look ``inodes`` up again and again, each lookup ``budget`` steps, until all are found
    or a search that always progresses would have found them; ``between`` runs after each."""
    found: dict[int, Owner] = {}
    for _ in range(lookups_enough(budget)):
        started = clock.now
        result = finder.find([inode for inode in inodes if inode not in found])
        assert clock.now - started <= budget + 3       # the first look past the deadline ends it
        found.update(result)
        if len(found) == len(inodes):
            break
        between()
    return found


def test_small_budgets_stop_early_never_wrong_and_resume(start_child, server):
    """Each lookup stops after a few hundred steps; answers stay right and later lookups go on."""
    child = start_child("tf8-budget")
    inodes = child.connect(server, 20)
    clock = StepClock()
    finder = OwnerFinder(budget=300, use_fd_counts=FD_COUNTS, clock=clock)
    found = find_in_small_lookups(finder, clock, 300, inodes)
    assert found == {inode: Owner(child.pid, "tf8-budget") for inode in inodes}
    assert OwnerFinder(budget=0).find(inodes) == {}


def test_a_cancelled_lookup_ends_at_its_next_look_and_a_later_one_goes_on(start_child, server):
    """Cancelled part-way (a stop signal), a lookup ends at the next look at its clock,
    with what it found: never wrong; the next lookup resumes and finds the rest."""
    children = [start_child(f"tf8-cancel-{n}") for n in range(3)]
    inodes = {child.pid: child.connect(server, 30) for child in children}
    clock = StepClock()
    finder = OwnerFinder(budget=10**9, use_fd_counts=FD_COUNTS, clock=clock)
    cancel_at = clock.now + 40                         # steps: far fewer than the walk takes
    found = finder.find([i for held in inodes.values() for i in held],
                        cancelled=lambda: clock.now >= cancel_at)
    # The look that saw it ends the step it was in; the step's caller may look once more.
    assert clock.now <= cancel_at + 2
    everything = {i: Owner(pid, f"tf8-cancel-{n}")
                  for n, (pid, held) in enumerate(inodes.items()) for i in held}
    assert len(found) < len(everything)                # it did stop before the end ...
    assert all(everything[inode] == owner for inode, owner in found.items())   # ... never wrong
    assert finder.find(everything.keys() - found.keys()) == {
        inode: owner for inode, owner in everything.items() if inode not in found}


def started_before(start_child, target: str, *names: str) -> tuple[list[Child], Child]:
    """Processes ``names``, then ``target``: a lower pid each, searched first (unless pids wrap)."""
    before = [start_child(name) for name in names]
    after = start_child(target)
    if any(child.pid > after.pid for child in before):
        pytest.skip("pids wrapped between the test's processes: the order it needs is not there")
    return before, after


def test_a_table_longer_to_list_than_a_lookup_does_not_stop_the_search(start_child, server):
    """A process holding more fds than one lookup's budget can list (a look at the clock per
    64 names): a lookup that resumes must get past it to the process after it."""
    budget = 200
    [big], child = started_before(start_child, "tf8-after-big", "tf8-big")
    big.open_files(budget * 64 + 1_000)
    inodes = child.connect(server, 5)
    clock = StepClock()
    finder = OwnerFinder(budget=budget, use_fd_counts=FD_COUNTS, clock=clock)
    found = find_in_small_lookups(finder, clock, budget, inodes)
    assert found == {inode: Owner(child.pid, "tf8-after-big") for inode in inodes}


@pytest.mark.skipif(not FD_COUNTS, reason="st_size of /proc/PID/fd is 0 on this kernel (fd "
                    "counts need Linux 6.2+): a table that changes is not read again")
def test_tables_that_change_between_lookups_do_not_stop_the_search(start_child, server):
    """Two processes whose fd count changes after every lookup (each is listed again), each
    listable within one budget but not both: a lookup that resumes must get past them."""
    budget = 200
    churning, child = started_before(start_child, "tf8-after-churn", "tf8-churn-a", "tf8-churn-b")
    for process in churning:
        process.open_files(budget * 64 * 3 // 5)
    inodes = child.connect(server, 5)
    clock = StepClock()
    finder = OwnerFinder(budget=budget, use_fd_counts=True, clock=clock)

    def churn() -> None:
        for process in churning:
            process.open_files(1)

    found = find_in_small_lookups(finder, clock, budget, inodes, between=churn)
    assert found == {inode: Owner(child.pid, "tf8-after-churn") for inode in inodes}


def test_the_first_lookup_has_its_own_budget(start_child, server):
    """Nothing cached yet: the first lookup that has something to find gets first_budget."""
    child = start_child("tf8-first")
    first = child.connect(server, 2)
    finder = OwnerFinder(budget=0, first_budget=GENEROUS_BUDGET)
    assert finder.find([]) == {}
    assert finder.find(first) == {inode: Owner(child.pid, "tf8-first") for inode in first}
    assert finder.find(child.connect(server, 2)) == {}


def test_fd_count_is_st_size():
    """The fact the targeted search rests on (Linux 6.2+), checked on a process with known fds."""
    if not FD_COUNTS:
        pytest.skip("st_size of /proc/PID/fd is 0 on this kernel (fd counts need Linux 6.2+)")
    sockets = [socket.socket() for _ in range(10)]
    try:
        fds = len(os.listdir(f"/proc/{os.getpid()}/fd")) - 1     # listdir holds one fd itself
        assert os.stat(f"/proc/{os.getpid()}/fd").st_size == fds
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(("proc_root", "procfs"), [
    ("/proc", "/proc"), ("/proc/", "/proc"), ("/proc/1", "/proc"), ("/proc/1/task/1", "/proc"),
    ("/proc/self", "/proc"), ("/host/proc/1", "/host/proc"), ("/host/proc", "/host/proc"),
])
def test_procfs_of(proc_root, procfs):
    assert procfs_of(proc_root) == procfs


def _tcpfast(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "tcpfast", "--once", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.splitlines()


def test_cli_process_option_json(start_child, server):
    child = start_child("tf8-cli")
    inodes = set(child.connect(server, 3))
    events = [json.loads(line) for line in _tcpfast("--json", "--process")]
    owners = {event["inode"]: (event["pid"], event["comm"]) for event in events}
    assert {inode: owners[inode] for inode in inodes} == dict.fromkeys(inodes, (child.pid, "tf8-cli"))
    assert all((event["pid"] is None) == (event["comm"] is None) for event in events)
    plain = [json.loads(line) for line in _tcpfast("--json")]
    assert all(event["pid"] is None and event["comm"] is None for event in plain)


def test_cli_connection_of_an_exited_process_has_pid_null(start_child, server):
    """The client side outlives its process as an orphan (FIN_WAIT, inode 0; a timewait
    entry's FIN_WAIT2, which only --state lists): reported, pid null."""
    child = start_child("tf8-gone")
    inodes = child.connect(server, 2)
    rows = snapshot()
    ports = set(rows[np.isin(rows["inode"], np.array(inodes, dtype=np.uint64))]["local_port"].tolist())
    child.exit()
    server_port = server.getsockname()[1]
    events = [event for event in map(json.loads, _tcpfast("--json", "--process", "--state", "all"))
              if event["local_port"] in ports and event["remote_port"] == server_port]
    assert len(ports) == 2 and events
    assert all(event["pid"] is None and event["comm"] is None for event in events)


def test_cli_process_option_on_tables_without_processes():
    """Sample tables in a directory with no process in it: every owner unknown, no error."""
    sample = os.path.join(os.path.dirname(__file__), "data", "proc")
    events = [json.loads(line) for line in _tcpfast("--json", "--process", "--proc-root", sample)]
    assert events and all(event["pid"] is None and event["comm"] is None for event in events)


def test_cli_process_option_text(start_child, server):
    child = start_child("tf8-cli-text")
    child.connect(server, 1)
    host, port = server.getsockname()[:2]
    target = f" -> [{host}]:{port}" if ":" in host else f" -> {host}:{port}"
    lines = [line for line in _tcpfast("--process") if target in line]
    assert len(lines) == 1 and lines[0].endswith(f"{target} pid={child.pid} tf8-cli-text")


def test_closed_events_name_the_owner_found_when_new(start_child, server):
    """A poll's new connection named its owner; its closed event names it too, in JSON
    and text lines (the socket is gone by then: only the watcher can remember it). Real
    polls of the test's namespace through the Poller, as --process --events new,closed
    runs them, with a budget that outlasts a busy machine."""
    child = start_child("tf14-closer")
    polls = []
    poller = Poller(Watcher(), polls.append, pytest.fail, source=ProcTables(),
                    owners=OwnerFinder(budget=GENEROUS_BUDGET, first_budget=GENEROUS_BUDGET))
    poller.poll()
    [inode] = child.connect(server, 1)
    new = poller.poll().new
    [(row, owner)] = [(row, owner) for row, owner in zip(new.rows, new.owners)
                      if row["inode"] == inode]
    assert owner == Owner(child.pid, "tf14-closer")
    child.close(inode)                 # its row: FIN_WAIT2 or gone, without an inode either way
    closed = poller.poll().closed
    assert closed.rows["local_port"].tolist() == [row["local_port"]]
    assert closed.owners == [Owner(child.pid, "tf14-closer")]
    when = datetime.now(timezone.utc)
    event = json.loads(report.json_lines(closed, when)[0])
    assert (event["event"], event["inode"], event["pid"], event["comm"]) == (
        "closed", inode, child.pid, "tf14-closer")
    [line] = report.text_lines(closed, when)
    assert ": Closed connection: " in line and line.endswith(f" pid={child.pid} tf14-closer")


# Holds FDS copies of /dev/null until stdin closes: an fd table the owner lookup must read.
FILLER = textwrap.dedent("""
    import os, sys
    null = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(null) for _ in range(int(sys.argv[1]))]
    print("ready", flush=True)
    sys.stdin.read()
""")


def _reading(pid: int, fd_dirs: set[str]) -> bool:
    """Whether process ``pid`` has one of ``fd_dirs`` open (the lookup is reading it)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:                          # an fd closed between the listing and the read
        return False
    return not fd_dirs.isdisjoint(links)


def test_cli_stop_during_the_owner_lookup_is_answered_at_once():
    """A listener no process holds (its one reference in flight over a UNIX socket) keeps
    the first lookup walking every fd table; processes with 15,000 fds each make the walk
    long. Stopped while it reads one of them, tcpfast exits there (130), having printed
    nothing: the lines come after the lookup, which did not finish."""
    fillers = [subprocess.Popen([sys.executable, "-I", "-c", FILLER, "15000"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(4)]
    carrier, receiver = socket.socketpair(socket.AF_UNIX)
    try:
        assert all(filler.stdout.readline() == "ready\n" for filler in fillers)
        with socket.socket() as orphan:
            orphan.bind(("127.0.0.1", 0))
            orphan.listen()
            socket.send_fds(carrier, [b"x"], [orphan.fileno()])
        watcher = subprocess.Popen([sys.executable, "-m", "tcpfast", "--once", "--process"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            fd_dirs = {f"/proc/{filler.pid}/fd" for filler in fillers}
            while not _reading(watcher.pid, fd_dirs):
                assert watcher.poll() is None, "tcpfast ended before its lookup read a filler"
            watcher.send_signal(signal.SIGINT)
            out, err = watcher.communicate(timeout=60)
        finally:
            watcher.kill()
            watcher.wait()
    finally:
        carrier.close()
        receiver.close()
        for filler in fillers:
            filler.stdin.close()
            filler.wait(timeout=30)
            filler.stdout.close()
    assert (watcher.returncode, out) == (130, "")
    assert err == "tcpfast: stopped by SIGINT before the listing was complete: 0 line(s) written\n"


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as comm:
        return comm.read().rstrip("\n")


# A process in a pid namespace of its own (so pids can be chosen): child A holds
# sockets, is found, exits; child B is given A's pid and holds others.
PID_REUSE = textwrap.dedent("""
    import json, os, socket, sys
    sys.path[:0] = json.loads(sys.argv[1])
    from tests.test_owners import Child
    from tcpfast.enrich.owners import OwnerFinder
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    finder = OwnerFinder(budget=30.0)
    first = Child("tf8-first")
    first_inodes = first.connect(server, 3)
    results = {"first": finder.find(first_inodes)}
    first.exit()
    with open("/proc/sys/kernel/ns_last_pid", "w") as last_pid:
        last_pid.write(str(first.pid - 1))
    second = Child("tf8-second")
    second_inodes = second.connect(server, 3)
    results["second"] = finder.find(second_inodes)
    results["first_again"] = finder.find(first_inodes)
    results["pids"] = [first.pid, second.pid]
    second.exit()
    print(json.dumps({key: value if key == "pids" else [[*owner] for owner in value.values()]
                      for key, value in results.items()}))
""")


def test_pid_reused_by_another_process():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a pid namespace where pids can be chosen")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", PID_REUSE,
                           json.dumps([root, *sys.path])], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot create a pid namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    first_pid, second_pid = results["pids"]
    assert second_pid == first_pid
    assert results["first"] == [[first_pid, "tf8-first"]] * 3
    assert results["second"] == [[first_pid, "tf8-second"]] * 3
    assert results["first_again"] == []


def test_non_root_finds_its_own_processes_only(start_child, server):
    """As nobody: its own child's sockets found, root's sockets ownerless, and no error."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this system")
    roots_child = start_child("tf8-roots")
    roots = [*roots_child.connect(server, 2), inode_of(server)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                         # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            # A python that nobody may run (this one may live under /root).
            python = next((path for path in (sys.executable, shutil.which("python3")) if path
                           and os.access(path, os.X_OK) and os.access(os.path.dirname(path), os.X_OK)), None)
            if python is None:
                os.write(write_end, json.dumps({"skip": "no python3 that nobody may run"}).encode())
                os._exit(0)
            own = Child("tf8-nobody", python, cwd="/")
            inodes = own.connect(server, 3)
            server.close()                               # its copy: now only root holds the listener
            found = OwnerFinder(budget=GENEROUS_BUDGET).find(inodes + roots)
            os.write(write_end, json.dumps({"pid": own.pid, "own": inodes,
                                            "found": {str(k): [*v] for k, v in found.items()}}).encode())
            own.exit()
            status = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report.decode()
    report = json.loads(report)
    if "skip" in report:
        pytest.skip(report["skip"])
    assert report["found"] == {str(inode): [report["pid"], "tf8-nobody"] for inode in report["own"]}
