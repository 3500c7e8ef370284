"""A busy server's table: every connection to one listener has the same local end.

Live: 80,000 connections to one listener, and 8,000 to each of ten, in the
benchmarks' namespace. For each, in one run and interleaved: the first poll and
a steady poll (``benchmarks/busy_poll.py``, in a process of its own, compiled
and TCPFAST_PURE=1), ``tcpfast --once`` end to end (text and JSON), and ``ss -tanH``
on the same sockets. Targets: compiled faster than pure, and the first poll within
1.2x a steady one.

In memory: ``directions()`` and ``match`` on 10^6 rows that share one key,
within 2x of the same on 10^6 distinct keys (compiled; numpy beside it).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.loadgen import LoadGenerator
from tcpfast import CONNECTION_DTYPE, backend, directions
from tcpfast.diff import keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADS = {"1 listener": 1, "10 listeners": 10}
CONNECTIONS = 80_000
ROUNDS = 5


@pytest.fixture(scope="module", params=sorted(LOADS))
def busy_server(request):
    listeners = LOADS[request.param]
    try:
        with LoadGenerator(2 * CONNECTIONS + listeners, listeners=listeners) as load:
            yield request.param, load
    except (RuntimeError, OSError) as error:
        pytest.skip(f"cannot open {CONNECTIONS:,} loopback connections here: {error}")


def run(*command: str, pure: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "TCPFAST_PURE": "1" if pure else "0"}
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True,
                          stdout=subprocess.PIPE, text=True)


def once_lines(pure: bool, *flags: str) -> int:
    """``tcpfast --once``'s lines (with ``flags``), written to a pipe and counted (not kept)."""
    env = {**os.environ, "TCPFAST_PURE": "1" if pure else "0"}
    with subprocess.Popen([sys.executable, "-m", "tcpfast", "--once", *flags], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: process.stdout.read(1 << 20), b""))
    assert process.returncode == 0
    return lines


@pytest.mark.skipif(not backend.ACCELERATED, reason="compares the compiled modules with pure")
@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2 ss is not installed")
def test_busy_server_first_poll_and_once(benchmark, busy_server):
    name, load = busy_server
    benchmark.group = f"busy server: {CONNECTIONS:,} connections, {name}"
    samples = {key: [] for key in ("first compiled", "steady compiled", "first pure",
                                   "steady pure", "once compiled", "once pure", "once json compiled",
                                   "once json pure", "ss -tanH")}

    def one_round():
        for pure in (False, True):
            kind = "pure" if pure else "compiled"
            polls = json.loads(run("-m", "benchmarks.busy_poll", "--polls", "3", pure=pure).stdout)
            assert polls["compiled"] is not pure and polls["rows"] >= load.rows
            samples[f"first {kind}"].append(polls["first"])
            samples[f"steady {kind}"].append(statistics.median(polls["steady"]))
            for form, flags in (("once", ()), ("once json", ("--json",))):
                started = time.perf_counter()
                assert once_lines(pure, *flags) >= load.rows   # every socket of the load, at least
                samples[f"{form} {kind}"].append(time.perf_counter() - started)
        started = time.perf_counter()                   # the standard tool, on the same sockets
        subprocess.run(["ss", "-tanH"], stdout=subprocess.DEVNULL, check=True)
        samples["ss -tanH"].append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else ROUNDS, iterations=1)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    benchmark.extra_info.update({f"median_ms {key}": round(value * 1e3, 1)
                                 for key, value in medians.items()})
    ratios = {"first / steady (compiled)": medians["first compiled"] / medians["steady compiled"],
              "compiled / pure (first poll)": medians["first compiled"] / medians["first pure"],
              "compiled / pure (--once)": medians["once compiled"] / medians["once pure"]}
    benchmark.extra_info.update({f"ratio {key}": round(value, 3) for key, value in ratios.items()})
    print(f"\n{benchmark.group}: " + ", ".join(f"{key} {value * 1e3:.0f} ms"
                                                 for key, value in medians.items())
          + "; " + ", ".join(f"{key} {value:.2f}" for key, value in ratios.items()))
    if not benchmark.disabled:                  # timings of one sample prove nothing
        assert ratios["first / steady (compiled)"] <= 1.2
        assert ratios["compiled / pure (first poll)"] < 1
        assert ratios["compiled / pure (--once)"] < 1


def inbound_rows(count: int, shared: bool) -> np.ndarray:
    """A listener on 127.0.0.1:8443 and ``count`` established rows: all connected to it
    (one local end), or each on a local end of its own (other ports: not inbound)."""
    rows = np.zeros(count + 1, dtype=CONNECTION_DTYPE)
    index = np.arange(count + 1)
    rows["family"], rows["state"], rows["inode"] = 4, 1, index + 1
    rows["local_addr"][:, 0], rows["remote_addr"][:, 0] = 127, 127
    rows["local_addr"][:, 3] = 1
    rows["remote_addr"][:, 1] = index >> 16
    rows["remote_addr"][:, 2] = (index >> 8) & 0xFF
    rows["remote_port"] = 40000 + (index & 0xFF)
    rows["local_port"] = 8443
    if not shared:
        rows["local_addr"][:, 1] = index >> 16
        rows["local_addr"][:, 2] = (index >> 8) & 0xFF
        rows["local_port"] = 1000 + (index & 0xFF)
    rows[0]["state"], rows[0]["remote_addr"], rows[0]["remote_port"] = 10, 0, 0
    rows[0]["local_addr"], rows[0]["local_port"] = rows[1]["local_addr"] * 0, 8443
    rows[0]["local_addr"][[0, 3]] = 127, 1
    return rows


def one_key_rows(count: int) -> np.ndarray:
    """``count`` rows with one key (the same connection listed by many sockets' inodes)."""
    rows = inbound_rows(count, shared=True)[1:]
    rows["remote_port"], rows["remote_addr"] = 40000, rows["remote_addr"][0]
    return rows


@pytest.mark.parametrize("operation", ["directions", "match"])
def test_a_million_rows_that_share_a_key(benchmark, operation):
    count = 1_000_000
    rng = np.random.default_rng(9)
    benchmark.group = f"shared keys: {operation} on {count:,} rows"
    if operation == "directions":
        shared, distinct = inbound_rows(count, True), inbound_rows(count, False)
        contenders = {"shared": lambda: directions(shared), "distinct": lambda: directions(distinct)}
        assert (directions(shared)[1:] == 1).all() and (directions(distinct)[1:] != 1).all()
    else:
        shared, distinct = one_key_rows(count), inbound_rows(count, False)[-count:]
        shuffled_shared = shared[rng.permutation(count)]
        shuffled_distinct = distinct[rng.permutation(count)]
        contenders = {"shared": lambda: keys.match(shared, shuffled_shared),
                      "distinct": lambda: keys.match(distinct, shuffled_distinct),
                      "shared numpy": lambda: keys.match_numpy(shared, shuffled_shared),
                      "distinct numpy": lambda: keys.match_numpy(distinct, shuffled_distinct)}
        found = keys.match(shared, shuffled_shared)
        assert (shuffled_shared["inode"][found] == shared["inode"]).all()
    times = {name: [] for name in contenders}

    def one_round():
        for name, function in contenders.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=1 if benchmark.disabled else 5, iterations=1,
                       warmup_rounds=0 if benchmark.disabled else 1)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["shared"] / medians["distinct"]
    benchmark.extra_info.update({f"median_ms {name}": round(value * 1e3, 1)
                                 for name, value in medians.items()})
    benchmark.extra_info["ratio shared / distinct"] = round(ratio, 3)
    print(f"\n{benchmark.group}: " + ", ".join(f"{name} {value * 1e3:.1f} ms"
                                                 for name, value in medians.items())
          + f"; shared / distinct {ratio:.2f} ({'compiled' if backend.ACCELERATED else 'pure'})")
    if not benchmark.disabled:
        assert ratio <= 2.0
