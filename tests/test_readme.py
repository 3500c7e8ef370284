"""The README's library example runs as written, on a table that changes while it runs."""

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

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
