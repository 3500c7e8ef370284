"""Output that survives what busy hosts do to it: signals while the reader is slow,
full disks, a closed stdout, a reader that goes away, and stops during start-up."""

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from kernel_format import Conn, table
from test_cli import SAMPLE_ROOT
from test_faults import head_one, proc_root
from watcher_process import WatcherProcess

ROWS = 30_000                                   # JSON lines: ~8 MB, far more than a pipe holds
CONNS = [Conn("10.1.%d.%d" % divmod(i, 250), 1024 + i % 60000, "10.9.9.9", 443, inode=10 + i)
         for i in range(ROWS)]


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    return proc_root(tmp_path_factory.mktemp("big"), table(CONNS, 4))


def blocked_in_a_full_pipe(pid: int, read_end: int) -> bool:
    """``pid`` sleeps in a write to the pipe of ``read_end``, which is full: the
    pipe holds its capacity and the process sleeps where the kernel writes pipes
    (wchan, where the kernel shows it: "0" when it hides it)."""
    held = struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0]
    with open(f"/proc/{pid}/stat") as stat:
        state = stat.read().rpartition(")")[2].split()[0]
    with open(f"/proc/{pid}/wchan") as wchan:
        where = wchan.read()
    return (held >= fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) and state == "S"
            and (where == "0" or "pipe_write" in where))


def signals_pending(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        masks = dict(line.split(":\t", 1) for line in status.read().splitlines() if ":\t" in line)
    return any(int(masks[name], 16) for name in ("SigPnd", "ShdPnd"))


def wait_for_state(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_the_reader_is_slow_cuts_no_line(big_root, signum):
    """The Dockerfile runs with PYTHONUNBUFFERED=1: a signal that interrupts a
    blocked write must not drop the rest of it, nor splice two lines. The write
    under way (whole lines, a MiB at most) is finished; the stop is answered
    before the next one."""
    read_end, write_end = os.pipe()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "tcpfast", "--json", "--interval", "60", "--proc-root",
         str(big_root)], stdout=write_end, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(write_end)
    try:
        wait_for_state(lambda: blocked_in_a_full_pipe(watcher.pid, read_end),
                       "it fills the pipe and blocks in write()")
        watcher.send_signal(signum)             # the reader is slow: the signal lands mid-write
        wait_for_state(lambda: not signals_pending(watcher.pid)
                       and blocked_in_a_full_pipe(watcher.pid, read_end),
                       "the signal is taken and the write goes on")
        with os.fdopen(read_end, "rb") as reader:
            data = reader.read()                # ... then reads it all
        watcher.wait(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    err = watcher.stderr.read().decode()
    assert watcher.returncode == 0, err
    lines = data.decode().splitlines()
    assert data.endswith(b"\n")
    inodes = [json.loads(line)["inode"] for line in lines]   # every line whole
    assert inodes == [c.inode for c in CONNS[:len(inodes)]]  # in order, none lost or twice
    assert 0 < len(inodes) < ROWS                            # cut between two writes
    assert err == (f"tcpfast: stopped by {signal.Signals(signum).name} while printing a "
                   f"poll: its last {ROWS - len(inodes)} line(s) not written\n")


def test_a_full_disk_is_an_output_error():
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "tcpfast", "--once", "--proc-root",
                                 str(SAMPLE_ROOT)], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    assert result.returncode == 3
    assert result.stderr == "tcpfast: cannot write output: No space left on device\n"


def test_a_closed_stdout_is_an_output_error():
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m tcpfast --once --proc-root "{SAMPLE_ROOT}" >&-'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert result.stderr == "tcpfast: cannot write output: standard output is closed\n"


def test_a_reader_that_goes_away_ends_the_watcher_while_it_waits():
    """``| head -1`` must end the watcher during its wait, not at its next write
    (an interval of 10 minutes: the pipeline ends long before it)."""
    line, rest = head_one("--interval", "600", "--proc-root", str(SAMPLE_ROOT))
    assert "New connection: 0.0.0.0:8089 -> 0.0.0.0:0" in line
    assert rest == "status=0"


def _loading_numpy(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "/numpy/" in maps.read()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_importing_is_quiet(signum):
    """A stop while numpy is still importing: exit 0, no traceback. (A signal in
    the interpreter's own first milliseconds, before any tcpfast code runs, is
    the interpreter's to handle.)"""
    process = subprocess.Popen([sys.executable, "-m", "tcpfast", "--interval", "60",
                                "--proc-root", str(SAMPLE_ROOT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _loading_numpy(process.pid) and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (0, "")


class SlowTable:
    """A FIFO in place of /proc/net/tcp that hands out its rows slowly, like the
    kernel listing a big table: each open delivers the whole table, over ``seconds``."""

    def __init__(self, root, conns, seconds: float) -> None:
        (root / "net").mkdir(parents=True, exist_ok=True)
        self.path = root / "net" / "tcp"
        os.mkfifo(self.path)
        self.header, *rest = table(conns, 4).splitlines(True)
        self.pages = [b"".join(rest[i:i + 20]) for i in range(0, len(rest), 20)]
        self.pause = seconds / len(self.pages)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                with open(self.path, "wb", buffering=0) as reader:
                    reader.write(self.header)
                    for page in self.pages:
                        if self.done.is_set():
                            break
                        time.sleep(self.pause)
                        reader.write(page)
            except OSError:
                pass
            # A FIFO of its own for the next read: the last reader, which may not
            # have closed yet, must see the end of its table, not the next one's rows.
            fresh = self.path.with_name("tcp.next")
            os.mkfifo(fresh)
            os.replace(fresh, self.path)

    def close(self) -> None:
        self.done.set()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)   # unblock a pending open
            os.close(fd)
        except OSError:
            pass
        self.thread.join(timeout=10)


@pytest.fixture
def slow_table(tmp_path):
    tables = []

    def make(conns, seconds):
        tables.append(SlowTable(tmp_path, conns, seconds))
        return tmp_path

    yield make
    for slow in tables:
        slow.close()


def test_once_reads_to_the_end_however_long_it_takes(slow_table):
    """No read timeout unless given (--interval, which would have set none either, is
    refused with --once)."""
    root = slow_table(CONNS[:400], seconds=0.6)
    result = subprocess.run([sys.executable, "-m", "tcpfast", "--once",
                             "--json", "--proc-root", str(root)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert sorted(json.loads(line)["inode"] for line in result.stdout.splitlines()) == [
        c.inode for c in CONNS[:400]]


def test_once_cut_short_by_read_timeout_says_so_and_exits_1(slow_table):
    root = slow_table(CONNS[:400], seconds=2.0)
    result = subprocess.run([sys.executable, "-m", "tcpfast", "--once", "--read-timeout", "0.3",
                             "--json", "--proc-root", str(root)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cut short" in result.stderr and len(result.stderr.splitlines()) == 1
    assert 0 < len(result.stdout.splitlines()) < 400


def test_a_short_interval_misses_nothing(slow_table):
    """Each read takes longer than the interval: polls run late, none is cut short."""
    root = slow_table(CONNS[:200], seconds=0.4)
    watcher = WatcherProcess("--interval", "0.1", "--json", "--proc-root", str(root))
    try:
        watcher.wait_until(lambda: len(watcher.out) >= 200)
        watcher.more_polls()                                # more polls: nothing repeated
        watcher.stop()
    finally:
        watcher.kill()
    assert watcher.process.returncode == 0 and watcher.err == []
    assert sorted(event["inode"] for event in watcher.events()) == [c.inode for c in CONNS[:200]]
