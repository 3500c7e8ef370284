"""``python -m tcpfast`` and the ``tcpfast`` command.

Stop signals are quiet from the first instant: a Ctrl-C while numpy is still
importing ends the program at once with status 0, not a traceback. The library's
import-time warnings are left to the command line, which says the same in one
line of its own.
"""

import os
import signal
import sys
import warnings


def _stop_during_start(signum: int, frame: object) -> None:
    # Not SystemExit: raised inside an extension module's import, numpy (2.2) turns
    # it into an ImportError with a traceback. Nothing is written yet: nothing is lost.
    os._exit(0)


def main() -> int:
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _stop_during_start)
    warnings.filterwarnings("ignore", message="tcpfast: ", category=RuntimeWarning)
    from .cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
