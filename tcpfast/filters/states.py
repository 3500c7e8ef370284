"""State names as users type them (the kernel's, ss's, ss's groups) and the kernel's state mask.

The groups are ss's (iproute2 ``misc/ss.c``, ``scan_state``), over the states
/proc lists (1..11):

- ``all``: every state.
- ``connected``: all but LISTEN and CLOSE.
- ``synchronized``: connected but SYN_SENT.
- ``bucket``: SYN_RECV and TIME_WAIT (what the kernel keeps as minisockets).
- ``big``: all but SYN_RECV and TIME_WAIT.

Here a group is a set of the states rows have, and the kernel's mask is
made from it (:func:`kernel_state_mask`): NEW_SYN_RECV (12, the request
socket of a pending handshake, which sock_diag reports as SYN_RECV) is set
exactly when SYN_RECV is chosen, BOUND_INACTIVE (13: bound, neither
listening nor connected; /proc never lists it) never. ss 6.1 masks with
bits 0..11 only, so its groups select the same rows; iproute2 6.8 and later
put both kernel-only bits in ``all``, and keep them in ``connected`` and
``big`` too, so their ``state big`` lists pending handshakes (as SYN-RECV)
and ``state connected`` bound-only sockets (as UNCONN).
"""

from __future__ import annotations

from collections.abc import Collection

from ..schema import STATE_CODES, STATE_NAMES

TCP_NEW_SYN_RECV = 12          # a pending handshake's request socket: dumped as SYN_RECV
TCP_BOUND_INACTIVE = 13        # bound, not listening: /proc does not list it
#: The kernel's state mask for every state /proc lists (and pending handshakes).
ALL_STATES_MASK = 0xFFFFFFFF & ~(1 << TCP_BOUND_INACTIVE)

_EVERY_STATE = frozenset(STATE_NAMES)
_LISTEN, _CLOSE = STATE_CODES["LISTEN"], STATE_CODES["CLOSE"]
_SYN_SENT, _SYN_RECV, _TIME_WAIT = (STATE_CODES["SYN_SENT"], STATE_CODES["SYN_RECV"],
                                    STATE_CODES["TIME_WAIT"])

#: ss's state groups, as sets of kernel state codes.
STATE_GROUPS: dict[str, frozenset[int]] = {
    "all": _EVERY_STATE,
    "connected": _EVERY_STATE - {_LISTEN, _CLOSE},
    "synchronized": _EVERY_STATE - {_LISTEN, _CLOSE, _SYN_SENT},
    "bucket": frozenset({_SYN_RECV, _TIME_WAIT}),
    "big": _EVERY_STATE - {_SYN_RECV, _TIME_WAIT},
}

#: Other spellings of the kernel's names (upper case, ``-`` as ``_``): what ss accepts
#: (``established``, ``syn-rcv``, ``fin-wait-1``, ``unconnected``, ``closed``,
#: ``listening``, ...) and what it prints (``ESTAB``, ``UNCONN``, ``SYN-RECV``, ...).
STATE_ALIASES: dict[str, str] = {
    "ESTAB": "ESTABLISHED",
    "SYN_RCV": "SYN_RECV",
    "SYN_RECEIVED": "SYN_RECV",
    "FIN_WAIT_1": "FIN_WAIT1",
    "FIN_WAIT_2": "FIN_WAIT2",
    "CLOSED": "CLOSE",
    "UNCONN": "CLOSE",
    "UNCONNECTED": "CLOSE",
    "LISTENING": "LISTEN",
}

_NEVER_LISTED = {"BOUND_INACTIVE", "NEW_SYN_RECV"}


def _codes_of(name: str) -> frozenset[int] | None:
    """The states one name stands for (a group, a kernel name or a spelling of one), or None."""
    group = STATE_GROUPS.get(name.lower())
    if group is not None:
        return group
    canonical = name.upper().replace("-", "_")
    code = STATE_CODES.get(STATE_ALIASES.get(canonical, canonical))
    return None if code is None else frozenset({code})


def parse_states(text: str) -> frozenset[int]:
    """``established,time-wait`` or ``connected``: the kernel state codes named, case-insensitive.

    ValueError, one line quoting the text, for a name that is none of the
    kernel's names, ss's spellings or ss's groups, or for no name at all.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if _codes_of(name) is None]
    if unknown or not names:
        never = [name for name in unknown if name.upper().replace("-", "_") in _NEVER_LISTED]
        why = f" ({', '.join(map(repr, never))}: the kernel's own, never listed)" if never else ""
        raise ValueError(
            f"unknown state {', '.join(map(repr, unknown)) or repr(text)}{why}; choose from "
            f"{', '.join(name.lower() for name in STATE_CODES)}, ss's spellings (e.g. "
            f"time-wait, estab) or ss's groups ({', '.join(STATE_GROUPS)})")
    codes: set[int] = set()
    for name in names:
        codes |= _codes_of(name) or frozenset()
    return frozenset(codes)


def kernel_state_mask(states: Collection[int] | None) -> int:
    """sock_diag's ``idiag_states`` for ``states`` (None: every state /proc lists).

    SYN_RECV brings NEW_SYN_RECV along (pending handshakes are dumped as
    SYN_RECV; the kernel adds that bit itself, it is set here so that the mask
    says what is dumped).
    """
    if states is None:
        return ALL_STATES_MASK
    mask = 0
    for state in states:
        if state not in STATE_NAMES:
            raise ValueError(f"not a TCP state /proc lists: {state!r}")
        mask |= 1 << state
    if mask & (1 << _SYN_RECV):
        mask |= 1 << TCP_NEW_SYN_RECV
    return mask


#: The states a connection can pass to from each state while its socket lives (RFC 9293's
#: diagram, as Linux runs it; TIME_WAIT and the end of LAST_ACK are past the socket).
_NEXT: dict[str, tuple[str, ...]] = {
    "SYN_SENT": ("ESTABLISHED", "SYN_RECV"),
    "SYN_RECV": ("ESTABLISHED", "FIN_WAIT1"),
    "ESTABLISHED": ("FIN_WAIT1", "CLOSE_WAIT"),
    "FIN_WAIT1": ("FIN_WAIT2", "CLOSING"),
    "CLOSE_WAIT": ("LAST_ACK",),
}


def lasting_states(states: Collection[int]) -> frozenset[int]:
    """``states`` and every state a connection in one of them can pass to while its socket
    lives: what a dump filtered by state must keep for the watcher to tell when a
    chosen connection's socket is gone (``--state established``: CLOSE_WAIT, FIN_WAIT1
    ... too). TIME_WAIT only when chosen: its rows have no socket, as if absent."""
    names = {STATE_NAMES[state] for state in states if state in STATE_NAMES}
    todo = list(names)
    while todo:
        for following in _NEXT.get(todo.pop(), ()):
            if following not in names:
                names.add(following)
                todo.append(following)
    return frozenset(STATE_CODES[name] for name in names)
