"""Which implementation runs: the compiled modules, or the pure-Python fallback.

``TCPFAST_PURE=1`` (or true, yes, on) chooses the fallback on purpose. Without
it the compiled modules (``_parse``: the /proc parser, ``_netlink``: the
sock_diag decoder, ``_keys``: key set operations, ``_format``: output lines)
are used when they import; when they do not, the package still works and warns
once (``FALLBACK_REASON`` says why; the command line says it in one line).
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from .schema import CLOSE_INFO_DTYPE, CLOSE_INFO_OFFSETS, CONNECTION_DTYPE, FIELD_OFFSETS

_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


_SETTING = os.environ.get("TCPFAST_PURE", "")

PURE_REQUESTED: bool = _SETTING.strip().lower() in _YES

#: Why TCPFAST_PURE is not understood, or None.
PURE_SETTING_PROBLEM: str | None = None
if _SETTING.strip().lower() not in _YES + _NO:
    PURE_SETTING_PROBLEM = (f"TCPFAST_PURE={_SETTING!r} is none of {', '.join(_YES)} (pure "
                            f"Python) or {', '.join(_NO[1:])}: using the compiled modules")
    warnings.warn(f"tcpfast: {PURE_SETTING_PROBLEM}", RuntimeWarning, stacklevel=2)

#: Short name -> the compiled module: the /proc text parser, the sock_diag decoder,
#: the key set operations and the output line formatter.
COMPILED_MODULES = {"_parse": "tcpfast.decode._parse", "_netlink": "tcpfast.decode._netlink",
                    "_keys": "tcpfast.diff._keys", "_format": "tcpfast.outputs._format"}


#: The C structs a compiled module may have, each checked against its numpy dtype.
LAYOUTS = {"row_layout": ("row", CONNECTION_DTYPE.itemsize, FIELD_OFFSETS),
           "close_info_layout": ("close info", CLOSE_INFO_DTYPE.itemsize, CLOSE_INFO_OFFSETS)}


def _check_layout(name: str, module: ModuleType) -> None:
    for function, (what, itemsize, expected) in LAYOUTS.items():
        if not hasattr(module, function):      # close info: the sock_diag decoder's only
            continue
        size, offsets = getattr(module, function)()
        if size != itemsize or offsets != expected:
            raise ImportError(f"{COMPILED_MODULES[name]} was built for another {what} layout "
                              f"({size} bytes, {offsets}): rebuild it with 'pip install .'")


def _load() -> tuple[dict[str, ModuleType] | None, str | None]:
    """The compiled modules, or None and why not."""
    if PURE_REQUESTED:
        return None, None
    try:
        modules = {name: importlib.import_module(path) for name, path in COMPILED_MODULES.items()}
    except ImportError as error:
        reason = str(error)
        warnings.warn(f"tcpfast: compiled modules unavailable ({reason}); using the slower "
                      "pure-Python code (set TCPFAST_PURE=1 to choose it on purpose)",
                      RuntimeWarning, stacklevel=4)
        return None, reason
    for name, module in modules.items():      # each uses tcpfast/row.pxd's struct
        _check_layout(name, module)
    return modules, None


_modules, FALLBACK_REASON = _load()

#: Whether the compiled modules are in use.
ACCELERATED: bool = _modules is not None


def compiled(name: str) -> ModuleType | None:
    """The compiled module ``name`` when in use, else None."""
    return _modules[name] if _modules else None
