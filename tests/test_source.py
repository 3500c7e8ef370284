"""Reading tables from disk: chunked streaming, duplicates folded, both families."""

import numpy as np
import pytest
from kernel_format import Conn, table

import tcpfast
from tcpfast.sources import proc as source


def write_tables(root, v4: bytes, v6: bytes | None = None):
    (root / "net").mkdir(parents=True, exist_ok=True)
    (root / "net" / "tcp").write_bytes(v4)
    if v6 is not None:
        (root / "net" / "tcp6").write_bytes(v6)
    return str(root)


CONNS = [Conn("127.0.0.%d" % (1 + i % 200), 1000 + i, "127.0.0.1", 443, inode=i + 1)
         for i in range(3000)]


@pytest.mark.parametrize("chunk", [64, 150, 151, 4096, source.CHUNK_BYTES])
def test_streamed_reading_equals_parsing_the_whole_text(tmp_path, monkeypatch, chunk):
    data = table(CONNS, 4) + b"   9: a malformed row\n" + table(CONNS[:5], 4, trailing_newline=False)
    path = tmp_path / "tcp"
    path.write_bytes(data)
    monkeypatch.setattr(source, "CHUNK_BYTES", chunk)    # lines cut at every chunk edge
    rows, malformed = source.read_table(str(path), 4)
    whole, whole_malformed = tcpfast.decode.parsing.parse_counted(data, 4)
    assert rows.tobytes() == whole.tobytes() and len(rows) == 3005
    assert malformed == whole_malformed == 1


def test_snapshot_folds_a_row_listed_twice_and_reads_both_families(tmp_path):
    v4 = table(CONNS[:10] + CONNS[5:7], 4)               # rows 5 and 6 listed twice
    v6 = table([Conn("::1", 22, "::1", 50000, inode=99)], 6)
    result = tcpfast.read_snapshot(write_tables(tmp_path, v4, v6))
    assert (len(result.rows), result.duplicates, result.malformed) == (11, 2, 0)
    assert result.rows["inode"].tolist() == [*range(1, 11), 99]
    assert tcpfast.snapshot(str(tmp_path)).tobytes() == result.rows.tobytes()


def test_snapshot_without_tcp6_and_errors_without_tcp(tmp_path):
    assert len(tcpfast.snapshot(write_tables(tmp_path / "a", table(CONNS[:3], 4)))) == 3
    with pytest.raises(FileNotFoundError):
        tcpfast.snapshot(str(tmp_path / "missing"))
    (tmp_path / "dir" / "net" / "tcp").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        tcpfast.snapshot(str(tmp_path / "dir"))


def test_snapshot_warns_about_malformed_rows(tmp_path):
    root = write_tables(tmp_path, table(CONNS[:3], 4) + b"junk\n")
    with pytest.warns(tcpfast.MalformedRowsWarning, match="skipped 1"):
        rows = tcpfast.snapshot(root)
    assert len(rows) == 3 and rows.dtype == tcpfast.CONNECTION_DTYPE
    assert isinstance(rows, np.ndarray)


@pytest.mark.parametrize("block_rows", [1, 2, 7, 4096])
def test_row_collector_blocks_of_any_size(block_rows):
    data = table(CONNS[:500], 4) + b"\nbad\n" + table(CONNS[500:600], 4)
    for parse_into in (tcpfast.decode.pureparse.parse_into, tcpfast.decode.parsing.parse_into):
        collector = tcpfast.decode.parsing.RowCollector(parse_into, block_rows=block_rows)
        used = 0
        for at in range(0, len(data), 997):                 # chunks cut mid-line
            used += collector.feed(data[used:at + 997], 4, final=at + 997 >= len(data))
        rows = collector.rows()
        assert used == len(data) and collector.malformed == 1
        assert rows["inode"].tolist() == [c.inode for c in CONNS[:600]]
