"""The suite must prove it tested the compiled module, unless the fallback was asked for."""

import os
import subprocess
import sys

import tcpfast
from tcpfast import backend
from tcpfast.decode import parsing
from tcpfast.diff import keys


def test_compiled_parser_in_use_unless_pure_requested():
    if backend.PURE_REQUESTED:
        assert not tcpfast.ACCELERATED
        assert parsing.parse_into is tcpfast.decode.pureparse.parse_into
        assert keys._match is keys.match_numpy
    else:
        assert tcpfast.ACCELERATED, (
            "the compiled modules did not load: build them (pip install .) "
            "or set TCPFAST_PURE=1 to test the pure-Python fallback on purpose")
        from tcpfast.decode import _parse
        from tcpfast.diff import _keys
        assert _parse.__file__.endswith(".so") and _keys.__file__.endswith(".so")
        assert parsing.parse_into is _parse.parse_into
        assert keys._match is _keys.match and keys._duplicates is _keys.duplicates


BLOCK_EXTENSION = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tcpfast.decode._parse":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import tcpfast, tcpfast.decode.parsing
print(tcpfast.ACCELERATED, len(tcpfast.parse(open(sys.argv[1], "rb").read(), 4)))
"""


def test_missing_extension_falls_back_and_says_so_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TCPFAST_PURE"}
    table = os.path.join(os.path.dirname(__file__), "data", "proc", "net", "tcp")
    result = subprocess.run([sys.executable, "-c", BLOCK_EXTENSION, table],
                            capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == ["False", "7"]
    warnings = [line for line in result.stderr.splitlines() if "pure-Python" in line]
    assert len(warnings) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_pure_requested_is_silent_and_unaccelerated():
    env = dict(os.environ, TCPFAST_PURE="1")
    result = subprocess.run([sys.executable, "-c", "import tcpfast; print(tcpfast.ACCELERATED)"],
                            capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "False"
    assert result.stderr == ""
