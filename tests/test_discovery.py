"""Namespace discovery on real namespaces (ip netns, unshare -n), as root and as user nobody,
and its bookkeeping (reused inode numbers, reused pids, settled processes) on a directory
tree laid out like a procfs."""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
from held import LEADER_EXITS, as_nobody, held, netns_inode, run_as_nobody
from namespaces import SESSION_TAG, add_namespace, unshare_or_skip

from tcpfast.sources import discovery
from tcpfast.sources.discovery import NamespaceFinder, key_of

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: ip netns, unshare -n, and a switch to user nobody")
_names = itertools.count()


@pytest.fixture
def netns():
    """A namespace made by ``ip netns add`` (a bind mount keeps it), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for ip netns add")
    name = f"tf16-{SESSION_TAG}-{next(_names)}"
    add_namespace(name)
    try:
        yield name
    finally:
        os.system(f"ip netns del {name}")


def by_pid(scan: discovery.NamespaceScan) -> dict[int, discovery.Namespace]:
    found = {pid: namespace for namespace in scan.namespaces.values() for pid in namespace.pids}
    assert len(found) == sum(len(namespace.pids) for namespace in scan.namespaces.values()), \
        "a process in two namespaces"
    return found


def scans_until(finder: NamespaceFinder, found, limit: int) -> tuple[int, discovery.NamespaceScan]:
    """Scan until ``found(scan)``, at most ``limit`` times: (scans made, the last scan)."""
    scans = 0
    while True:
        scan, scans = finder.scan(), scans + 1
        if found(scan) or scans == limit:
            return scans, scan


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def wait_for_zombie(pid: int) -> None:
    """Until ``pid`` is a zombie (it exited; its parent has not reaped it)."""
    deadline = time.monotonic() + 10
    while state_of(pid) != "Z":
        assert time.monotonic() < deadline, f"{pid} did not exit"
        time.sleep(0.01)


# -- the kernel's facts ---------------------------------------------------------------------

def test_one_table_inode_per_namespace_on_this_host(netns):
    """Every process of one namespace shows the same net/tcp inode, and no two namespaces
    share one; it is not the namespace's own inode number. Checked on every process root
    may look at, with namespaces of the test's own added."""
    with held("ip", "netns", "exec", netns), held("ip", "netns", "exec", netns), \
            held("unshare", "-n"):
        keys_of: dict[int, set] = defaultdict(set)
        inodes_of: dict[tuple, set] = defaultdict(set)
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                key, inode = key_of(f"/proc/{name}"), netns_inode(name)
            except OSError:                          # exited, a zombie, or not ours to look at
                continue
            keys_of[inode].add(key)
            inodes_of[key].add(inode)
    assert len(inodes_of) >= 3
    assert all(len(keys) == 1 for keys in keys_of.values()), keys_of
    assert all(len(inodes) == 1 for inodes in inodes_of.values()), inodes_of
    assert all(key[1] not in keys_of for key in inodes_of)


# -- discovery on real namespaces -------------------------------------------------------------

@needs_root
def test_each_namespace_once_with_its_processes(netns):
    with held("ip", "netns", "exec", netns) as first, held("ip", "netns", "exec", netns) as second, \
            held("unshare", "-n") as alone:
        scan = NamespaceFinder().scan()
        found = by_pid(scan)
        named = found[first.pid]
        assert found[second.pid] is named
        assert named.pids == tuple(sorted((first.pid, second.pid)))
        assert named.netns == os.stat(f"/run/netns/{netns}").st_ino == netns_inode(first.pid)
        assert named.netns_is_inode and named.openable
        assert named.pid == min(first.pid, second.pid)
        assert named.proc_root == f"/proc/{named.pid}"
        assert named.netns_path == f"/proc/{named.pid}/ns/net"
        assert named.key == key_of(f"/proc/{first.pid}")
        unshared = found[alone.pid]
        assert unshared.pids == (alone.pid,)
        assert unshared.netns == netns_inode(alone.pid) and unshared.netns_is_inode
        own = found[os.getpid()]
        assert own.netns == netns_inode("self")
    assert len({namespace.key for namespace in (named, unshared, own)}) == 3
    for field in ("netns", "serial"):
        values = [getattr(namespace, field) for namespace in scan.namespaces.values()]
        assert len(set(values)) == len(values)
    assert scan.refused == 0
    assert scan.processes >= len(found)


@needs_root
def test_as_nobody_the_same_namespaces_named_by_their_tables(netns):
    """As nobody: every namespace found, with the same processes; root's namespaces named by
    their table's inode, not enterable; one where a process of nobody's runs named by its
    own inode, with that process as its representative, though a root process is lower."""
    def scan() -> list:
        return [[list(namespace.key), namespace.netns, namespace.netns_is_inode, namespace.pid,
                 list(namespace.pids), namespace.openable]
                for namespace in NamespaceFinder().scan().namespaces.values()]

    with held("ip", "netns", "exec", netns) as roots, \
            held("ip", "netns", "exec", netns, *as_nobody()) as nobodys, \
            held("unshare", "-n") as root_only:
        as_root = {tuple(row[0]): row for row in scan()}
        as_nobody_ = {tuple(row[0]): row for row in run_as_nobody(scan)}
        shared, alone = key_of(f"/proc/{roots.pid}"), key_of(f"/proc/{root_only.pid}")
        shared_inode, alone_inode = netns_inode(roots.pid), netns_inode(root_only.pid)
    assert roots.pid < nobodys.pid
    assert as_root[shared] == [list(shared), shared_inode, True, roots.pid,
                               [roots.pid, nobodys.pid], True]
    assert as_nobody_[shared] == [list(shared), shared_inode, True, nobodys.pid,
                                  [roots.pid, nobodys.pid], True]
    assert as_root[alone] == [list(alone), alone_inode, True, root_only.pid, [root_only.pid], True]
    assert as_nobody_[alone] == [list(alone), alone[1], False, root_only.pid, [root_only.pid], False]
    own = key_of("/proc/self")                        # nobody's own process is in it:
    assert as_nobody_[own][1:3] == [netns_inode("self"), True]


@needs_root
def test_the_representative_stays_until_it_leaves(netns):
    finder = NamespaceFinder()
    with held("ip", "netns", "exec", netns) as first, held("ip", "netns", "exec", netns) as second:
        before = by_pid(finder.scan())[first.pid]
        assert before.pid == first.pid < second.pid
        first.end()
        after = by_pid(finder.scan())[second.pid]
        assert (after.key, after.serial, after.netns, after.pid, after.pids) == (
            before.key, before.serial, before.netns, second.pid, (second.pid,))
        with held("ip", "netns", "exec", netns) as third:
            joined = by_pid(finder.scan())[third.pid]
            assert (joined.pid, joined.pids, joined.netns) == (second.pid, (second.pid, third.pid),
                                                               before.netns)


@needs_root
@pytest.mark.parametrize("recheck_every", [1, discovery.RECHECK_EVERY])
def test_a_process_that_moves_is_found_in_its_new_namespace(netns, recheck_every):
    """A settled process that is not its namespace's representative is looked at again at
    one scan in ``recheck_every``; the representative at every scan."""
    finder = NamespaceFinder(recheck_every=recheck_every)
    with held("ip", "netns", "exec", netns) as representative, \
            held("ip", "netns", "exec", netns) as mover:
        for _ in range(discovery.SETTLED + 1):
            finder.scan()
        assert mover.say("unshare") == "moved"
        moved_to = key_of(f"/proc/{mover.pid}")
        scans, scan = scans_until(finder, lambda scan: by_pid(scan)[mover.pid].key == moved_to,
                                  recheck_every)
        found = by_pid(scan)
        assert found[mover.pid].key == moved_to, f"not found within {recheck_every} scans"
        assert found[mover.pid].netns == netns_inode(mover.pid)
        assert found[representative.pid].pids == (representative.pid,)
        if recheck_every == 1:
            assert scans == 1
        assert representative.say("unshare") == "moved"
        found = by_pid(finder.scan())
        assert found[representative.pid].key == key_of(f"/proc/{representative.pid}")


@needs_root
def test_what_was_opened_stays_with_its_namespace(netns):
    """The checks the module's docstring gives a reader: an opened table (and namespace file)
    stays the namespace it was opened in when its process moves; fstat() says which."""
    with held("ip", "netns", "exec", netns) as process:
        port = int(process.say("listen"))
        key = key_of(f"/proc/{process.pid}")
        namespace = by_pid(NamespaceFinder().scan())[process.pid]
        with open(f"{namespace.proc_root}/net/tcp", "rb") as table, \
                open(namespace.netns_path, "rb") as file:
            assert process.say("unshare") == "moved"
            assert key_of(f"/proc/{process.pid}") != key
            assert (os.fstat(table.fileno()).st_dev, os.fstat(table.fileno()).st_ino) == key
            assert os.fstat(file.fileno()).st_ino == namespace.netns != netns_inode(process.pid)
            listening = f":{port:04X} 00000000:0000 0A"
            assert listening in table.read().decode()
            assert listening not in Path(namespace.proc_root, "net", "tcp").read_text()


@needs_root
def test_zombies_hold_no_namespace():
    with held("unshare", "-n") as parent:
        zombie = int(parent.say("zombie"))
        wait_for_zombie(zombie)
        scan = NamespaceFinder().scan()
        assert by_pid(scan)[parent.pid].pids == (parent.pid,)
        assert zombie not in by_pid(scan)
        assert scan.exited >= 1


@needs_root
def test_a_process_whose_leader_exited_is_found_through_its_thread():
    with held("unshare", "-n", script=LEADER_EXITS) as process:
        tid = int(process.ready[1])
        wait_for_zombie(process.pid)                 # the leader thread; the process lives on
        namespace = by_pid(NamespaceFinder().scan())[process.pid]
        assert namespace.proc_root == f"/proc/{process.pid}/task/{tid}"
        assert namespace.key == key_of(namespace.proc_root)
        assert namespace.netns == os.stat(namespace.netns_path).st_ino
        assert Path(namespace.proc_root, "net", "tcp").read_text().startswith("  sl")


@needs_root
def test_processes_that_may_not_be_looked_at_are_counted(request):
    """A procfs mounted with hidepid=1 lists every process but lets nobody look only at its
    own: the others are refused, and their namespaces are missing."""
    unshare_or_skip("--mount")
    procfs = Path(tempfile.mkdtemp(prefix="tf16-proc-"))     # where nobody may go
    procfs.chmod(0o755)
    request.addfinalizer(procfs.rmdir)
    libc = ctypes.CDLL(None, use_errno=True)

    def private_procfs() -> None:
        if libc.unshare(0x00020000) != 0:             # CLONE_NEWNS: the mount stays in this child
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) != 0:    # MS_REC | MS_PRIVATE
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        if libc.mount(b"proc", str(procfs).encode(), b"proc", 0, b"hidepid=1") != 0:
            raise OSError(ctypes.get_errno(), "mount -t proc -o hidepid=1")

    def scan() -> list:
        found = NamespaceFinder(str(procfs)).scan()
        return [found.processes, found.refused, [list(key) for key in found.namespaces]]

    processes, refused, keys = run_as_nobody(scan, prepare=private_procfs)
    assert refused >= 1 and processes > refused
    assert len(keys) >= 1


def test_a_procfs_that_cannot_be_listed_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        NamespaceFinder(str(tmp_path / "missing")).scan()
    with pytest.raises(ValueError, match="recheck_every"):
        NamespaceFinder(recheck_every=0)


# -- bookkeeping, on a directory tree laid out like a procfs --------------------------------------
# Hard links stand for namespaces: every PID/net/tcp linked to one file shows one inode, as
# the processes of one namespace do; PID/ns/net likewise for the namespace's own inode.

class FakeProcfs:
    def __init__(self, root: Path) -> None:
        self.root = root / "proc"
        self.store = root / "namespaces"
        self.root.mkdir()
        self.store.mkdir()

    def namespace(self, name: str) -> tuple[int, int]:
        """A namespace's two files; returns the inode of (its table, itself)."""
        (self.store / f"{name}.tcp").touch()
        (self.store / f"{name}.ns").touch()
        return (self.store / f"{name}.tcp").stat().st_ino, (self.store / f"{name}.ns").stat().st_ino

    def renew(self, name: str) -> int:
        """Namespace ``name``'s own file replaced by a new one (the old one stays where it is
        linked, so the two inode numbers differ); returns the new inode."""
        (self.store / "new.ns").touch()
        os.replace(self.store / "new.ns", self.store / f"{name}.ns")
        return (self.store / f"{name}.ns").stat().st_ino

    def process(self, pid: int, name: str) -> None:
        """A process in namespace ``name``; a pid already there is replaced by a new process
        (its directory made anew before the old one goes: another inode)."""
        new = self.root / "new"
        for directory in ("net", "ns"):
            (new / directory).mkdir(parents=True)
        if (self.root / str(pid)).exists():
            self.exit(pid)
        new.rename(self.root / str(pid))
        self.move(pid, name)

    def move(self, pid: int, name: str) -> None:
        """The process enters namespace ``name`` (its directory stays: the same process)."""
        for link, target in (("net/tcp", "tcp"), ("ns/net", "ns")):
            path = self.root / str(pid) / link
            path.unlink(missing_ok=True)
            os.link(self.store / f"{name}.{target}", path)

    def exit(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))


@pytest.fixture
def fake(tmp_path):
    """The tree is the test's user's own: a finder run by any user may open its ns files."""
    return FakeProcfs(tmp_path)


def namespaces_of(scan: discovery.NamespaceScan) -> dict[int, tuple[int, tuple[int, ...]]]:
    """Table inode -> (netns, pids)."""
    return {key[1]: (namespace.netns, namespace.pids) for key, namespace in scan.namespaces.items()}


def test_a_reused_table_inode_with_none_of_its_processes_is_a_new_namespace(fake):
    table, first = fake.namespace("a")
    fake.process(100, "a")
    finder = NamespaceFinder(str(fake.root))
    scan = finder.scan()
    assert namespaces_of(scan) == {table: (first, (100,))}
    second = fake.renew("a")                          # the namespace ends, its table's inode is
    fake.exit(100)                                    # handed to a new one (with its own inode)
    fake.process(200, "a")
    again = finder.scan()
    assert namespaces_of(again) == {table: (second, (200,))}
    [before], [after] = scan.namespaces.values(), again.namespaces.values()
    assert after.serial != before.serial


def test_a_namespace_keeps_its_identifier_when_its_representative_leaves(fake):
    table, inode = fake.namespace("a")
    fake.process(100, "a")
    fake.process(101, "a")
    finder = NamespaceFinder(str(fake.root))
    first = finder.scan().namespaces[(os.stat(fake.root).st_dev, table)]
    assert first.pid == 100
    fake.renew("a")                                   # same namespace: its identifier was read
    fake.exit(100)                                    # once, and is not read again
    namespace = finder.scan().namespaces[(os.stat(fake.root).st_dev, table)]
    assert (namespace.netns, namespace.pid, namespace.pids) == (inode, 101, (101,))
    assert namespace.serial == first.serial


def test_a_reused_pid_is_a_new_process(fake):
    table_a, inode_a = fake.namespace("a")
    table_b, inode_b = fake.namespace("b")
    fake.process(99, "a")
    fake.process(100, "a")
    finder = NamespaceFinder(str(fake.root), recheck_every=1000)
    for _ in range(discovery.SETTLED + 1):
        finder.scan()
    fake.process(100, "b")                            # pid 100 exits; another process gets 100
    assert namespaces_of(finder.scan()) == {table_a: (inode_a, (99,)), table_b: (inode_b, (100,))}


def test_settled_processes_are_looked_at_in_turn(fake):
    """A process that moved while settled is found within recheck_every scans; each scan
    looks at the representatives and one in recheck_every of the others."""
    fake.namespace("a")
    table_b, inode_b = fake.namespace("b")
    for pid in range(100, 164):
        fake.process(pid, "a")
    finder = NamespaceFinder(str(fake.root), recheck_every=8)
    for _ in range(discovery.SETTLED):
        assert finder.scan().checked == 64
    settled = finder.scan()
    assert settled.checked == 1 + 8                   # the representative, and pids = scan mod 8
    fake.move(131, "b")
    _, scan = scans_until(finder, lambda scan: table_b in namespaces_of(scan), 8)
    assert namespaces_of(scan)[table_b] == (inode_b, (131,))
    assert NamespaceFinder(str(fake.root), recheck_every=1).scan().checked == 64


def test_a_namespace_whose_representative_is_gone_is_looked_at_whole(fake):
    fake.namespace("a")
    table_b, inode_b = fake.namespace("b")
    fake.process(99, "a")
    fake.process(100, "a")
    finder = NamespaceFinder(str(fake.root), recheck_every=1000)
    for _ in range(discovery.SETTLED + 1):
        finder.scan()
    os.unlink(fake.root / "99" / "net" / "tcp")       # a zombie: listed, without tables
    fake.move(100, "b")
    scan = finder.scan()
    assert namespaces_of(scan) == {table_b: (inode_b, (100,))}
    assert scan.exited == 1
