import importlib

import pytest

from tcpfast import backend
from tcpfast.decode import pureparse


def pytest_report_header() -> str:
    return (f"tcpfast parser in use: {'compiled' if backend.ACCELERATED else 'pure Python'}"
            f" (TCPFAST_PURE {'set' if backend.PURE_REQUESTED else 'not set'})")


def _compiled_parse_into():
    try:
        return importlib.import_module("tcpfast.decode._parse").parse_into
    except ImportError:
        if backend.PURE_REQUESTED:     # a pure run may lack the build; test_guard covers the rest
            return None
        raise


COMPILED_PARSE_INTO = _compiled_parse_into()
PARSERS = {"pure": pureparse.parse_into}
if COMPILED_PARSE_INTO is not None:
    PARSERS["compiled"] = COMPILED_PARSE_INTO


@pytest.fixture(params=sorted(PARSERS))
def parse_into(request):
    """Each parser implementation, with the same signature."""
    return PARSERS[request.param]


needs_compiled = pytest.mark.skipif(COMPILED_PARSE_INTO is None,
                                    reason="compiled parser not built (TCPFAST_PURE run)")
