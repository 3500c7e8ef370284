import importlib
from types import ModuleType

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


def _compiled_modules() -> tuple[dict[str, ModuleType], str | None]:
    """The compiled modules that import (under TCPFAST_PURE too: the tests that compare
    them with the fallback use them), and why one does not, or None."""
    modules, missing = {}, None
    for name, path in backend.COMPILED_MODULES.items():
        try:
            modules[name] = importlib.import_module(path)
        except ImportError as error:
            missing = missing or f"{path}: {error}"
    return modules, missing


COMPILED, COMPILED_MISSING = _compiled_modules()
COMPILED_PARSE_INTO = COMPILED["_parse"].parse_into if "_parse" in COMPILED else None
PARSERS = {"pure": pureparse.parse_into}
if COMPILED_PARSE_INTO is not None:
    PARSERS["compiled"] = COMPILED_PARSE_INTO


@pytest.fixture(params=sorted(PARSERS))
def parse_into(request):
    """Each parser implementation, with the same signature."""
    return PARSERS[request.param]


needs_compiled = pytest.mark.skipif(
    COMPILED_MISSING is not None,
    reason=f"compiled modules not built ({COMPILED_MISSING}): only the fallback is tested")

#: What the one test a run without the compiled modules (and without TCPFAST_PURE) says.
COMPILED_MODULES_MISSING = (
    "the compiled modules did not load ({reason}), and TCPFAST_PURE is not set: none of "
    "the {count} selected tests ran, because they would not prove which code they tested. "
    "Build the modules (a C compiler, then pip install . again), or test the pure-Python "
    "fallback on purpose: TCPFAST_PURE=1 python -m pytest")


class CompiledModulesMissing(pytest.Item):
    """The one failing test of a run whose compiled modules are missing by accident."""

    def __init__(self, *, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count = count

    def runtest(self) -> None:
        raise pytest.fail.Exception(COMPILED_MODULES_MISSING.format(
            reason=backend.FALLBACK_REASON, count=self.count), pytrace=False)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, self.name


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Without the compiled modules and without TCPFAST_PURE, one test fails saying so
    (and how to test the fallback), instead of every test that checks exact stderr
    tripping over the fallback's warning."""
    if backend.FALLBACK_REASON is None:
        return
    config.hook.pytest_deselected(items=list(items))
    items[:] = [CompiledModulesMissing.from_parent(
        session, name="compiled modules missing", nodeid="compiled modules missing",
        count=len(items))]
