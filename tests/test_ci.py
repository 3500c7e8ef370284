""".ci/run: it stops at the first failure, and it runs the README's quick start as written."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent
CI = ROOT / ".ci" / "run"
README = ROOT / "README.md"


def script_lines() -> list[str]:
    """.ci/run's commands: comments, and the awk program's lines, left out."""
    text = re.sub(r"awk '.*?'", "awk PROGRAM", CI.read_text(), flags=re.S)
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_no_command_of_the_script_hides_a_failure_behind_and():
    """Under set -e, a failing A in `A && B` is not an error: the script would go on.
    (A condition, `[[ ]]`, `if`, or `A && B || ...`, is tested on purpose.)"""
    assert "set -euo pipefail" in CI.read_text()
    chained = [line for line in script_lines() if "&&" in line and "||" not in line
               and not line.lstrip().startswith(("[[", "if ", "while "))]
    assert chained == []


def quick_start() -> list[str]:
    section = README.read_text().split("## Quick start", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1).splitlines()


def test_the_script_runs_the_readme_quick_start_as_written():
    function = re.search(r"^readme_command\(\) \{.*?^\}", CI.read_text(), re.S | re.M).group(0)
    found = [subprocess.run(["bash", "-c", f"{function}\nreadme_command {n}"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.rstrip("\n")
             for n in (1, 2)]
    assert found == quick_start()
    assert found[1] == "pip install --group test && python -m pytest"


def quick_start_part() -> str:
    """The script's lines that find and run the README's quick start."""
    text = CI.read_text()
    start = text.index("readme_command() {")
    run = text.index("own_processes bash -euo pipefail -c", start)
    end = text.index('$test_command"', run) + len('$test_command"')
    return text[start:end]


def test_a_failing_first_command_stops_the_quick_start(tmp_path):
    """Run as the script runs them, on a README whose first command fails in one of its
    && steps: the run ends with that failure, and the second command does not run.
    (The script's helpers are stand-ins here: step says nothing, own_processes runs the
    command as it is, without a PID namespace of its own.)"""
    (tmp_path / "README.md").write_text(
        "## Quick start\n\n```sh\ntrue && false && python -m tcpfast\n"
        "touch second-ran && python -m pytest\n```\n")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", "step() { :; }\nown_processes() { \"$@\"; }\n"
                             + quick_start_part()],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (tmp_path / "second-ran").exists()
