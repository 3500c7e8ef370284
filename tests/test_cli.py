"""``python -m tcpfast`` as users run it: exact output, exit codes, one-line errors."""

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tcpfast import backend

SAMPLE_ROOT = Path(__file__).parent / "data" / "proc"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00): New connection: ")

#: Every row of the sample tables, in order.
ALL_ROWS = [
    "0.0.0.0:8089 -> 0.0.0.0:0",
    "127.0.0.53:53 -> 0.0.0.0:0",
    "0.0.0.0:22 -> 0.0.0.0:0",
    "10.162.15.225:41164 -> 172.217.13.110:443",
    "10.162.15.225:36088 -> 91.189.91.15:80",
    "10.162.15.225:52384 -> 169.254.169.254:80",
    "10.162.15.225:22 -> 204.225.215.59:55627",
    "[::]:22 -> [::]:0",
    "[::1]:22 -> [2001:db8::5]:443",
    "[::ffff:127.0.0.1]:8080 -> [::ffff:127.0.0.1]:45000",
    "[2001:db8:0:1::10]:443 -> [2001:db8::ff]:50000",
]
TIME_WAIT_ROW = 5
#: What is new by default: every row but the TIME_WAIT one (what is left of a closed connection).
EXPECTED_TEXT = [line for i, line in enumerate(ALL_ROWS) if i != TIME_WAIT_ROW]


def tcpfast(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "tcpfast", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_once_prints_the_exact_text_lines():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    result = tcpfast("--once", "--proc-root", str(SAMPLE_ROOT))
    after = datetime.now(timezone.utc)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    stamps = {STAMP.match(line).group(1) for line in lines}
    assert len(stamps) == 1                               # one poll, one time
    assert before <= datetime.fromisoformat(stamps.pop()) <= after
    assert [STAMP.sub("", line) for line in lines] == EXPECTED_TEXT


def test_once_json_lines_have_the_contract_keys():
    result = tcpfast("--once", "--json", "--proc-root", str(SAMPLE_ROOT), "--state", "ESTABLISHED")
    assert (result.returncode, result.stderr) == (0, "")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        assert datetime.fromisoformat(event.pop("time")).utcoffset().total_seconds() == 0
    assert events[0] == {"event": "new", "family": 4, "local": "10.162.15.225",
                         "local_port": 41164, "remote": "172.217.13.110", "remote_port": 443,
                         "state": "ESTABLISHED", "uid": 1000, "inode": 2710532,
                         "direction": "out", "pid": None, "comm": None, "netns": None,
                         "container_id": None, "pod_uid": None, "pod_namespace": None,
                         "pod_name": None}
    assert [(e["local"], e["local_port"], e["remote"], e["remote_port"], e["family"])
            for e in events[1:]] == [
        ("10.162.15.225", 36088, "91.189.91.15", 80, 4),
        ("10.162.15.225", 22, "204.225.215.59", 55627, 4),
        ("::1", 22, "2001:db8::5", 443, 6),
        ("::ffff:127.0.0.1", 8080, "::ffff:127.0.0.1", 45000, 6),
    ]


def test_state_filter_is_case_insensitive_and_takes_a_list():
    result = tcpfast("--once", "--proc-root", str(SAMPLE_ROOT), "--state", "listen,Time_Wait")
    assert [STAMP.sub("", line) for line in result.stdout.splitlines()] == [
        ALL_ROWS[i] for i in (0, 1, 2, 5, 7)]


def test_proc_root_from_the_environment(tmp_path):
    result = tcpfast("--once", env={"TCPFAST_PROC_ROOT": str(SAMPLE_ROOT)})
    assert len(result.stdout.splitlines()) == len(EXPECTED_TEXT)


def test_missing_tcp6_is_an_empty_table(tmp_path):
    (tmp_path / "net").mkdir()
    shutil.copy(SAMPLE_ROOT / "net" / "tcp", tmp_path / "net" / "tcp")
    result = tcpfast("--once", "--proc-root", str(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")
    assert [STAMP.sub("", line) for line in result.stdout.splitlines()] == EXPECTED_TEXT[:6]


def test_missing_table_is_one_line_and_exit_2(tmp_path):
    result = tcpfast("--once", "--proc-root", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"tcpfast: cannot read {tmp_path}/net/tcp: No such file or directory\n"


def test_malformed_rows_are_reported_on_stderr(tmp_path):
    (tmp_path / "net").mkdir()
    good = (SAMPLE_ROOT / "net" / "tcp").read_bytes()
    (tmp_path / "net" / "tcp").write_bytes(good + b"   7: garbage row\n")
    result = tcpfast("--once", "--proc-root", str(tmp_path))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 6
    assert result.stderr == f"tcpfast: skipped 1 malformed row(s) in {tmp_path}/net/tcp*\n"


@pytest.mark.parametrize("args,message", [
    (["--interval", "0"], "must be from 0.001 to 2147483.647 seconds, not '0'"),
    (["--interval", "-1"], "must be from 0.001 to 2147483.647 seconds, not '-1'"),
    (["--interval", "soon"], "not a number"),
    # poll()'s timeout is an int of milliseconds: these ended in a traceback after a poll.
    (["--interval", "86400000"], "must be from 0.001 to 2147483.647 seconds, not '86400000'"),
    (["--interval", "1e300"], "must be from 0.001 to 2147483.647 seconds, not '1e300'"),
    (["--interval", "1e-320"], "must be from 0.001 to 2147483.647 seconds, not '1e-320'"),
    (["--interval", "nan"], "not 'nan'"),
    (["--read-timeout", "inf"], "must be a positive number of seconds, not 'inf'"),
    (["--state", "bogus"], "unknown state 'bogus'"),
    (["--events", "new,opened"], "unknown event 'opened'"),
    (["--read-timeout", "0"], "must be a positive number of seconds"),
    (["--nonsense"], "unrecognized arguments"),
])
def test_bad_arguments_are_usage_errors(args, message):
    result = tcpfast(*args, timeout=20)         # one accepted by mistake would run on
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("tcpfast: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.endswith("(see tcpfast --help)\n")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args,message", [
    # --once polls once: these printed nothing (exit 0), or made an nft table for nothing.
    (["--once", "--skip-existing"],
     "--skip-existing: leaves out the first poll, the only one --once makes"),
    (["--once", "--block"],
     "--block: --once polls once, and port scans are found in the polls that follow"),
    (["--once", "--events", "new,closed"],
     "--events closed: --once polls once and sees nothing close"),
    (["--once", "--interval", "5"], "--interval: --once polls once"),
    (["--once", "--scan-ports", "5"],
     "--scan-ports: --once polls once, and port scans are found in the polls that follow"),
    (["--once", "--scan-window", "5"],
     "--scan-window: --once polls once, and port scans are found in the polls that follow"),
    (["--once", "--allow", "192.0.2.0/24"],
     "--allow: --once polls once, and port scans are found in the polls that follow"),
    (["--once", "--scan-local"],
     "--scan-local: --once polls once, and port scans are found in the polls that follow"),
    (["--once", "--metrics", "9"], "--metrics: --once exits after its one poll, before any scrape"),
    # Detection off: what it would take has nothing to act on.
    (["--scan-ports", "0", "--scan-window", "5"],
     "--scan-window needs port-scan detection (--scan-ports above 0)"),
    (["--scan-ports", "0", "--allow", "192.0.2.0/24"],
     "--allow needs port-scan detection (--scan-ports above 0)"),
    (["--scan-ports", "0", "--scan-local"],
     "--scan-local needs port-scan detection (--scan-ports above 0)"),
    (["--block-for", "60"], "--block-for needs --block"),
])
def test_options_that_rule_each_other_out_are_usage_errors(args, message):
    result = tcpfast(*args, "--proc-root", str(SAMPLE_ROOT), timeout=20)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"tcpfast: error: {message} (see tcpfast --help)\n"


def test_options_that_ask_for_nothing_more_pass_with_once():
    """Turning detection off, or the defaults written out, rule nothing out."""
    result = tcpfast("--once", "--scan-ports", "0", "--events", "new", "--proc-root",
                     str(SAMPLE_ROOT))
    assert (result.returncode, result.stderr) == (0, "")
    assert [STAMP.sub("", line) for line in result.stdout.splitlines()] == EXPECTED_TEXT


def test_help_and_version():
    result = tcpfast("--help")
    assert result.returncode == 0
    for option in ("--interval", "--once", "--proc-root", "--state", "--json", "--version"):
        assert option in result.stdout
    assert result.stderr == ""
    version = tcpfast("--version")
    how = "pure Python, as TCPFAST_PURE asks" if backend.PURE_REQUESTED else "compiled modules in use"
    assert re.fullmatch(rf"tcpfast \d+\.\d+\.\d+ \({how}\)\n", version.stdout), version.stdout


@pytest.mark.parametrize("spelling", ["time-wait", "TIME_WAIT", "Time_Wait"])
def test_state_names_in_ss_spelling_too(spelling):
    result = tcpfast("--once", "--proc-root", str(SAMPLE_ROOT), "--state", spelling)
    assert (result.returncode, result.stderr) == (0, "")
    assert [STAMP.sub("", line) for line in result.stdout.splitlines()] == [ALL_ROWS[TIME_WAIT_ROW]]


@pytest.mark.skipif(shutil.which("tcpfast") is None, reason="tcpfast is not installed here")
def test_the_installed_console_script():
    result = subprocess.run(["tcpfast", "--once", "--proc-root", str(SAMPLE_ROOT)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert [STAMP.sub("", line) for line in result.stdout.splitlines()] == EXPECTED_TEXT
