"""``python -m tcpfast`` and the ``tcpfast`` command.

Stop signals are quiet from the first instant: a Ctrl-C while numpy is still
importing ends the program at once, not with a traceback: status 0, or with
``--once`` 128 + the signal's number and a line on stderr (nothing was listed,
and a script must not take that for an empty listing). The library's import-time
warnings are left to the command line, which says the same in one line of its own.
"""

import os
import signal
import sys
import warnings


def _asks_once(arguments: list[str]) -> bool:
    """Whether the arguments hold ``--once``, as argparse reads it (a prefix will do)."""
    return any(len(argument) > 2 and "--once".startswith(argument) for argument in arguments)


def _stop_during_start(signum: int, frame: object) -> None:
    # Not SystemExit: raised inside an extension module's import, numpy (2.2) turns
    # it into an ImportError with a traceback. Nothing is written yet.
    if not _asks_once(sys.argv[1:]):
        os._exit(0)
    try:
        os.write(2, f"tcpfast: stopped by {signal.Signals(signum).name} while starting: "
                    "nothing listed\n".encode())
    except OSError:
        pass
    os._exit(128 + signum)


def main() -> int:
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _stop_during_start)
    warnings.filterwarnings("ignore", message="tcpfast: ", category=RuntimeWarning)
    from .cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
