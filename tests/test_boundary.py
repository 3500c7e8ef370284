"""Every entry point that reads or writes rows, compiled or pure, refuses arrays that are
not rows (another dtype or row size, strided, 2-d, read-only) before touching a byte."""

import netlink_format as nl
import numpy as np
import pytest
from kernel_format import Conn, table

from tcpfast import CONNECTION_DTYPE
from tcpfast.decode import netlink_pure, pureparse
from tcpfast.diff import keys
from tcpfast.schema import CLOSE_INFO_DTYPE

try:
    from tcpfast.decode import _netlink, _parse
    from tcpfast.diff import _keys
    from tcpfast.outputs import _format
except ImportError:                      # a TCPFAST_PURE run without a build
    _parse = _netlink = _keys = _format = None

TEXT = table([Conn("127.0.0.1", 8080, "0.0.0.0", 0, state=0x0A, inode=11)], 4)
DUMP = nl.socket_message(Conn("127.0.0.1", 8080, "0.0.0.0", 0, state=0x0A, inode=11)) + nl.done()

#: 64-byte rows: the layout before netns and cookie joined the row.
OLD_LAYOUT = np.dtype([(name, CONNECTION_DTYPE.fields[name][0]) for name in CONNECTION_DTYPE.names
                       if name not in ("netns", "cookie")], align=True)


def writers():
    """(name, write(out)) for each row writer in use or importable."""
    found = [("pure parse_into", lambda out: pureparse.parse_into(TEXT, 4, out, 0, True)),
             ("pure decode_into", lambda out: netlink_pure.decode_into(DUMP, out, 0, nl.SEQ,
                                                                      nl.TCPDIAG_GETSOCK))]
    if _parse is not None:
        found += [("compiled parse_into", lambda out: _parse.parse_into(TEXT, 4, out, 0, True)),
                  ("compiled decode_into", lambda out: _netlink.decode_into(DUMP, out, 0, nl.SEQ,
                                                                           nl.TCPDIAG_GETSOCK))]
    return found


def readers():
    found = [("numpy match", lambda rows: keys.match_numpy(rows, rows)),
             ("numpy duplicates", keys.duplicates_numpy),
             ("numpy listened", lambda rows: keys.listened_numpy(rows, rows))]
    if _keys is not None:
        found += [("compiled match", lambda rows: _keys.match(rows, rows)),
                  ("compiled duplicates", _keys.duplicates),
                  ("compiled listened", lambda rows: _keys.listened(rows, rows))]
    return found


def bad_arrays():
    """(what, array, expected error) that no entry point may take as rows."""
    rows = np.zeros(8, dtype=CONNECTION_DTYPE)
    read_only = np.zeros(4, dtype=CONNECTION_DTYPE)
    read_only.flags.writeable = False
    return [
        ("float64", np.full(40, 7.0), TypeError),
        ("64-byte rows", np.full(8, 7, dtype="u1").repeat(64).view(OLD_LAYOUT), TypeError),
        ("bytes", np.full(600, 7, dtype=np.uint8), TypeError),
        ("strided", rows[::2], ValueError),
        ("2-d", np.zeros((2, 4), dtype=CONNECTION_DTYPE), ValueError),
        ("read-only", read_only, ValueError),
        ("a list", [0] * 8, TypeError),
    ]


@pytest.mark.parametrize("what, array, error", bad_arrays(), ids=lambda value: str(value)[:20])
@pytest.mark.parametrize("name, write", writers(), ids=[name for name, _ in writers()])
def test_writers_refuse_what_is_not_rows(name, write, what, array, error):
    before = np.array(array, copy=True) if isinstance(array, np.ndarray) else None
    with pytest.raises(error, match="out"):
        write(array)
    if before is not None:                # not a byte written
        assert before.tobytes() == np.asarray(array).tobytes()


@pytest.mark.parametrize("what, array, error",
                         [case for case in bad_arrays() if case[0] != "read-only"],
                         ids=lambda value: str(value)[:20])
@pytest.mark.parametrize("name, read", readers(), ids=[name for name, _ in readers()])
def test_readers_refuse_what_is_not_rows(name, read, what, array, error):
    with pytest.raises(error, match=r"needles|rows"):
        read(array)


@pytest.mark.parametrize("name, read", readers(), ids=[name for name, _ in readers()])
def test_readers_take_read_only_rows(name, read):
    rows = np.zeros(4, dtype=CONNECTION_DTYPE)
    rows["inode"] = [1, 2, 2, 3]
    rows.flags.writeable = False
    assert len(read(rows)) == 4


@pytest.mark.skipif(_format is None, reason="compiled modules not built (TCPFAST_PURE run)")
@pytest.mark.parametrize("what, array, error",
                         [case for case in bad_arrays() if case[0] != "read-only"],
                         ids=lambda value: str(value)[:20])
def test_the_formatter_refuses_what_is_not_rows(what, array, error):
    out = np.zeros(1 << 16, np.uint8)
    with pytest.raises(error, match="rows"):
        _format.format_into(out, array, "new", np.zeros(len(array), np.uint8))
    assert not out.any()


@pytest.mark.skipif(_format is None, reason="compiled modules not built (TCPFAST_PURE run)")
def test_the_formatter_takes_read_only_rows():
    rows = np.zeros(4, dtype=CONNECTION_DTYPE)
    rows["family"] = 4
    rows.flags.writeable = False
    out = np.zeros(1 << 16, np.uint8)
    done, size = _format.format_into(out, rows, "new", np.zeros(4, np.uint8))
    assert done == 4 and out[:size].tobytes().count(b"\n") == 4


def test_a_start_outside_out_is_refused():
    out = np.zeros(2, dtype=CONNECTION_DTYPE)
    for function in (pureparse.parse_into, *((_parse.parse_into,) if _parse else ())):
        with pytest.raises(ValueError, match="outside"):
            function(TEXT, 4, out, 3, True)
    for function in (netlink_pure.decode_into, *((_netlink.decode_into,) if _netlink else ())):
        with pytest.raises(ValueError, match="outside"):
            function(DUMP, out, 3, nl.SEQ, nl.TCPDIAG_GETSOCK)


def bad_infos():
    """(what, info, expected error) that no decoder may take as close info for 4 rows."""
    read_only = np.zeros(4, dtype=CLOSE_INFO_DTYPE)
    read_only.flags.writeable = False
    return [
        ("rows", np.zeros(4, dtype=CONNECTION_DTYPE), TypeError),
        ("bytes", np.zeros(4 * CLOSE_INFO_DTYPE.itemsize, dtype=np.uint8), TypeError),
        ("shorter than out", np.zeros(3, dtype=CLOSE_INFO_DTYPE), ValueError),
        ("strided", np.zeros(8, dtype=CLOSE_INFO_DTYPE)[::2], ValueError),
        ("2-d", np.zeros((4, 1), dtype=CLOSE_INFO_DTYPE), ValueError),
        ("read-only", read_only, ValueError),
        ("a list", [0] * 4, TypeError),
    ]


@pytest.mark.parametrize("what, info, error", bad_infos(), ids=lambda value: str(value)[:20])
@pytest.mark.parametrize("decode_into", [netlink_pure.decode_into,
                                         *((_netlink.decode_into,) if _netlink else ())],
                         ids=["pure", *(("compiled",) if _netlink else ())])
def test_decoders_refuse_what_is_not_close_info(decode_into, what, info, error):
    out = np.zeros(4, dtype=CONNECTION_DTYPE)
    before = np.array(info, copy=True) if isinstance(info, np.ndarray) else None
    with pytest.raises(error, match="info"):
        decode_into(DUMP, out, 0, nl.SEQ, nl.TCPDIAG_GETSOCK, info)
    assert not out.view(np.uint8).any()                    # not a row written either
    if before is not None:
        assert before.tobytes() == np.asarray(info).tobytes()
