"""``python -m tcpfast`` and the ``tcpfast`` command.

Stop signals are quiet from the first instant: a Ctrl-C while numpy is still
importing ends the program with status 0, not a traceback. The library's
import-time warnings are left to the command line, which says the same in one
line of its own.
"""

import signal
import sys
import warnings


def _stop_during_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _stop_during_start)
    warnings.filterwarnings("ignore", message="tcpfast: ", category=RuntimeWarning)
    from .cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
