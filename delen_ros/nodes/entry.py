"""
Entry of the executables (standard library only): Ctrl-C while they import.

Importing torch and rclpy takes seconds, and a Ctrl-C raised inside those imports can be lost
(the node then starts anyway) or end in a KeyboardInterrupt traceback. So the imports run with
SIGINT blocked; one that arrived meanwhile ends the program in one line with ``INTERRUPTED``.
"""

import importlib
import signal
import sys
from typing import Callable

__all__ = ['INTERRUPTED', 'import_main']

# Exit code of a start-up cut short by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def import_main(module: str, *, name: str) -> Callable[..., int]:
    """Import ``module`` with Ctrl-C held back and return its ``main``; exit if interrupted."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    main = importlib.import_module(module).main
    if signal.SIGINT in signal.sigpending():
        print(f'{name}: interrupted while starting', file=sys.stderr)
        sys.exit(INTERRUPTED)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return main
