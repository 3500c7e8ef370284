"""Parse: compiled vs the pure-Python fallback vs a straightforward split-and-int parse.

ns per row = median / rows; the groups put the three side by side per size.
"""

import pytest

from benchmarks import naive
from benchmarks.tables import table
from tcpfast.decode import parsing, pureparse

try:
    from tcpfast.decode import _parse
except ImportError:
    _parse = None

SIZES = [1_000, 10_000, 100_000, 1_000_000]


def parse_compiled(data: bytes, family: int):
    return parsing.parse_counted(data, family, _parse.parse_into)[0]


def parse_pure(data: bytes, family: int):
    return parsing.parse_counted(data, family, pureparse.parse_into)[0]


PARSERS = {"compiled": parse_compiled, "pure": parse_pure, "naive": naive.parse}


@pytest.mark.parametrize("parser", list(PARSERS))
@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize("family", [4, 6])
def test_parse(benchmark, run, parser, rows, family):
    if parser == "compiled" and _parse is None:
        pytest.skip("compiled parser not built")
    data = table(rows, family)
    benchmark.group = f"parse IPv{family} {rows:>9,} rows"
    benchmark.extra_info.update(family=family, parser=parser, megabytes=len(data) / 1e6)
    result = run(PARSERS[parser], rows, data, family)
    assert len(result) == rows
