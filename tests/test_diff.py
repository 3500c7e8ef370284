"""new_connections / closed_connections / unique against a plain-Python model of "same connection"."""

import numpy as np
import pytest
from conftest import needs_compiled
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpfast import CONNECTION_DTYPE, closed_connections, new_connections
from tcpfast.diff import keys
from tcpfast.schema import compact_rows

try:
    from tcpfast.diff import _keys
except ImportError:                      # not built: needs_compiled skips, saying so
    _keys = None

IMPLEMENTATIONS = {"numpy": (keys.match_numpy, keys.duplicates_numpy)}
if _keys is not None:
    IMPLEMENTATIONS["compiled"] = (_keys.match, _keys.duplicates)


def rows_of(specs) -> np.ndarray:
    """(family, local_byte, local_port, remote_byte, remote_port, state, inode[, netns]) -> rows."""
    rows = np.zeros(len(specs), dtype=CONNECTION_DTYPE)
    for row, (family, local, lport, remote, rport, state, inode, *netns) in zip(rows, specs):
        row["family"], row["local_port"], row["remote_port"] = family, lport, rport
        row["netns"] = netns[0] if netns else 0
        row["local_addr"][0 if family == 4 else 15] = local
        row["remote_addr"][0 if family == 4 else 15] = remote
        row["state"], row["inode"] = state, inode
    return rows


def key(row) -> bytes:
    return bytes(row["local_addr"]) + bytes(row["remote_addr"]) + bytes(
        [row["family"]]) + int(row["local_port"]).to_bytes(2, "big") + int(
        row["remote_port"]).to_bytes(2, "big") + int(row["netns"]).to_bytes(8, "big")


def same(a, b) -> bool:
    return key(a) == key(b) and (a["inode"] == b["inode"] or 0 in (a["inode"], b["inode"]))


def assert_match_is_right(index, needles, haystack):
    """Every index names a haystack row that is the same connection, one with the very
    same inode where there is one; -1 only where none is."""
    assert index.dtype == np.int64 and len(index) == len(needles)
    for needle, at in zip(needles, index.tolist()):
        if at >= 0:
            assert same(needle, haystack[at])
            if any(key(h) == key(needle) and h["inode"] == needle["inode"] for h in haystack):
                assert haystack[at]["inode"] == needle["inode"]
        else:
            assert not any(same(needle, h) for h in haystack)


def model_new(previous, current):
    return [r.tobytes() for r in current if not any(same(r, p) for p in previous)]


def model_unique(rows):
    kept = []
    for i, row in enumerate(rows):
        repeated = any(key(o) == key(row) and o["inode"] == row["inode"] for o in rows[:i])
        superseded = row["inode"] == 0 and any(
            key(o) == key(row) and o["inode"] != 0 for o in rows)
        if not (repeated or superseded):
            kept.append(row.tobytes())
    return kept


# A small pool of values so that keys and inodes collide often.
spec = st.tuples(st.sampled_from([4, 6]), st.integers(1, 2), st.integers(1, 3),
                 st.integers(1, 2), st.sampled_from([80, 443]), st.sampled_from([1, 6, 10]),
                 st.sampled_from([0, 0, 7, 8, 9]), st.sampled_from([0, 0, 0, 4026531840]))
snapshots = st.lists(spec, max_size=25).map(rows_of)


@settings(max_examples=300, deadline=None)
@given(snapshots, snapshots)
def test_new_and_closed_match_the_model(previous, current):
    assert [r.tobytes() for r in new_connections(previous, current)] == model_new(previous, current)
    assert [r.tobytes() for r in closed_connections(previous, current)] == model_new(current, previous)


@settings(max_examples=300, deadline=None)
@given(snapshots)
def test_unique_matches_the_model(rows):
    kept, dropped = keys.unique(rows)
    assert [r.tobytes() for r in kept] == model_unique(rows)
    assert dropped == len(rows) - len(kept)
    own = rows.copy()                       # a read's own array, compacted where it lies
    in_place, dropped_there = keys.unique(own, in_place=True)
    assert in_place.tobytes() == kept.tobytes() and dropped_there == dropped
    assert not dropped or np.shares_memory(in_place, own)


def test_compacting_rows_in_place_across_chunks_is_the_selection():
    """compact_rows moves a chunk at a time: masks that keep runs, nothing, everything,
    and every other row, over several chunks, give what numpy's selection gives."""
    rng = np.random.default_rng(7)
    rows = np.zeros(200_003, dtype=CONNECTION_DTYPE)
    rows.view(np.uint64)[:] = rng.integers(0, 2**63, rows.nbytes // 8, dtype=np.uint64)
    masks = [rng.random(len(rows)) < 0.97, np.zeros(len(rows), bool), np.ones(len(rows), bool),
             np.arange(len(rows)) % 2 == 0, np.arange(len(rows)) >= 150_000]
    for keep in masks:
        own = rows.copy()
        compacted = compact_rows(own, keep)
        assert compacted.tobytes() == rows[keep].tobytes()
        assert np.shares_memory(compacted, own) or not len(compacted)
    with pytest.raises(ValueError, match="read-only"):
        frozen = rows.copy()
        frozen.flags.writeable = False
        compact_rows(frozen, masks[0])
    with pytest.raises(ValueError, match="mask of 200003 rows"):
        compact_rows(rows.copy(), masks[0][:10])


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@settings(max_examples=300, deadline=None)
@given(previous=snapshots, current=snapshots)
def test_each_implementation_matches_the_model(name, previous, current):
    match, duplicates = IMPLEMENTATIONS[name]
    index = match(current, previous)
    assert_match_is_right(index, current, previous)
    assert [r.tobytes() for r in current[index < 0]] == model_new(previous, current)
    drop = duplicates(current)
    assert [r.tobytes() for r in current[~drop]] == model_unique(current)


# Many rows with one key, or a few: every connection to one listener has the
# same local end (directions() matches those against the listeners).
crowded = st.lists(st.tuples(st.just(4), st.just(1), st.sampled_from([80, 80, 80, 81]),
                             st.just(1), st.just(443), st.sampled_from([1, 6, 10]),
                             st.sampled_from([0, 7, 7, 8, 9])), max_size=300).map(rows_of)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@settings(max_examples=60, deadline=None)
@given(previous=crowded, current=crowded)
def test_identical_keys_match_the_model(name, previous, current):
    match, duplicates = IMPLEMENTATIONS[name]
    for needles, haystack in ((current, previous), (previous, current)):
        assert_match_is_right(match(needles, haystack), needles, haystack)
    assert [r.tobytes() for r in current[~duplicates(current)]] == model_unique(current)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_a_crowd_on_one_key_is_matched_in_full(name):
    """20,000 rows of one key, several inodes, on both sides: every answer checked."""
    match, duplicates = IMPLEMENTATIONS[name]
    rng = np.random.default_rng(3)
    rows = rows_of([(4, 1, 80, 0, 0, 0x0A, 0)] * 20_000)
    rows["inode"] = rng.choice([0, 5, 6, 7], len(rows))
    needles = rows[rng.permutation(len(rows))]
    needles["inode"][:10] = 99                                  # a socket not in the haystack
    haystack = rows[:15_000]
    index = match(needles, haystack)
    assert (index >= 0).all()
    assert (haystack["inode"][index[10:]] == needles["inode"][10:]).all()   # the very inode
    assert (haystack["inode"][index[:10]] == 0).all()           # inode 99: compatible with 0
    assert duplicates(rows).sum() == len(rows) - 3              # the first of 5, 6 and 7 stay


@settings(max_examples=100, deadline=None)
@given(snapshots, snapshots)
def test_hash_collisions_never_merge_connections(previous, current):
    """Every key hashes to the same value: only the exact check separates them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys, "_hash", lambda columns: np.zeros(len(columns), np.uint64))
        index = keys.match_numpy(current, previous)
        drop = keys.duplicates_numpy(current)
    assert_match_is_right(index, current, previous)
    assert [r.tobytes() for r in current[index < 0]] == model_new(previous, current)
    assert [r.tobytes() for r in current[~drop]] == model_unique(current)


def test_the_semantics_by_example():
    established = (4, 1, 50000, 2, 443, 0x01, 7)
    previous = rows_of([established, (4, 1, 50001, 2, 443, 0x01, 8)])
    current = rows_of([
        (4, 1, 50000, 2, 443, 0x06, 0),        # same connection, now TIME_WAIT: not new
        (4, 1, 50001, 2, 443, 0x01, 9),        # closed and reopened (new inode): new
        (6, 1, 50000, 2, 443, 0x01, 7),        # same numbers, other family: new
    ])
    assert new_connections(previous, current)["inode"].tolist() == [9, 7]
    assert closed_connections(previous, current)["inode"].tolist() == [8]
    assert len(new_connections(current, current)) == 0


def test_the_same_numbers_in_two_namespaces_are_two_connections():
    host, pod = (4, 1, 50000, 2, 443, 0x01, 7, 0), (4, 1, 50000, 2, 443, 0x01, 7, 4026532000)
    assert new_connections(rows_of([host]), rows_of([host, pod]))["netns"].tolist() == [4026532000]
    assert keys.unique(rows_of([host, pod, host]))[1] == 1


def test_listed_twice_is_kept_once_but_reuseport_listeners_stay():
    listener_a, listener_b = (4, 1, 80, 0, 0, 0x0A, 7), (4, 1, 80, 0, 0, 0x0A, 8)
    rows = rows_of([listener_a, listener_b, listener_a, (4, 1, 80, 0, 0, 0x0A, 0)])
    kept, dropped = keys.unique(rows)
    assert kept["inode"].tolist() == [7, 8] and dropped == 2


def test_strided_input_and_wrong_dtype():
    rows = rows_of([(4, 1, p, 2, 443, 1, p) for p in range(1, 9)])
    assert new_connections(rows[::2], rows[1::2])["inode"].tolist() == [2, 4, 6, 8]
    with pytest.raises(TypeError, match="CONNECTION_DTYPE"):
        new_connections(np.zeros(3), rows)


@needs_compiled
@pytest.mark.parametrize("order", ["kept", "shuffled"])
def test_compiled_and_numpy_agree_at_scale(order):
    """Thousands of rows with churn, in kernel order (kept) or not: same answers."""
    rng = np.random.default_rng(7)
    previous = np.zeros(6000, dtype=CONNECTION_DTYPE)
    previous["family"] = 4
    previous["local_addr"][:, :4] = rng.integers(0, 4, (6000, 4))
    previous["local_port"] = rng.integers(0, 50, 6000)
    previous["remote_port"] = rng.integers(0, 50, 6000)
    previous["inode"] = rng.choice([0, 1, 2, 3], 6000)
    current = np.concatenate([previous[rng.random(6000) > 0.05], previous[:300]])
    current["inode"][rng.random(len(current)) < 0.05] = 4          # reopened
    if order == "shuffled":
        current = current[rng.permutation(len(current))]
    for a, b in ((current, previous), (previous, current), (current, np.ascontiguousarray(current[::-1]))):
        compiled = _keys.match(a, b)
        numpy_index = keys.match_numpy(a, b)
        np.testing.assert_array_equal(compiled >= 0, numpy_index >= 0)
        found = compiled >= 0                   # the same key and inode as numpy's choice
        np.testing.assert_array_equal(keys.key_words(b[compiled[found]]),
                                      keys.key_words(b[numpy_index[found]]))
        np.testing.assert_array_equal(b["inode"][compiled[found]], b["inode"][numpy_index[found]])
        np.testing.assert_array_equal(_keys.duplicates(a), keys.duplicates_numpy(a))


LISTENED = {"numpy": keys.listened_numpy}
if _keys is not None:
    LISTENED["compiled"] = _keys.listened


def model_listened(rows, listeners) -> list[bool]:
    """A listener accepted a row: same family, local port and namespace, and the row's
    local address is the listener's, or the listener's is its family's wildcard."""
    def accepts(listener, row) -> bool:
        return (listener["family"] == row["family"] and listener["local_port"] == row["local_port"]
                and listener["netns"] == row["netns"]
                and bytes(listener["local_addr"]) in (bytes(row["local_addr"]), bytes(16)))
    return [any(accepts(listener, row) for listener in listeners) for row in rows]


# Local byte 0: the wildcard address; remote ends, states and inodes play no part.
ends = st.tuples(st.sampled_from([4, 6]), st.integers(0, 2), st.integers(1, 3),
                 st.integers(0, 2), st.sampled_from([0, 443]), st.sampled_from([1, 10]),
                 st.sampled_from([0, 7, 8]), st.sampled_from([0, 4026531840]))


@pytest.mark.parametrize("name", sorted(LISTENED))
@settings(max_examples=300, deadline=None)
@given(rows=st.lists(ends, max_size=25).map(rows_of), listeners=st.lists(ends, max_size=8).map(rows_of))
def test_listened_matches_the_model(name, rows, listeners):
    heard = LISTENED[name](rows, listeners)
    assert heard.dtype == bool and heard.tolist() == model_listened(rows, listeners)


@needs_compiled
def test_listened_compiled_and_numpy_agree_at_scale():
    """Many rows, many listeners sharing local ends (reuseport): the same mask."""
    rng = np.random.default_rng(11)
    rows = np.zeros(20000, dtype=CONNECTION_DTYPE)
    rows["family"] = rng.choice([4, 6], len(rows))
    rows["local_addr"][:, :2] = rng.integers(0, 3, (len(rows), 2))
    rows["local_port"] = rng.integers(0, 400, len(rows))
    rows["remote_port"] = rng.integers(0, 3, len(rows))
    rows["inode"] = rng.integers(0, 5, len(rows))
    listeners = rows[rng.random(len(rows)) < 0.02]
    np.testing.assert_array_equal(_keys.listened(rows, listeners), keys.listened_numpy(rows, listeners))
