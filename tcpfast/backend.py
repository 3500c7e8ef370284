"""Which implementation runs: the compiled modules, or the pure-Python fallback.

``TCPFAST_PURE=1`` chooses the fallback on purpose. Without it the compiled
modules (``_parse``: the parser, ``_keys``: key set operations) are used when
they import; when they do not, the package still works and says so once on
stderr.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from .schema import CONNECTION_DTYPE

PURE_REQUESTED: bool = os.environ.get("TCPFAST_PURE", "") not in ("", "0")

#: Short name -> the compiled module: the /proc text parser and the key set operations.
COMPILED_MODULES = {"_parse": "tcpfast.decode._parse", "_keys": "tcpfast.diff._keys"}


def _check_layout(parse_module: ModuleType) -> None:
    size, offsets = parse_module.row_layout()
    expected = {name: CONNECTION_DTYPE.fields[name][1] for name in CONNECTION_DTYPE.names}
    if size != CONNECTION_DTYPE.itemsize or offsets != expected:
        raise ImportError(f"tcpfast.decode._parse was built for another row layout ({size} bytes, "
                          f"{offsets}): rebuild it with 'pip install .'")


def _load() -> dict[str, ModuleType] | None:
    if PURE_REQUESTED:
        return None
    try:
        modules = {name: importlib.import_module(path) for name, path in COMPILED_MODULES.items()}
    except ImportError as error:
        warnings.warn(
            f"tcpfast: compiled modules unavailable ({error}); using the slower "
            "pure-Python code (set TCPFAST_PURE=1 to choose it on purpose)",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    _check_layout(modules["_parse"])
    return modules


_modules = _load()

#: Whether the compiled modules are in use.
ACCELERATED: bool = _modules is not None


def compiled(name: str) -> ModuleType | None:
    """The compiled module ``name`` when in use, else None."""
    return _modules[name] if _modules else None
