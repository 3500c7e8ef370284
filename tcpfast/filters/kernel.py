"""The part of a filter the kernel can evaluate during a sock_diag dump, compiled as ``ss`` does.

A dump request (``inet_diag_req`` for TCPDIAG_GETSOCK, ``inet_diag_req_v2``
for SOCK_DIAG_BY_FAMILY) carries the states to dump (``idiag_states``) and
may be followed by an ``INET_DIAG_REQ_BYTECODE`` attribute: a program the
kernel runs on every socket it walks (``inet_diag_bc_run`` in
net/ipv4/inet_diag.c), sending only those it accepts.

The program is a list of ops, each ``{u8 code, u8 yes, u16 no}`` and its
operands; every op is a test, and the run goes on ``yes`` or ``no`` bytes
further. Ending exactly at the end accepts the socket, jumping 4 bytes past
it rejects it. Ports and networks compile to the host conditions ss uses,
which every kernel with sock_diag accepts unprivileged:
``S_COND``/``D_COND`` (local/remote) with an ``inet_diag_hostcond``
``{u8 family, u8 prefix_len, int port, be32 addr[]}``: family AF_UNSPEC and
a port for a port test, family and prefix with port -1 for a network. An
AF_INET condition also matches an IPv6 socket's IPv4-mapped address (the
kernel's own rule), which is the mask's rule for IPv4 networks.

A condition (an OR) is laid out as ss lays out an OR: each test but the last
is followed by a ``JMP`` (always "no") to the next condition, a failed test
falls through to the next test (``no`` skips the ``JMP``), and the last
test's ``no`` rejects. The kernel's audit (``inet_diag_bc_audit``) checks
what this keeps to: ``yes`` and ``no`` are multiples of 4, at least the op's
own length, at most 4 past the end, and a jump that lands inside the program
lands on an op (one reached by following ``yes`` from the start). The
attribute length is a u16, so a program is at most 65,528 bytes; a larger
one (thousands of networks) is not sent and the mask alone evaluates it.

Not compiled: uids and directions (no op tests them), nor ``MARK_COND``
(needs CAP_NET_ADMIN), ``DEV_COND``, ``AUTO`` or ``CGROUP_COND``, which no
option uses. Rows are still checked by the mask on arrival: the kernel's
answer narrows a dump, it is never the only test.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .spec import Filter, IPNetwork
from .states import kernel_state_mask

INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_COND = 7
INET_DIAG_BC_D_COND = 8
AF_UNSPEC = 0
ANY_PORT = -1
#: The largest program an attribute holds (its u16 length counts its 4-byte header).
MAX_BYTECODE = (0xFFFF - 4) & ~3

_OP = struct.Struct("=BBH")                 # inet_diag_bc_op
_HOSTCOND = struct.Struct("=BBxxi")         # inet_diag_hostcond without its address
_ATTRIBUTE = struct.Struct("=HH")           # rtattr / nlattr header
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}

#: The conditions the kernel evaluates, in the order the program tests them.
PUSHED = ("remote_ports", "local_ports", "ports", "remote_networks", "local_networks")


def _port_test(code: int, port: int) -> tuple[int, bytes]:
    return code, _HOSTCOND.pack(AF_UNSPEC, 0, port)


def _network_test(code: int, network: IPNetwork) -> tuple[int, bytes]:
    return code, (_HOSTCOND.pack(_AF[network.version], network.prefixlen, ANY_PORT)
                  + network.network_address.packed)


def _tests(spec: Filter, name: str) -> list[tuple[int, bytes]]:
    """One condition's tests (any of them passing passes it), as (op code, operands)."""
    if name == "remote_ports":
        return [_port_test(INET_DIAG_BC_D_COND, port) for port in sorted(spec.remote_ports or ())]
    if name == "local_ports":
        return [_port_test(INET_DIAG_BC_S_COND, port) for port in sorted(spec.local_ports or ())]
    if name == "ports":
        return [_port_test(code, port) for port in sorted(spec.ports or ())
                for code in (INET_DIAG_BC_S_COND, INET_DIAG_BC_D_COND)]
    code = INET_DIAG_BC_D_COND if name == "remote_networks" else INET_DIAG_BC_S_COND
    return [_network_test(code, network) for network in getattr(spec, name)]


def _layout(conditions: Iterable[list[tuple[int, bytes]]]) -> bytes:
    """The program that accepts a socket when every condition has a test that passes."""
    # (code, where "no" goes: -1 reject, 0 the next test, else a JMP's target offset, operands)
    program: list[tuple[int, int, bytes]] = []
    offset = 0
    for tests in conditions:
        size = sum(4 + len(operands) for _, operands in tests) + 4 * (len(tests) - 1)
        end = offset + max(size, 4)
        if not tests:                                 # an empty OR: nothing passes
            program.append((INET_DIAG_BC_JMP, -1, b""))
        for index, (code, operands) in enumerate(tests):
            program.append((code, -1 if index == len(tests) - 1 else 0, operands))
            if index < len(tests) - 1:
                program.append((INET_DIAG_BC_JMP, end, b""))
        offset = end
    total = offset
    out = bytearray()
    for code, target, operands in program:
        here, length = len(out), 4 + len(operands)
        if code == INET_DIAG_BC_JMP:
            yes = 4
            no = (total + 4 if target < 0 else target) - here    # reject, or the next condition
        else:
            yes = length                                         # passed: the JMP, or what follows
            no = total + 4 - here if target < 0 else length + 4  # reject, or the next test
        out += _OP.pack(code, yes, no) + operands
    assert len(out) == total
    return bytes(out)


@dataclass(frozen=True)
class KernelFilter:
    """What a sock_diag dump request carries for a filter, and what it leaves out.

    - ``state_mask``: the request's ``idiag_states``.
    - ``bytecode``: the program (b"" when there is nothing to send: no
      condition the kernel can test, or a program too long for an attribute).
    - ``pushed``: the filter's conditions the kernel evaluates (``states`` by
      ``state_mask``, ports and networks by ``bytecode``); ``left``: those only
      the mask evaluates (uids, directions, anything the program could not hold).
    """

    state_mask: int
    bytecode: bytes
    pushed: tuple[str, ...]
    left: tuple[str, ...]

    def attribute(self) -> bytes:
        """The ``INET_DIAG_REQ_BYTECODE`` attribute to append to the request's
        ``inet_diag_req`` or ``inet_diag_req_v2`` (b"" without a program);
        the netlink message's length must count it."""
        if not self.bytecode:
            return b""
        return _ATTRIBUTE.pack(_ATTRIBUTE.size + len(self.bytecode),
                               INET_DIAG_REQ_BYTECODE) + self.bytecode


def kernel_filter(spec: Filter) -> KernelFilter:
    """The states mask and bytecode of ``spec``, and which conditions they cover."""
    given = [name for name in PUSHED if getattr(spec, name) is not None]
    bytecode = _layout(_tests(spec, name) for name in given)
    if len(bytecode) > MAX_BYTECODE:
        bytecode, given = b"", []
    pushed = [*given, *(["states"] if spec.states is not None else [])]
    left = tuple(name for name in spec.conditions if name not in pushed)
    return KernelFilter(kernel_state_mask(spec.states), bytecode, tuple(pushed), left)
