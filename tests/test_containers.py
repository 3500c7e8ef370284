"""Containers and pods from cgroups: the runtimes' real formats, real processes in cgroups named
as the kubelet names them, a real podman container, and a kubelet-like pod log directory."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from held import held, netns_inode, run_as_nobody
from namespaces import SESSION_TAG, add_namespace

from tcpfast.enrich import containers
from tcpfast.enrich.containers import (
    NO_CONTAINER,
    Container,
    HolderLookup,
    Holders,
    Pod,
    PodLogs,
    holder_of,
    parse_cgroup,
    read_container,
)
from tcpfast.events import RowEvents
from tcpfast.schema import CONNECTION_DTYPE
from tcpfast.sources.discovery import NamespaceFinder


def hex64(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


ID, OTHER = hex64("container"), hex64("other")
UID = "2d6f5c4e-8a1b-4c3d-9e2f-1a2b3c4d5e6f"
SYSTEMD_UID = UID.replace("-", "_")                  # the systemd driver's escaping
STATIC_UID = hashlib.md5(b"static pod").hexdigest()  # a static pod's UID: 32 hex digits
V1_CONTROLLERS = ("cpu,cpuacct", "memory", "pids", "devices", "freezer", "blkio", "name=systemd")


def v1(path: str, *, unified: str | None = None) -> str:
    """A cgroup v1 host's file: every controller at ``path`` (and a unified line, hybrid)."""
    lines = [f"{index}:{controller}:{path}" for index, controller
             in reversed(list(enumerate(V1_CONTROLLERS, 1)))]
    if unified is not None:
        lines.append(f"0::{unified}")
    return "\n".join(lines) + "\n"


def v2(path: str) -> str:
    return f"0::{path}\n"


# The runtimes' own formats (their documentation, issues and tests; podman's cgroupfs line is
# this machine's), one per line: text of /proc/PID/cgroup -> what it names.
FORMATS = {
    "podman, systemd": (v2(f"/machine.slice/libpod-{ID}.scope"), Container(ID, None)),
    "podman, cgroups of the container's own": (v2(f"/machine.slice/libpod-{ID}.scope/container"),
                                               Container(ID, None)),
    "podman, cgroupfs, hybrid": (v1(f"/libpod_parent/libpod-{ID}", unified=f"/libpod_parent/libpod-{ID}"),
                                 Container(ID, None)),
    "podman, rootless": (v2(f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
                         Container(ID, None)),
    "podman, --cgroups=split (quadlet)": (v2(f"/system.slice/web.service/libpod-payload-{ID}"),
                                          Container(ID, None)),
    "podman pod (no Kubernetes pod)": (
        v2(f"/machine.slice/machine-libpod_pod_{OTHER}.slice/libpod-{ID}.scope"), Container(ID, None)),
    "podman's conmon, systemd": (v2(f"/machine.slice/libpod-conmon-{ID}.scope"), NO_CONTAINER),
    "podman's conmon, cgroupfs": (v1("/libpod_parent/conmon", unified="/"), NO_CONTAINER),
    "podman's conmon, split": (v2("/system.slice/web.service/runtime"), NO_CONTAINER),
    "docker, systemd, v1": (v1(f"/system.slice/docker-{ID}.scope"), Container(ID, None)),
    "docker, systemd, v2": (v2(f"/system.slice/docker-{ID}.scope"), Container(ID, None)),
    "docker, cgroupfs": (v1(f"/docker/{ID}"), Container(ID, None)),
    "docker in docker": (v1(f"/docker/{OTHER}/docker/{ID}"), Container(ID, None)),
    "docker, hybrid, unified line at the root": (v1(f"/docker/{ID}", unified="/"), Container(ID, None)),
    "a runtime not named here": (v2(f"/system.slice/nerdctl-{ID}.scope"), Container(ID, None)),
    "containerd, systemd, burstable": (
        v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice"
           f"/cri-containerd-{ID}.scope"), Container(ID, UID)),
    "containerd, systemd, guaranteed": (
        v2(f"/kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/cri-containerd-{ID}.scope"), Container(ID, UID)),
    "containerd, cgroupfs, besteffort": (v1(f"/kubepods/besteffort/pod{UID}/{ID}"), Container(ID, UID)),
    "containerd, cgroupfs, guaranteed": (v1(f"/kubepods/pod{UID}/{ID}"), Container(ID, UID)),
    "containerd, a systemd path not expanded": (
        v1(f"/system.slice/containerd.service/kubepods-besteffort-pod{SYSTEMD_UID}.slice:cri-containerd:{ID}"),
        Container(ID, UID)),
    "containerd, kind (kubelet.slice)": (
        v2(f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice"
           f"/kubelet-kubepods-besteffort-pod{SYSTEMD_UID}.slice/cri-containerd-{ID}.scope"),
        Container(ID, UID)),
    "containerd, cgroups of the container's own": (v1(f"/kubepods/besteffort/pod{UID}/{ID}/kube-proxy"),
                                                   Container(ID, UID)),
    "containerd, seen from a cgroup namespace": (
        v2(f"/../../kubepods-besteffort-pod{SYSTEMD_UID}.slice/cri-containerd-{ID}.scope"),
        Container(ID, UID)),
    "CRI-O, systemd": (
        v1(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice"
           f"/crio-{ID}.scope"), Container(ID, UID)),
    "CRI-O, a static pod": (
        v1(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice"
           f"/crio-{ID}.scope"), Container(ID, STATIC_UID)),
    "CRI-O, cgroupfs": (v1(f"/kubepods/burstable/pod{UID}/crio-{ID}"), Container(ID, UID)),
    "CRI-O's conmon": (
        v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice"
           f"/crio-conmon-{ID}.scope"), NO_CONTAINER),
    "docker under the kubelet (cri-dockerd)": (
        v1(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice"
           f"/docker-{ID}.scope"), Container(ID, UID)),
    "a pod's own cgroup, no container": (
        v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice"),
        Container(None, UID)),
    "a host process": (v1("/", unified="/init.scope"), NO_CONTAINER),
    "a login session": (v2("/user.slice/user-1000.slice/session-3.scope"), NO_CONTAINER),
    "a service": (v2("/system.slice/sshd.service"), NO_CONTAINER),
    "a transient unit (systemd-run)": (v2(f"/system.slice/run-r{STATIC_UID}.scope"), NO_CONTAINER),
    "63 hex digits": (v2(f"/system.slice/docker-{ID[:63]}.scope"), NO_CONTAINER),
    "upper-case hex": (v2(f"/system.slice/docker-{ID.upper()}.scope"), NO_CONTAINER),
    "a pod UID outside kubepods": (v2(f"/machine.slice/pod{UID}/x"), NO_CONTAINER),
    "nothing": ("", NO_CONTAINER),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_runtimes_formats(name):
    text, expected = FORMATS[name]
    assert parse_cgroup(text) == expected


# -- real processes, in cgroups named as the kubelet names them --------------------------------

def writable_cgroup2() -> Path | None:
    """A cgroup v2 hierarchy this process may make cgroups in (the unified one of a hybrid host)."""
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2" and os.access(fields[4], os.W_OK):
                return Path(fields[4])
    return None


_cgroups = itertools.count()


@pytest.fixture
def cgroups():
    """make(path, pid): a real cgroup ``path`` (under one of the test's own) with ``pid`` in it."""
    hierarchy = writable_cgroup2() if os.geteuid() == 0 else None
    if hierarchy is None:
        pytest.skip("needs root and a writable cgroup v2 hierarchy to move processes into")
    top = hierarchy / f"tf16-{SESSION_TAG}-{next(_cgroups)}"
    made = []

    def make(path: str, pid: int) -> None:
        directory = top / path
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.procs").write_text(str(pid))
        made.append(directory)

    yield make
    for directory in sorted({parent for path in made for parent in (path, *path.parents)
                             if parent.is_relative_to(top)}, key=lambda path: -len(path.parts)):
        directory.rmdir()                           # the test's processes ended: all empty


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns add")
    name = f"tf16c-{SESSION_TAG}"
    add_namespace(name)
    try:
        yield name
    finally:
        os.system(f"ip netns del {name}")


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_a_pods_namespace_is_held_by_the_pod(netns, cgroups, driver):
    """A sandbox and an app container in one namespace: the pod holds it, no one container;
    the sandbox alone: the pod and its container. Real processes, real cgroups."""
    sandbox, app = hex64("sandbox"), hex64("app")
    if driver == "systemd":
        pod = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice"
        paths = {sandbox: f"{pod}/cri-containerd-{sandbox}.scope", app: f"{pod}/cri-containerd-{app}.scope"}
    else:
        pod = f"kubepods/besteffort/pod{UID}"
        paths = {sandbox: f"{pod}/{sandbox}", app: f"{pod}/{app}"}
    with held("ip", "netns", "exec", netns) as pause, held("ip", "netns", "exec", netns) as server:
        cgroups(paths[sandbox], pause.pid)
        assert read_container(pause.pid) == Container(sandbox, UID)
        assert holder_of([pause.pid, server.pid]) == NO_CONTAINER     # the server: no container yet
        cgroups(paths[app], server.pid)
        assert read_container(server.pid) == Container(app, UID)
        namespace = next(namespace for namespace in NamespaceFinder().scan().namespaces.values()
                         if pause.pid in namespace.pids)
        assert namespace.pids == (pause.pid, server.pid)
        assert holder_of(namespace.pids) == Container(None, UID)
        assert holder_of([pause.pid]) == Container(sandbox, UID)
        assert run_as_nobody(lambda: list(holder_of(namespace.pids))) == [None, UID]


def test_a_namespace_of_no_container(netns):
    with held("ip", "netns", "exec", netns) as process:
        assert holder_of([process.pid]) == NO_CONTAINER
    assert holder_of([os.getpid(), 1]) == NO_CONTAINER
    assert holder_of([]) == NO_CONTAINER
    assert read_container(process.pid) is None                      # it is gone


def test_holders_read_again_only_when_the_processes_change(netns, cgroups):
    with held("ip", "netns", "exec", netns) as first:
        holders = Holders()
        assert holders.of("ns", [first.pid]) == NO_CONTAINER
        cgroups(f"docker/{ID}", first.pid)
        assert holders.of("ns", [first.pid]) == NO_CONTAINER        # the same processes: kept
        with held("ip", "netns", "exec", netns) as second:
            cgroups(f"docker/{ID}", second.pid)
            assert holders.of("ns", [second.pid, first.pid]) == Container(ID, None)
        holders.forget_all_but([])
        assert holders.of("ns", [first.pid]) == Container(ID, None)


# -- a real podman container --------------------------------------------------------------------

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class Podman:
    """Rootful podman with storage, settings and a root filesystem of its own (the host's
    /usr, read-only: no image to pull or build), as scripts/container-check runs it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        (work / "containers.conf").write_text(CONTAINERS_CONF)
        self.rootfs = work / "rootfs"
        for directory in ("usr", "proc", "sys", "dev", "etc", "tmp", "run"):
            (self.rootfs / directory).mkdir(parents=True)
        for link in ("bin", "lib", "lib64", "sbin"):
            (self.rootfs / link).symlink_to(f"usr/{link}")
        self.env = {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")}
        self.base = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "run"),
                     "--tmpdir", str(work / "tmp"), "--runtime", "runc", "--cgroup-manager", "cgroupfs"]

    def __call__(self, *arguments: str) -> str:
        done = subprocess.run([*self.base, *arguments], capture_output=True, text=True, env=self.env,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(arguments[:2])}: {done.stderr.strip()}")
        return done.stdout.strip()

    def run(self, *options: str) -> str:
        """A detached container sleeping, from the host's /usr; its full id."""
        return self("run", "-d", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
                    "-v", "/usr:/usr:ro", *options, "--rootfs", str(self.rootfs), "/usr/bin/sleep", "600")

    def inspect(self, container: str, template: str) -> str:
        return self("inspect", "--format", template, container)

    def clean(self) -> None:
        """Every container removed (a container others depend on goes in a second round),
        then whatever podman left mounted, then its directory."""
        for _ in range(3):
            subprocess.run([*self.base, "rm", "--all", "--force", "--time", "0"], capture_output=True,
                           env=self.env, timeout=120)
            if not self("ps", "--all", "--quiet"):
                break
        left_running = self("ps", "--all", "--quiet")
        with open("/proc/self/mountinfo") as mounts:
            left = [line.split()[4] for line in mounts if str(self.work) in line.split()[4]]
        for mount in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        assert not left_running, f"podman could not remove containers {left_running.split()}"


@pytest.fixture(scope="module")
def podman():
    if os.geteuid() != 0:
        pytest.skip("needs root: rootful podman, as scripts/container-check runs it")
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/container-check installs them)")
    # Not under pytest's basetemp: podman refuses a runroot longer than 50 characters.
    engine = Podman(Path(tempfile.mkdtemp(prefix="tf16p-", dir="/tmp")))
    try:
        yield engine
    finally:
        engine.clean()


def pids_of(container_id: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and read_container(int(name)) == Container(container_id, None):
            found.append(int(name))
    return sorted(found)


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_podman_container(podman):
    try:
        container_id = podman.run("--network", "none")
    except RuntimeError as error:
        pytest.skip(f"podman cannot run a container here: {error}")
    assert container_id == podman.inspect(container_id, "{{.Id}}")
    pid = int(podman.inspect(container_id, "{{.State.Pid}}"))
    assert read_container(pid) == Container(container_id, None)
    podman("exec", "-d", container_id, "/usr/bin/sleep", "600")
    wait_for(lambda: len(pids_of(container_id)) == 2, "the exec'd process")
    found = NamespaceFinder().scan().namespaces.values()
    namespace = next(namespace for namespace in found if pid in namespace.pids)
    assert list(namespace.pids) == pids_of(container_id)
    assert namespace.netns == netns_inode(pid) and namespace.pid == pid
    assert holder_of(namespace.pids) == Container(container_id, None)
    assert run_as_nobody(lambda: list(holder_of(namespace.pids))) == [container_id, None]
    conmon = int(podman.inspect(container_id, "{{.State.ConmonPid}}"))
    assert read_container(conmon) == NO_CONTAINER
    own = next(namespace for namespace in found if os.getpid() in namespace.pids)
    assert holder_of(own.pids) == NO_CONTAINER

    # A second container in the first one's namespace, and no pod: no one holds it.
    joined = podman.run("--network", f"container:{container_id}")
    joined_pid = int(podman.inspect(joined, "{{.State.Pid}}"))
    assert netns_inode(joined_pid) == namespace.netns
    assert holder_of([*namespace.pids, joined_pid]) == NO_CONTAINER
    assert read_container(joined_pid) == Container(joined, None)


# -- the kubelet's pod log directory ----------------------------------------------------------------

def pod_log_directory(root: Path, namespace: str, name: str, uid: str) -> None:
    (root / f"{namespace}_{name}_{uid}" / "server").mkdir(parents=True)
    (root / f"{namespace}_{name}_{uid}" / "server" / "0.log").write_text("")


def test_pod_names_from_the_log_directory(tmp_path):
    kube_proxy = "7c1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
    pod_log_directory(tmp_path, "default", "web-0", UID)
    pod_log_directory(tmp_path, "kube-system", "kube-proxy-x7k2p", kube_proxy)
    pod_log_directory(tmp_path, "kube-system", "etcd-node-1.example.org", STATIC_UID)
    (tmp_path / "6c1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6").mkdir()      # an old kubelet's: UID only
    (tmp_path / "README").write_text("")
    logs = PodLogs(str(tmp_path))
    assert logs.lookup(UID) == Pod("default", "web-0")
    assert logs.lookup(kube_proxy) == Pod("kube-system", "kube-proxy-x7k2p")
    assert logs.lookup(STATIC_UID) == Pod("kube-system", "etcd-node-1.example.org")
    assert logs.lookup("6c1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6") is None
    assert logs.lookup(None) is None
    assert (logs.skipped, logs.error) == (2, None)
    later = "8d2f3a4b-5c6d-4e7f-9012-b3c4d5e6f7a8"                   # a pod started since
    pod_log_directory(tmp_path, "shop", "cart-5d9f7", later)
    assert logs.lookup(later) == Pod("shop", "cart-5d9f7")


def test_the_pod_log_directory_is_listed_again_only_when_it_changed(tmp_path):
    """A listing made well after the directory's last change is kept until its mtime moves;
    one made within RACY_SECONDS of it is not trusted (an entry made in the same timestamp
    tick would not move the mtime)."""
    pod_log_directory(tmp_path, "default", "web-0", UID)
    settled = time.time() - 10 * containers.RACY_SECONDS
    os.utime(tmp_path, (settled, settled))
    logs = PodLogs(str(tmp_path))
    assert logs.lookup(UID) == Pod("default", "web-0")
    (tmp_path / "junk").mkdir()                                      # changed, mtime put back:
    os.utime(tmp_path, (settled, settled))
    assert logs.lookup("8d2f3a4b-5c6d-4e7f-9012-b3c4d5e6f7a8") is None
    assert logs.skipped == 0                                         # not listed again
    (tmp_path / "more").mkdir()                                      # the mtime moves: listed
    assert logs.lookup("8d2f3a4b-5c6d-4e7f-9012-b3c4d5e6f7a8") is None
    assert logs.skipped == 2

    recent = PodLogs(str(tmp_path))                                  # listed just after a change
    assert recent.lookup(UID) == Pod("default", "web-0")
    changed = os.stat(tmp_path).st_mtime_ns
    pod_log_directory(tmp_path, "shop", "cart-5d9f7", STATIC_UID)
    os.utime(tmp_path, ns=(changed, changed))                        # as if in the same tick
    assert recent.lookup(STATIC_UID) == Pod("shop", "cart-5d9f7")


def test_a_missing_pod_log_directory(tmp_path):
    logs = PodLogs(str(tmp_path / "missing"))
    assert logs.lookup(UID) is None
    assert logs.error == f"cannot read {tmp_path}/missing: No such file or directory"


def test_closed_connections_keep_the_holder_their_namespace_last_had(netns, cgroups):
    """A container stops: its processes go first (the namespace then has none of its
    own, or is gone), its connections are reported closed after. Their closed events
    name the container the namespace last had (for REMEMBER_POLLS polls); new events
    name who holds the namespace now."""
    with held("ip", "netns", "exec", netns) as process:
        cgroups(f"machine.slice/libpod-{ID}.scope", process.pid)
        namespace = next(namespace for namespace in NamespaceFinder().scan().namespaces.values()
                         if process.pid in namespace.pids)
        found = [namespace]
        lookup = HolderLookup(lambda: found)
        lookup.update()
        rows = np.zeros(1, dtype=CONNECTION_DTYPE)
        rows["netns"] = namespace.netns
        events = {kind: RowEvents(kind, rows, np.zeros(1, dtype=np.uint8))
                  for kind in ("new", "closed", "new_and_closed")}

        def holders(kind: str) -> list[str | None]:
            annotated = lookup.annotate(events[kind])
            return [None if at < 0 else annotated.holders[at].container_id
                    for at in annotated.holder.tolist()]
        assert holders("new") == holders("closed") == [ID]
    found = []                                       # the namespace is gone
    for _ in range(containers.REMEMBER_POLLS - 1):
        lookup.update()
        assert holders("closed") == holders("new_and_closed") == [ID]
        assert holders("new") == [None]
    lookup.update()
    assert holders("closed") == [None]               # forgotten at last
