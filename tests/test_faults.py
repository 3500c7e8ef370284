"""Faults at start and while running: one-line errors, warnings, no crash, nothing
lost, nothing reported twice. Real files, a real watcher process, real signals."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kernel_format import Conn, table
from test_cli import SAMPLE_ROOT, tcpfast
from watcher_process import WatcherProcess

CONNS = [Conn("10.0.%d.%d" % divmod(i, 250), 1000 + i, "10.9.9.9", 443, inode=100 + i)
         for i in range(6000)]


def proc_root(tmp_path: Path, v4: bytes, v6: bytes | None = None) -> Path:
    (tmp_path / "net").mkdir(parents=True, exist_ok=True)
    (tmp_path / "net" / "tcp").write_bytes(v4)
    if v6 is not None:
        (tmp_path / "net" / "tcp6").write_bytes(v6)
    return tmp_path


AS_NOBODY = """
import os, sys
import tcpfast.cli
tcpfast.cli.build_parser().format_help()   # argparse's lazy imports, while still root
# tcpfast's own lazy imports too: nobody may not read the install (a venv in a 0700 dir)
import tcpfast.sources.fallback, tcpfast.sources.netlink, tcpfast.sources.netlink_events
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(tcpfast.cli.main(sys.argv[1:]))
"""


def run_cli_without_root(*args: str) -> subprocess.CompletedProcess:
    """The CLI as user nobody when the tests run as root (root reads any file);
    as the current user otherwise."""
    if os.geteuid() == 0:
        command = [sys.executable, "-c", AS_NOBODY, *args]
    else:
        command = [sys.executable, "-m", "tcpfast", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


# -- faults at start ---------------------------------------------------------------

def test_a_directory_where_the_table_should_be(tmp_path):
    (tmp_path / "net" / "tcp").mkdir(parents=True)
    result = tcpfast("--once", "--proc-root", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"tcpfast: cannot read {tmp_path}/net/tcp: Is a directory\n"


def test_an_unreadable_table(tmp_path):
    root = proc_root(tmp_path, (SAMPLE_ROOT / "net" / "tcp").read_bytes())
    os.chmod(root / "net" / "tcp", 0)
    os.chmod(tmp_path, 0o755)
    os.chmod(root / "net", 0o755)
    result = run_cli_without_root("--once", "--proc-root", str(root))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"tcpfast: cannot read {root}/net/tcp: Permission denied\n"


def test_no_root_needed_for_the_real_tables():
    with socket.socket() as server:                     # the test makes what it looks for
        server.bind(("127.0.0.1", 0))
        server.listen()
        result = run_cli_without_root("--once")
        port = server.getsockname()[1]
    assert (result.returncode, result.stderr) == (0, "")
    assert f"New connection: 127.0.0.1:{port} -> 0.0.0.0:0" in result.stdout


# -- odd tables ----------------------------------------------------------------------

def test_an_empty_table_prints_nothing(tmp_path):
    result = tcpfast("--once", "--proc-root", str(proc_root(tmp_path, b"")))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_truncated_last_line_is_one_malformed_row(tmp_path):
    data = table(CONNS[:3], 4)
    root = proc_root(tmp_path, data[: data.rfind(b"   2: ") + 20])  # cut inside the last row
    result = tcpfast("--once", "--proc-root", str(root))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2
    assert result.stderr == f"tcpfast: skipped 1 malformed row(s) in {root}/net/tcp*\n"


def test_a_huge_line_is_one_malformed_row(tmp_path):
    huge = b"   7: " + b"A" * 5_000_000 + b"\n"              # far longer than a read chunk
    root = proc_root(tmp_path, table(CONNS[:3], 4) + huge + table(CONNS[3:5], 4))
    result = tcpfast("--once", "--json", "--proc-root", str(root))
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 5
    assert result.stderr == f"tcpfast: skipped 1 malformed row(s) in {root}/net/tcp*\n"


# -- faults while running ------------------------------------------------------------

def reported(watcher: WatcherProcess) -> list[int]:
    return sorted(event["inode"] for event in watcher.events())


def test_a_table_that_vanishes_and_returns(tmp_path):
    root = proc_root(tmp_path, table(CONNS[:5], 4))
    tcp = root / "net" / "tcp"
    watcher = WatcherProcess("--interval", "0.1", "--json", "--proc-root", str(root))
    try:
        watcher.wait_until(lambda: len(watcher.out) == 5)
        tcp.rename(root / "net" / "gone")                    # the namespace went away
        watcher.wait_until(lambda: any("No such file" in line for line in watcher.err))
        tcp.mkdir()                                          # worse: a directory now
        watcher.wait_until(lambda: any("Is a directory" in line for line in watcher.err))
        tcp.rmdir()
        (root / "net" / "gone").write_bytes(table(CONNS[:7], 4))  # back, two rows more
        (root / "net" / "gone").rename(tcp)
        watcher.wait_until(lambda: len(watcher.out) >= 7)
        watcher.more_polls()                                 # more polls: no repeats
        assert watcher.stop() < 5
    finally:
        watcher.kill()
    assert watcher.process.returncode == 0
    assert reported(watcher) == [c.inode for c in CONNS[:7]]
    assert all(line.startswith("tcpfast: cannot read ") and line.endswith("; still polling")
               for line in watcher.err)


def test_a_table_growing_while_it_is_read_stays_bounded(tmp_path):
    """Like the kernel under churn: a read that never ends, rows listed again and again."""
    (tmp_path / "net").mkdir()
    fifo = tmp_path / "net" / "tcp"
    os.mkfifo(fifo)
    header, rows = table([], 4), table(CONNS[:40], 4).split(b"\n", 1)[1].splitlines(True)
    done = threading.Event()

    def kernel():
        while not done.is_set():
            try:
                with open(fifo, "wb", buffering=0) as reader:
                    reader.write(header)
                    for page in range(10_000):                # ~10 s, if nobody stops
                        if done.is_set():
                            break
                        reader.write(b"".join(rows[: 20 + page % 21]))   # repeats, grows
                        time.sleep(0.001)
            except (BrokenPipeError, OSError):
                continue

    writer = threading.Thread(target=kernel, daemon=True)
    writer.start()
    watcher = WatcherProcess("--interval", "0.3", "--read-timeout", "0.3", "--json",
                             "--proc-root", str(tmp_path))
    try:
        watcher.wait_until(lambda: any("cut short" in line for line in watcher.err))
        watcher.more_polls(4)                                 # several more polls cut short
        took = watcher.stop()
    finally:
        done.set()
        watcher.kill()
        with open(fifo, "rb", buffering=0) as unblock:        # let the writer's open return
            unblock.read(1)
        writer.join(timeout=10)
    assert watcher.process.returncode == 0 and took < 5
    cut_short = [line for line in watcher.err if "cut short" in line]
    assert len(cut_short) == 1, watcher.err                   # once per episode, not per poll
    assert "--read-timeout" in cut_short[0]
    inodes = reported(watcher)
    assert inodes == sorted(set(inodes))                      # nothing twice
    assert set(inodes) <= {c.inode for c in CONNS[:40]}
    assert set(inodes) >= {c.inode for c in CONNS[:20]}       # every row it could see


# -- signals and pipes ---------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_end_the_watcher_with_everything_printed(tmp_path, signum):
    root = proc_root(tmp_path, table(CONNS[:50], 4))
    watcher = WatcherProcess("--interval", "30", "--json", "--proc-root", str(root))
    try:
        watcher.wait_until(lambda: len(watcher.out) == 50)   # flushed while it sleeps
        took = watcher.stop(signum)
    finally:
        watcher.kill()
    assert watcher.process.returncode == 0 and watcher.err == []
    assert took < 5, f"took {took:.2f} s to stop"
    assert reported(watcher) == [c.inode for c in CONNS[:50]]


MANY = [Conn("10.%d.%d.%d" % (i // 62500, i // 250 % 250, i % 250), 1000 + i % 60000,
             "10.9.9.9", 443, inode=100 + i) for i in range(12_000)]     # three print batches


def stopped_mid_listing(signum: int, *args: str) -> tuple[subprocess.Popen, list[str], str]:
    """Run tcpfast ARGS over MANY rows, stop reading its output once the first line is
    out (it then waits in write(), the pipe full), send ``signum``, then read on.
    Returns the process (exited), every line it wrote, and its stderr."""
    process = subprocess.Popen([sys.executable, "-m", "tcpfast", "--json", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               bufsize=0)              # no read-ahead past the first line
    try:
        first = process.stdout.readline()        # written inside the poll: handlers are set
        process.send_signal(signum)
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    return process, (first + rest).decode().splitlines(keepends=True), err.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_once_stopped_mid_listing_says_so_and_exits_128_plus_the_signal(tmp_path, signum):
    root = proc_root(tmp_path, table(MANY, 4))
    process, lines, err = stopped_mid_listing(signum, "--once", "--proc-root", str(root))
    assert process.returncode == 128 + signum                  # 130, 143: as the shell says
    assert 0 < len(lines) < len(MANY)                          # cut short ...
    assert all(line.endswith("\n") and json.loads(line) for line in lines)  # ... whole lines
    name = signal.Signals(signum).name
    assert err == (f"tcpfast: stopped by {name} before the listing was complete: "
                   f"{len(lines)} line(s) written\n")


def test_watching_stopped_mid_poll_exits_0_saying_what_was_not_printed(tmp_path):
    root = proc_root(tmp_path, table(MANY, 4))
    process, lines, err = stopped_mid_listing(signal.SIGTERM, "--interval", "30",
                                              "--proc-root", str(root))
    assert process.returncode == 0
    assert 0 < len(lines) < len(MANY)
    assert all(line.endswith("\n") and json.loads(line) for line in lines)
    assert err == (f"tcpfast: stopped by SIGTERM while printing a poll: its last "
                   f"{len(MANY) - len(lines)} line(s) not written\n")


def test_once_stopped_while_starting_says_so():
    """A stop before the command line is even read (numpy still importing): the start's
    handler, with a real signal."""
    script = ("import os, signal, sys\n"
              "sys.argv = ['tcpfast', '--onc', '--json']\n"        # a prefix, as argparse takes
              "from tcpfast.__main__ import _stop_during_start\n"
              "signal.signal(signal.SIGINT, _stop_during_start)\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "signal.pause()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (130, "")
    assert result.stderr == "tcpfast: stopped by SIGINT while starting: nothing listed\n"
    watching = subprocess.run([sys.executable, "-c", script.replace("'--onc', ", "")],
                              capture_output=True, text=True, timeout=60)
    assert (watching.returncode, watching.stdout, watching.stderr) == (0, "", "")


def head_one(*args: str) -> tuple[str, str]:
    """``tcpfast ARGS | head -1``: head's line, and tcpfast's exit status and stderr."""
    pipeline = (f'"{sys.executable}" -m tcpfast {" ".join(args)} | head -1;'
                " echo status=${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True,
                            timeout=60)
    line, status = result.stdout.splitlines()
    return line, status + result.stderr


def test_a_closed_pipe_ends_quietly(tmp_path):
    root = proc_root(tmp_path, table(CONNS, 4))               # far more than a pipe holds
    line, rest = head_one("--interval", "0.2", "--proc-root", str(root))
    assert "New connection: 10.0.0.0:1000 -> 10.9.9.9:443" in line
    assert rest == "status=0"


def test_output_to_a_file_is_flushed_every_poll(tmp_path):
    root = proc_root(tmp_path, table(CONNS[:3], 4))
    log = tmp_path / "log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tcpfast", "--interval", "30",
                                    "--proc-root", str(root)], stdout=out)
        try:
            deadline = time.monotonic() + 60
            while len(log.read_text().splitlines()) < 3:        # no exit needed to see it
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert process.returncode == 0


def test_permissions_of_sample_data_are_sane():
    assert stat.S_IMODE(os.stat(SAMPLE_ROOT / "net" / "tcp").st_mode) & 0o444
    assert shutil.which("bash")
