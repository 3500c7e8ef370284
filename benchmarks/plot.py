"""Plot and tabulate a pytest-benchmark run: ns per row against rows.

    python -m pytest benchmarks --benchmark-json=bench.json
    TCPFAST_MILLION=1 python -m pytest benchmarks/test_million.py --benchmark-json=million.json
    python -m benchmarks.plot bench.json million.json --png benchmarks/results.png

One line per parser (IPv4 tables), the live poll's pieces for reference (the
kernel's own read of /proc/net/tcp is the floor), the interleaved medians of
test_million.py at their number of sockets (10^6 in an opt-in run), and a
Markdown table of every median on stdout for the README.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def load(*paths: str) -> list[dict]:
    benchmarks = []
    for path in paths:
        with open(path) as results:
            benchmarks += json.load(results)["benchmarks"]
    return benchmarks


def sockets_of(bench: dict) -> int | None:
    """The number of a test_million.py group ("1,000,000 live sockets"), or None."""
    group = bench["group"] or ""
    if not group.endswith(" live sockets"):
        return None
    return int(group.removesuffix(" live sockets").replace(",", ""))


def label(bench: dict) -> str:
    name = bench["name"].split("[")[0].removeprefix("test_")
    info = bench["extra_info"]
    if name == "parse":
        return f"parse, {info['parser']}"
    if "order" in info:
        return f"{name}, {info['implementation']}, {info['order']}"
    if (bench["group"] or "").startswith("poll live"):
        return f"live: {name}"
    return name


def series(benchmarks: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """label -> [(rows, ns per row)] for IPv4 parses and the live poll."""
    lines = defaultdict(list)
    for bench in benchmarks:
        info, rows = bench["extra_info"], bench["extra_info"].get("rows")
        name = bench["name"].split("[")[0]
        if not rows or info.get("family", 4) != 4:
            continue
        if name == "test_parse" or (bench["group"] or "").startswith("poll live"):
            lines[label(bench)].append((rows, bench["stats"]["median"] / rows * 1e9))
    for bench in benchmarks:                       # test_million.py: interleaved medians
        sockets = sockets_of(bench)
        for key, value in bench["extra_info"].items() if sockets else ():
            if key.startswith("median_ms ") and not key.endswith(("tcpfast_once", " ss")):
                lines[f"live sockets: {key.removeprefix('median_ms ')}"].append(
                    (sockets, value / sockets * 1e6))
    return {key: sorted(points) for key, points in lines.items()}


def plot(benchmarks: list[dict], png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for name, points in sorted(series(benchmarks).items()):
        rows, ns = zip(*points)
        style = "-" if name.startswith("parse") else ":" if name.startswith("live sockets") else "--"
        axes.plot(rows, ns, style, marker="s" if name.startswith("live sockets") else "o",
                  label=name)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("rows in the table")
    axes.set_ylabel("ns per row (median)")
    axes.set_title("tcpfast: parsers on generated tables, live polls (dashed; dotted:"
                   " test_million.py)", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=110)


def ratios(benchmarks: list[dict]) -> str:
    """The interleaved measurements of test_ratios.py: medians and ratios."""
    lines = ["| benchmark | measured |", "|---|---|"]
    for bench in benchmarks:
        if bench["group"] == "ratios":
            found = [f"{key}: {value}" for key, value in bench["extra_info"].items()
                     if key != "rows"]
            lines.append(f"| {bench['name'].removeprefix('test_')} | {'; '.join(found)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def table(benchmarks: list[dict]) -> str:
    lines = ["| group | benchmark | median | ns/row | rounds |", "|---|---|---:|---:|---:|"]
    benchmarks = [bench for bench in benchmarks if bench["group"] != "ratios"]
    for bench in sorted(benchmarks, key=lambda b: (b["group"] or "", b["stats"]["median"])):
        stats, rows = bench["stats"], bench["extra_info"].get("rows")
        peak = bench["extra_info"].get("peak_rss_mb")
        interleaved = [f"{key.split(' ', 1)[1]} {value:,} {key.split(' ', 1)[0].removeprefix('median_')}"
                       for key, value in bench["extra_info"].items()
                       if key.split(" ", 1)[0] in ("median_ms", "median_ns", "median_s")]
        median = (f"{peak} MB peak RSS" if peak else "; ".join(interleaved) if interleaved
                  else f"{stats['median'] * 1e3:.2f} ms")
        per_row = f"{stats['median'] / rows * 1e9:.0f}" if rows and not peak else ""
        lines.append(f"| {bench['group']} | {label(bench)} | {median} | {per_row} "
                     f"| {stats['rounds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark --benchmark-json outputs")
    parser.add_argument("--png", help="where to write the plot")
    args = parser.parse_args()
    benchmarks = load(*args.json)
    if args.png:
        plot(benchmarks, args.png)
    print(ratios(benchmarks))
    print()
    print(table(benchmarks))


if __name__ == "__main__":
    main()
