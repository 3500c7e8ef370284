"""Filters: which connections to report (``--port``, ``--local``, ``--inbound``, ``--state``, ...).

A :class:`Filter` says what is kept; :meth:`Filter.mask` evaluates it on rows
with vectorised tests; :func:`kernel_filter` compiles what the kernel can
evaluate (states, ports, networks) into a sock_diag dump request's state
mask and bytecode, and says what is left for the mask. The ``parse_*``
functions read the options' texts (ValueError: one line quoting the text).
"""

from .kernel import KernelFilter, kernel_filter
from .spec import Filter, IPNetwork, parse_networks, parse_ports, parse_uids
from .states import STATE_GROUPS, kernel_state_mask, parse_states

__all__ = ["STATE_GROUPS", "Filter", "IPNetwork", "KernelFilter", "kernel_filter",
           "kernel_state_mask", "parse_networks", "parse_ports", "parse_states", "parse_uids"]
