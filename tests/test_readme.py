"""The README says what tcpfast does: its library example runs as written, on a table
that changes while it runs; its metrics and JSON examples are what tcpfast prints."""

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parent.parent / "README.md"


def library_example() -> str:
    section = README.read_text().split("## Library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def churn(stop: threading.Event) -> None:
    """Connections opened and closed all the time: each read of the table differs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        while not stop.is_set():
            pairs = [(socket.create_connection(server.getsockname()), server.accept()[0])
                     for _ in range(20)]
            for pair in pairs:
                for sock in pair:
                    sock.close()


def test_the_library_example_runs_while_the_table_changes():
    stop = threading.Event()
    churner = threading.Thread(target=churn, args=(stop,), daemon=True)
    churner.start()
    try:
        for _ in range(10):
            result = subprocess.run([sys.executable, "-c", library_example()],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        churner.join(timeout=10)
    assert result.stdout.splitlines()[-1] in ("True", "False")


def section(title: str) -> str:
    """The README's text from the heading ``title`` to the next heading of any level."""
    return re.split(r"\n#+ ", README.read_text().split(f"\n{title}", 1)[1], maxsplit=1)[0]


def test_the_metrics_table_names_every_metric_served_and_the_example_is_served_as_shown():
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from tcpfast import CONNECTION_DTYPE, backend
    from tcpfast.outputs.metrics import Metrics
    from tcpfast.sources import Snapshot
    metrics_section = section("### Prometheus metrics")
    metrics = Metrics(source="proc")
    metrics.record_snapshot(Snapshot(np.zeros(0, dtype=CONNECTION_DTYPE)))   # states: all 0
    served = generate_latest(metrics.registry).decode().splitlines()
    families = {line.split()[2] for line in served if line.startswith("# TYPE")}
    named = set(re.findall(r"`(tcpfast_[a-z_]+)", metrics_section.split("```")[0]))
    assert named == families
    example = metrics_section.split("```\n", 2)[1].split("```")[0].splitlines()
    build_info = next(line for line in served if line.startswith("tcpfast_build_info"))
    if not backend.ACCELERATED:                       # the README shows the compiled modules
        build_info = build_info.replace('implementation="pure"', 'implementation="compiled"')
    assert build_info in example                      # its version is tcpfast's own
    shapes = {re.sub(r"\{.*\}", "{}", line.rsplit(" ", 1)[0]) for line in served
              if not line.startswith("#")}
    assert {re.sub(r"\{.*\}", "{}", line.rsplit(" ", 1)[0]) for line in example} <= shapes


def test_the_read_timeout_metric_says_what_it_counts():
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from tcpfast.outputs.metrics import Metrics
    served = generate_latest(Metrics().registry).decode()
    help_line = next(line for line in served.splitlines()
                     if line.startswith("# HELP tcpfast_cut_short_polls"))
    assert "--read-timeout" in help_line and "interval" not in help_line
    row = next(line for line in section("### Prometheus metrics").splitlines()
               if "tcpfast_cut_short_polls_total" in line)
    assert "--read-timeout" in row and "interval" not in row


def test_every_json_example_of_a_connection_has_the_keys_tcpfast_prints():
    """Each README line of a new or closed event: the same keys, in the same order, as
    tcpfast's own JSON line for that event (with --process: the keys do not change)."""
    import json
    from datetime import datetime, timezone

    from tcpfast import CONNECTION_DTYPE
    from tcpfast.events import RowEvents
    from tcpfast.outputs.report import json_lines
    rows = np.zeros(1, dtype=CONNECTION_DTYPE)
    rows["family"], rows["state"] = 4, 1
    examples = [json.loads(line) for line in README.read_text().splitlines()
                if (line.startswith('{"time"') and '"event": "new"' in line)
                or (line.startswith('{"time"') and '"event": "closed"' in line)]
    assert len(examples) >= 3
    for example in examples:
        duration = np.full(1, 1.0) if example["event"] == "closed" else None
        events = RowEvents(example["event"], rows, np.zeros(1, np.uint8), duration)
        printed = json.loads(json_lines(events, datetime.now(timezone.utc))[0])
        assert list(example) == list(printed), example


def options_block() -> str:
    section = README.read_text().split("## Options", 1)[1]
    return re.search(r"```\n(options:\n.*?)```", section, re.S).group(1)


def test_the_options_block_is_what_help_prints():
    """README's options are `tcpfast --help` at 80 columns, from `options:` to the end."""
    help_text = subprocess.run([sys.executable, "-m", "tcpfast", "--help"], capture_output=True,
                               text=True, check=True, env={"COLUMNS": "80", "PATH": "/usr/bin"}
                               ).stdout
    assert options_block() == help_text[help_text.index("options:\n"):]


def test_the_module_map_names_every_module():
    """"How it works" has a row for every module of the package (a package's
    ``__init__`` only where it does more than name what its modules hold)."""
    section = README.read_text().split("## How it works", 1)[1].split("\n## ", 1)[0]
    package = README.parent / "tcpfast"
    named = set()
    for cell in re.findall(r"^\| `([^|]+)` \|", section, re.M):
        paths = [path.strip(" `") for path in cell.split(",")]
        folder = str(Path(paths[0]).parent)
        named |= {path if "/" in path else f"{folder}/{path}" for path in paths}
    modules = {str(path.relative_to(README.parent)) for pattern in ("*.py", "*.pyx", "*.pxd")
               for path in package.rglob(pattern)
               if path.name not in ("__init__.py", "__main__.py")} | {"tcpfast/sources/__init__.py"}
    if not (package / "watch.py").exists():
        pytest.skip("no source tree beside the README (an installed wheel is under test)")
    assert sorted(modules - named) == []
    assert sorted(named - modules) == []



def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation but - and _ dropped,
    each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_readme_reaches_a_heading():
    text = README.read_text()
    anchors = {github_anchor(heading) for heading in re.findall(r"^#+ (.*)$", text, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and sorted(links - anchors) == []
