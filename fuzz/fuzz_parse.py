"""Coverage-guided fuzzing of the parsers with atheris (``pip install --group fuzz``).

Every input runs through the compiled and the pure-Python parser, with a
family, a ``final`` flag and an output size taken from its first bytes; any
crash, or any difference in rows, bytes used, malformed count or stopping
point, is a finding. The pure parser's Python code is instrumented, so its
branches guide the fuzzer; the compiled one is checked against it.

    python fuzz/fuzz_parse.py -atheris_runs=1000000 fuzz/corpus
"""

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import _parse, pureparse


def run(parse_into, data: bytes, family: int, final: bool, room: int):
    out = np.zeros(room, dtype=CONNECTION_DTYPE)
    end, used, malformed = parse_into(data, family, out, 0, final)
    return out[:end].tobytes(), end, used, malformed


def test_one_input(blob: bytes) -> None:
    if len(blob) < 2:
        return
    family = 4 if blob[0] & 1 else 6
    final = bool(blob[0] & 2)
    room = blob[1] % 64
    data = blob[2:]
    compiled = run(_parse.parse_into, data, family, final, room)
    pure = run(pureparse.parse_into, data, family, final, room)
    if compiled != pure:
        raise AssertionError(f"parsers differ on {data!r} (family {family}, final {final}, "
                             f"room {room}): compiled {compiled[1:]}, pure {pure[1:]}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
