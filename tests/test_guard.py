"""The suite must prove it tested the compiled module, unless the fallback was asked for."""

import os
import re
import subprocess
import sys

import pytest
from conftest import COMPILED_MISSING

import tcpfast
from tcpfast import backend
from tcpfast.decode import parsing
from tcpfast.diff import keys
from tcpfast.sources import sockdiag


def test_compiled_parser_in_use_unless_pure_requested():
    if backend.PURE_REQUESTED:
        assert not tcpfast.ACCELERATED
        assert parsing.parse_into is tcpfast.decode.pureparse.parse_into
        assert keys._match is keys.match_numpy
        assert sockdiag.decode_into is tcpfast.decode.netlink_pure.decode_into
    else:
        assert tcpfast.ACCELERATED, (
            "the compiled modules did not load: build them (pip install .) "
            "or set TCPFAST_PURE=1 to test the pure-Python fallback on purpose")
        from tcpfast.decode import _netlink, _parse
        from tcpfast.diff import _keys
        assert all(module.__file__.endswith(".so") for module in (_parse, _netlink, _keys))
        assert parsing.parse_into is _parse.parse_into
        assert sockdiag.decode_into is _netlink.decode_into
        assert keys._match is _keys.match and keys._duplicates is _keys.duplicates


#: Python code that makes the compiled modules fail to import, as on a host without a compiler.
BLOCK_COMPILED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in ("tcpfast.decode._parse", "tcpfast.diff._keys"):
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
"""
LIBRARY_USE = """
import tcpfast
print(tcpfast.ACCELERATED, len(tcpfast.parse(open(sys.argv[1], "rb").read(), 4)))
"""
CLI_USE = """
from tcpfast.__main__ import main
sys.exit(main())
"""
TESTS = os.path.dirname(__file__)
SAMPLE_TABLE = os.path.join(TESTS, "data", "proc", "net", "tcp")


def without_pure(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "TCPFAST_PURE"}, **extra}


def run_blocked(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_COMPILED + code, *args],
                          capture_output=True, text=True, env=without_pure(**env), timeout=120)


def test_missing_extension_falls_back_and_the_library_warns_once():
    result = run_blocked(LIBRARY_USE, SAMPLE_TABLE)
    assert result.returncode == 0 and result.stdout.split() == ["False", "7"]
    warnings = [line for line in result.stderr.splitlines() if "pure-Python" in line]
    assert len(warnings) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_extension_the_command_says_so_in_one_line():
    sample_root = os.path.dirname(os.path.dirname(SAMPLE_TABLE))
    result = run_blocked(CLI_USE, "--once", "--proc-root", sample_root)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 10
    assert result.stderr.startswith("tcpfast: compiled modules unavailable (blocked for the test)")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    help_text = run_blocked(CLI_USE, "--help")               # not on --help
    assert (help_text.returncode, help_text.stderr) == (0, "")
    version = run_blocked(CLI_USE, "--version")
    assert "pure Python: blocked for the test" in version.stdout and version.stderr == ""


def host_without_compiler(tmp_path, **env: str) -> dict:
    """An environment in which every Python process (pytest, and each tcpfast it
    starts) finds no compiled module, as on a host without a C compiler."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_COMPILED)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    return without_pure(PYTHONPATH=path, TCPFAST_TEST_NETNS="host", **env)


def run_suite(environment: dict, *args: str) -> subprocess.CompletedProcess:
    """pytest on ``args``, without the tests that run pytest themselves (else a suite
    that does not stop at the guard would run them again, and again)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-ra",
                           "--rootdir", TESTS, "-k", "not without_the_compiled_modules", *args],
                          capture_output=True, text=True, env=environment, timeout=600,
                          cwd=os.path.dirname(TESTS))


def summary(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.mark.parametrize("selection", [[TESTS], [os.path.join(TESTS, "test_cli.py")]],
                         ids=["suite", "one file"])
def test_without_the_compiled_modules_the_suite_fails_once_and_says_why(tmp_path, selection):
    """No compiler, no TCPFAST_PURE: one failure that says the modules are missing and
    how to test the fallback; no test runs (each would trip over the fallback's warning
    on stderr, and a pass would not say which code it tested)."""
    result = run_suite(host_without_compiler(tmp_path), *selection)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"\b1 failed, \d+ deselected\b", summary(result.stdout)), result.stdout
    assert " passed" not in summary(result.stdout)
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    # pytest cuts the summary line to the terminal's width, which differs between runs
    assert len(failures) == 1, result.stdout
    assert failures[0].startswith("FAILED tests/compiled modules missing - Failed: the "
                                  "compiled modules did not"), result.stdout
    assert ("the compiled modules did not load (blocked for the test), and TCPFAST_PURE is "
            "not set") in result.stdout
    assert "TCPFAST_PURE=1 python -m pytest" in result.stdout
    assert "ModuleNotFoundError" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_without_the_compiled_modules_the_fallbacks_suite_passes(tmp_path):
    """TCPFAST_PURE=1 on that host: the tests that run tcpfast without TCPFAST_PURE
    allow its fallback warning, and the skips say why without claiming TCPFAST_PURE."""
    result = run_suite(host_without_compiler(tmp_path, TCPFAST_PURE="1"),
                       os.path.join(TESTS, "test_guard.py"), os.path.join(TESTS, "test_diff.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("compiled modules not built (tcpfast.decode._parse: blocked for "
                         "the test)" in line for line in skips), result.stdout


def stderr_besides_fallback(stderr: str) -> list[str]:
    """stderr's lines but the fallback's warning, which tcpfast adds (rightly) when it
    runs without TCPFAST_PURE where the compiled modules are missing."""
    return [line for line in stderr.splitlines()
            if COMPILED_MISSING is None or "compiled modules unavailable" not in line]


@pytest.mark.parametrize("setting,pure", [("1", True), ("yes", True), ("true", True),
                                          ("0", False), ("no", False), ("false", False),
                                          ("off", False), ("", False)])
def test_the_pure_setting_means_what_it_says(setting, pure):
    result = subprocess.run([sys.executable, "-c", "from tcpfast import backend; "
                             "print(backend.PURE_REQUESTED)"], capture_output=True, text=True,
                            env=without_pure(TCPFAST_PURE=setting), check=True)
    assert result.stdout.strip() == str(pure)
    assert (result.stderr if pure else stderr_besides_fallback(result.stderr)) in ("", [])


def test_a_pure_setting_not_understood_is_said_and_ignored():
    sample_root = os.path.dirname(os.path.dirname(SAMPLE_TABLE))
    result = subprocess.run([sys.executable, "-m", "tcpfast", "--once", "--proc-root",
                             sample_root], capture_output=True, text=True,
                            env=without_pure(TCPFAST_PURE="maybe"), timeout=60)
    assert result.returncode == 0
    lines = stderr_besides_fallback(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("tcpfast: TCPFAST_PURE='maybe' is none of")


def test_pure_requested_is_silent_and_unaccelerated():
    env = dict(os.environ, TCPFAST_PURE="1")
    result = subprocess.run([sys.executable, "-c", "import tcpfast; print(tcpfast.ACCELERATED)"],
                            capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "False"
    assert result.stderr == ""


def test_a_compiled_decoder_built_for_another_close_info_layout_is_refused():
    """Each C struct a module has is checked against its dtype at import, as the row is."""
    import types

    from tcpfast.schema import CLOSE_INFO_DTYPE, CLOSE_INFO_OFFSETS, CONNECTION_DTYPE, FIELD_OFFSETS
    module = types.SimpleNamespace(
        row_layout=lambda: (CONNECTION_DTYPE.itemsize, FIELD_OFFSETS),
        close_info_layout=lambda: (CLOSE_INFO_DTYPE.itemsize - 8,
                                   {**CLOSE_INFO_OFFSETS, "data_bytes_sent": 40}))
    with pytest.raises(ImportError, match="another close info layout"):
        backend._check_layout("_netlink", module)
    module.close_info_layout = lambda: (CLOSE_INFO_DTYPE.itemsize, CLOSE_INFO_OFFSETS)
    backend._check_layout("_netlink", module)
    if backend.ACCELERATED:
        from tcpfast.decode import _netlink
        assert _netlink.close_info_layout() == (CLOSE_INFO_DTYPE.itemsize, CLOSE_INFO_OFFSETS)
