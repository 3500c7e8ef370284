"""NOTIFY_SOCKET (systemd's notify protocol): READY=1 once the first poll is written,
a STATUS per poll; what the suite's live tests wait on instead of a fixed time."""

import json
import os
import socket
import subprocess
import sys

from kernel_format import table
from test_cli import ALL_ROWS, EXPECTED_TEXT, SAMPLE_ROOT
from test_faults import CONNS, proc_root
from watcher_process import Notifications, WatcherProcess, wait_for

from tcpfast.outputs.notify import status_line


def test_ready_comes_after_the_first_poll_is_written_then_a_status_per_poll(tmp_path):
    notifications = Notifications()
    output = tmp_path / "out"
    try:
        with open(output, "w") as out:
            process = subprocess.Popen([sys.executable, "-m", "tcpfast", "--interval", "0.1",
                                        "--proc-root", str(SAMPLE_ROOT)], stdout=out,
                                       stderr=subprocess.PIPE, text=True,
                                       env=notifications.environment())
            try:
                wait_for(lambda: notifications.ready, "READY=1", alive=lambda: process.poll() is None)
                lines_when_ready = output.read_text().splitlines()   # already all there
                notifications.wait_polls(4, alive=lambda: process.poll() is None)
            finally:
                process.terminate()
                process.wait(timeout=10)
        assert process.returncode == 0 and process.stderr.read() == ""
    finally:
        notifications.close()
    assert [line.split(": New connection: ")[1] for line in lines_when_ready] == EXPECTED_TEXT
    rows = len(ALL_ROWS)
    assert notifications.messages[0] == f"READY=1\n{status_line(1, rows)}"
    assert notifications.messages[1:4] == [status_line(poll, rows) for poll in (2, 3, 4)]


def test_an_abstract_socket_name_is_understood():
    name = f"tcpfast-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(60)
        result = subprocess.run([sys.executable, "-m", "tcpfast", "--once", "--proc-root",
                                 str(SAMPLE_ROOT)], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "NOTIFY_SOCKET": "@" + name})
        message = listener.recv(4096).decode()
    assert (result.returncode, result.stderr) == (0, "")
    assert message == f"READY=1\n{status_line(1, len(ALL_ROWS))}"


def test_a_socket_that_cannot_be_reached_is_said_once_and_polling_goes_on(tmp_path):
    root = proc_root(tmp_path / "proc", table(CONNS[:1], 4))
    missing = tmp_path / "nobody-listens"
    process = subprocess.Popen([sys.executable, "-m", "tcpfast", "--interval", "0.1", "--json",
                                "--proc-root", str(root)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "NOTIFY_SOCKET": str(missing)})
    try:
        first = [process.stdout.readline()]
        said = process.stderr.readline()
        for count in (2, 3):                     # two more polls, each seeing a new row
            (root / "net" / "tcp").write_bytes(table(CONNS[:count], 4))
            first.append(process.stdout.readline())
    finally:
        process.terminate()
        rest, more_said = process.communicate(timeout=10)
    assert said == (f"tcpfast: cannot notify NOTIFY_SOCKET={missing}: No such file or "
                    "directory; no more readiness or status messages\n")
    assert more_said == "" and rest == "" and process.returncode == 0
    assert [json.loads(line)["inode"] for line in first] == [c.inode for c in CONNS[:3]]


def test_the_watcher_helper_counts_polls():
    watcher = WatcherProcess("--interval", "0.1", "--proc-root", str(SAMPLE_ROOT))
    try:
        watcher.wait_ready()
        watcher.more_polls(3)
        assert watcher.stop() < 5
    finally:
        watcher.kill()
    assert watcher.notifications.polls >= 4 and watcher.err == []
    assert len(watcher.out) == len(EXPECTED_TEXT)           # the first poll's, nothing again
