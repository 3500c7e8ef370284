import importlib

import private_netns
import pytest

from tcpfast import backend
from tcpfast.decode import pureparse

# Before anything opens a socket or starts a thread: every test, and every
# process a test starts, sees only the sockets the tests open.
NETWORK_NAMESPACE = private_netns.enter()


def pytest_report_header() -> list[str]:
    return [f"tcpfast parser in use: {'compiled' if backend.ACCELERATED else 'pure Python'}"
            f" (TCPFAST_PURE {'set' if backend.PURE_REQUESTED else 'not set'})",
            f"network namespace: {NETWORK_NAMESPACE}"]


def _compiled_parse_into():
    """The compiled parser, or None; test_guard fails the run when it should be there."""
    try:
        return importlib.import_module("tcpfast.decode._parse").parse_into
    except ImportError:
        return None


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
