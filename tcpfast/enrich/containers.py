"""Which container, and which Kubernetes pod, a process or a network namespace belongs to.

Why from cgroups: every container runtime puts a container's processes in a
cgroup named after the container's id, and the kubelet puts a pod's
containers under a cgroup named after the pod's UID; ``/proc/PID/cgroup``
says which, for any process, to any user, without talking to a runtime or
the API server. The names this module knows (the runtime's own cgroup, and
the kubelet's systemd and cgroupfs drivers):

- podman: ``machine.slice/libpod-<id>.scope`` (systemd),
  ``/libpod_parent/libpod-<id>`` (cgroupfs), ``.../NAME.service/libpod-payload-<id>``
  (``--cgroups=split``, quadlet's default); its monitor's ``libpod-conmon-<id>.scope``
  and ``/libpod_parent/conmon`` are no container;
- docker: ``system.slice/docker-<id>.scope`` (systemd), ``/docker/<id>`` (cgroupfs;
  ``/docker/<id>/docker/<id2>`` docker in docker: the innermost);
- containerd (CRI): ``cri-containerd-<id>.scope``, or the bare ``<id>`` under
  ``/kubepods/...`` (cgroupfs), or ``...pod<uid>.slice:cri-containerd:<id>`` (a
  systemd path that containerd did not expand);
- CRI-O: ``crio-<id>.scope`` or ``crio-<id>``; its ``crio-conmon-<id>`` is no container;
- Kubernetes pods: ``kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/...``
  (systemd driver: the UID's dashes written as underscores; ``besteffort``, or no
  QoS part for guaranteed pods; kind's ``kubelet-kubepods-...``) and
  ``/kubepods/burstable/pod<uid>/...`` (cgroupfs driver).

``<id>`` is 64 lowercase hex digits; any ``<name>-<id>.scope`` is taken as a
container (a runtime this list does not name), except a ``conmon``'s. The
deepest container in the path wins (a container may make cgroups of its own
below its own). A pod UID is a UUID, or 32 hex digits (a static pod's); it is
given with dashes, as the API shows it. A path seen from inside a cgroup
namespace (``/../../kubepods-...``) names them too.

A pod's name and namespace come from the kubelet's log directory
(``/var/log/pods/<namespace>_<name>_<uid>/``), read again only when it changed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..events import Holder, RowEvents

if TYPE_CHECKING:
    from ..sources.discovery import Namespace

DEFAULT_POD_LOGS = "/var/log/pods"
"""The kubelet's default pod log directory (``--pod-logs`` defaults to it where it exists)."""

CGROUP_BYTES = 64 * 1024
"""Read at most this much of /proc/PID/cgroup (a v1 host lists ~13 lines of < 300 bytes)."""

_ID = r"[0-9a-f]{64}"
_CONTAINER = re.compile(rf"(?:(?P<name>[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?)-)?(?P<id>{_ID})(?:\.scope)?")
_POD_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_POD = re.compile(rf"(?:.*-)?pod(?P<uid>{_POD_UID})(?:\.slice)?")
_CONMON = "conmon"


class Container(NamedTuple):
    """A process's (or a namespace's) container and pod; None where there is none (or several)."""

    container_id: str | None
    pod_uid: str | None


NO_CONTAINER = Container(None, None)


def parse_cgroup(text: str) -> Container:
    """The container and pod named by the text of a ``/proc/PID/cgroup`` file.

    The cgroup v2 line (``0::PATH``) is read first, then the v1 lines in
    order: the first that names a container or a pod decides.
    """
    lines = text.splitlines()
    unified = [line for line in lines if line.startswith("0::")]
    for line in (*unified, *lines):
        _, _, path = line.partition(":")
        _, _, path = path.partition(":")
        found = parse_path(path)
        if found != NO_CONTAINER:
            return found
    return NO_CONTAINER


def parse_path(path: str) -> Container:
    """The container and pod named by one cgroup path (``/kubepods/burstable/pod<uid>/<id>``)."""
    container_id: str | None = None
    pod_uid: str | None = None
    in_kubepods = False
    for segment in re.split(r"[/:]", path):
        if not segment or segment == "..":
            continue
        if "kubepods" in segment:
            in_kubepods = True
        container = _CONTAINER.fullmatch(segment)
        if container is not None:
            if (container.group("name") or "").endswith(_CONMON):
                # A runtime's monitor: beside the container, in the host's namespaces.
                return NO_CONTAINER
            container_id = container.group("id")
            continue
        if in_kubepods:
            pod = _POD.fullmatch(segment)
            if pod is not None:
                pod_uid = pod.group("uid").replace("_", "-")
    return Container(container_id, pod_uid)


def read_container(pid: int, procfs: str = "/proc") -> Container | None:
    """The container and pod of process ``pid`` (``PROCFS/PID/cgroup``); None: it is gone."""
    try:
        fd = os.open(f"{procfs}/{pid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, CGROUP_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_cgroup(data.decode("utf-8", "replace"))


def holder_of(pids: Iterable[int], procfs: str = "/proc") -> Container:
    """The container and pod that hold a network namespace, given its processes.

    A pod's containers share their sandbox's namespace: then ``pod_uid`` is
    the pod's, and ``container_id`` is set only when one container has every
    process. A plain container's namespace: its id. A namespace that some
    process outside any container is in (the host's, ``ip netns``, ``unshare``,
    one a host process entered), or that processes of several pods or
    containers share without a pod: nothing. Processes that exit meanwhile
    are left out. Stops at the first process in no container (the host's
    namespace costs one read).
    """
    containers: set[str | None] = set()
    pods: set[str | None] = set()
    for pid in sorted(pids):
        found = read_container(pid, procfs)
        if found is None:
            continue
        if found == NO_CONTAINER:
            return NO_CONTAINER
        containers.add(found.container_id)
        pods.add(found.pod_uid)
    container_id = containers.pop() if len(containers) == 1 else None
    pod_uid = pods.pop() if len(pods) == 1 else None
    return Container(container_id, pod_uid)


class Holders:
    """``holder_of`` for each namespace, read again only when its processes changed.

    ``namespace`` is any hashable that names a namespace (a discovery's
    ``Namespace.key``); ``forget_all_but`` drops namespaces that are gone.
    """

    def __init__(self, procfs: str = "/proc") -> None:
        self.procfs = procfs
        self._known: dict[Hashable, tuple[tuple[int, ...], Container]] = {}

    def of(self, namespace: Hashable, pids: Iterable[int]) -> Container:
        members = tuple(sorted(pids))
        known = self._known.get(namespace)
        if known is not None and known[0] == members:
            return known[1]
        holder = holder_of(members, self.procfs)
        self._known[namespace] = (members, holder)
        return holder

    def forget_all_but(self, namespaces: Iterable[Hashable]) -> None:
        keep = set(namespaces)
        for namespace in [namespace for namespace in self._known if namespace not in keep]:
            del self._known[namespace]


class Pod(NamedTuple):
    """A pod's Kubernetes namespace and name."""

    namespace: str
    name: str


_POD_LOG_DIRECTORY = re.compile(r"(?P<namespace>[a-z0-9][a-z0-9-]*)_(?P<name>[a-z0-9][a-z0-9.-]*)_"
                                r"(?P<uid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                                r"|[0-9a-f]{32})")

RACY_SECONDS = 2.0
"""A listing made this soon after the directory's last change may have missed an entry
made in the same timestamp tick (coarse clocks, 1-10 ms): one such listing is not trusted."""


class PodLogs:
    """Pod UID -> (namespace, name), from the kubelet's pod log directory.

    The directory is listed again when a UID is asked for that the last
    listing did not have and the directory changed since (its mtime); so a
    lookup usually costs a dict lookup, and a pod unknown to the kubelet one
    stat(). Names that are not a pod's log directory are counted in
    ``skipped``; old kubelets' directories named by the UID alone give no
    name (also counted). A missing or unreadable directory gives no names
    and ``error`` says why.
    """

    def __init__(self, path: str = DEFAULT_POD_LOGS) -> None:
        self.path = path
        self._pods: dict[str, Pod] = {}
        self._seen: tuple[int, int, int] | None = None   # (st_dev, st_ino, st_mtime_ns) listed
        self._trusted = False
        self.skipped = 0
        self.error: str | None = None

    def lookup(self, pod_uid: str | None) -> Pod | None:
        """The pod with this UID, or None (no UID, or not in the directory)."""
        if pod_uid is None:
            return None
        pod = self._pods.get(pod_uid)
        if pod is None and self._changed():
            self._list()
            pod = self._pods.get(pod_uid)
        return pod

    def _changed(self) -> bool:
        try:
            status = os.stat(self.path)
        except OSError as error:
            self.error = f"cannot read {self.path}: {error.strerror}"
            return False
        return not self._trusted or self._seen != (status.st_dev, status.st_ino, status.st_mtime_ns)

    def _list(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            self.error = f"cannot read {self.path}: {error.strerror}"
            return
        try:
            before = os.fstat(fd)
            names = os.listdir(fd)
        except OSError as error:
            self.error = f"cannot read {self.path}: {error.strerror}"
            return
        finally:
            os.close(fd)
        pods: dict[str, Pod] = {}
        skipped = 0
        for name in names:
            match = _POD_LOG_DIRECTORY.fullmatch(name)
            if match is None:
                skipped += 1
                continue
            pods[match.group("uid")] = Pod(match.group("namespace"), match.group("name"))
        self._pods, self.skipped, self.error = pods, skipped, None
        self._seen = (before.st_dev, before.st_ino, before.st_mtime_ns)
        self._trusted = time.time() - before.st_mtime > RACY_SECONDS


#: Polls a namespace's last holder is remembered for its closed connections.
REMEMBER_POLLS = 10


class HolderLookup:
    """Which container or pod holds each event's connection (``--all-netns``).

    ``namespaces()`` gives the namespaces read at the last poll (discovery's, with
    their processes); each poll, :meth:`update` takes them, and :meth:`annotate`
    then names each event's holder: the owning process's container where the owner is
    known (``--process``: a pod's containers share one namespace), else the
    namespace's. A namespace's closed connections are named by the last holder it
    had for up to REMEMBER_POLLS polls after it had one: a container that stops takes
    its processes first (the namespace then has none, or only a runtime's helper),
    its namespace next, and its connections are reported closed after both. Pod
    names come from ``pod_logs`` when given.
    """

    def __init__(self, namespaces: Callable[[], Iterable[Namespace]], procfs: str = "/proc",
                 pod_logs: PodLogs | None = None) -> None:
        self._current = namespaces
        self.procfs = procfs
        self.pod_logs = pod_logs
        self._namespaces = Holders(procfs)
        self._by_netns: dict[int, Container] = {}
        self._remembered: dict[int, tuple[Container, int]] = {}   # netns -> (holder, poll)
        self._polls = 0

    def update(self) -> None:
        """Take the namespaces of this poll's read."""
        self._polls += 1
        namespaces = list(self._current())
        current = {namespace.netns: self._namespaces.of(namespace.key, namespace.pids)
                   for namespace in namespaces}
        self._namespaces.forget_all_but(namespace.key for namespace in namespaces)
        self._by_netns = current
        for netns, container in current.items():
            if container != NO_CONTAINER:
                self._remembered[netns] = (container, self._polls)
        for netns in [netns for netns, (_, poll) in self._remembered.items()
                      if poll <= self._polls - REMEMBER_POLLS]:
            del self._remembered[netns]

    def annotate(self, events: RowEvents) -> RowEvents:
        """``events`` with ``holder``/``holders`` filled (-1: in no container or pod)."""
        if not len(events):
            return events
        netns = events.rows["netns"].tolist()
        found: list[Container] = [self._by_netns.get(value, NO_CONTAINER) for value in netns]
        if events.event in ("closed", "new_and_closed"):
            found = [self._remembered[value][0] if container == NO_CONTAINER
                     and value in self._remembered else container
                     for value, container in zip(netns, found)]
        if events.owners is not None:
            mine: dict[int, Container | None] = {}
            for row, owner in enumerate(events.owners):
                if owner is not None:
                    if owner.pid not in mine:
                        mine[owner.pid] = read_container(owner.pid, self.procfs)
                    container = mine[owner.pid]
                    if container is not None and container != NO_CONTAINER:
                        found[row] = container
        holders: dict[Container, int] = {}
        index = np.full(len(found), -1, dtype=np.int32)
        for row, container in enumerate(found):
            if container != NO_CONTAINER:
                index[row] = holders.setdefault(container, len(holders))
        return replace(events, holder=index,
                       holders=tuple(self._holder(container) for container in holders))

    def _holder(self, container: Container) -> Holder:
        pod = self.pod_logs.lookup(container.pod_uid) if self.pod_logs is not None else None
        return Holder(container.container_id, container.pod_uid,
                      pod.namespace if pod else None, pod.name if pod else None)
