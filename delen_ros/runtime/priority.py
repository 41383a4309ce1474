"""
CPU priority of the serving thread: ``none``, ``nice:<n>`` or ``realtime:<priority>`` (Linux).

Applied by the thread itself (its native id), so only serving gets it. Raising priority needs
rights a robot grants on purpose: a negative nice needs CAP_SYS_NICE or an ``rlimit nice``;
SCHED_FIFO needs CAP_SYS_NICE or ``rtprio`` in /etc/security/limits.conf (docs/serving_path.md).
"""

import os
import threading
from typing import Optional, Tuple

__all__ = ['PriorityError', 'apply_priority', 'parse_priority']

KINDS = ('none', 'nice', 'realtime')


class PriorityError(ValueError):
    """A cpu_priority value that is not none, nice:<-20..19> or realtime:<1..99>."""


def parse_priority(text: str) -> Tuple[str, int]:
    """Split ``'nice:-5'`` into ('nice', -5); ``'none'`` or '' gives ('none', 0)."""
    kind, _, level = str(text).strip().lower().partition(':')
    if kind in ('', 'none'):
        if level:
            raise PriorityError(f'cpu_priority none takes no level, got {text!r}')
        return 'none', 0
    if kind not in KINDS:
        raise PriorityError(f'cpu_priority must be none, nice:<n> or realtime:<priority>, '
                            f'got {text!r}')
    try:
        value = int(level)
    except ValueError:
        raise PriorityError(f'cpu_priority {text!r}: the level must be an integer') from None
    low, high = (-20, 19) if kind == 'nice' else (1, 99)
    if not low <= value <= high:
        raise PriorityError(f'cpu_priority {text!r}: {kind} level must be in {low}..{high}')
    return kind, value


def apply_priority(text: str) -> Optional[str]:
    """
    Apply a priority to the calling thread; return one line saying what happened.

    None for ``none``. Never raises for a refusal by the OS: the line says what is missing.
    """
    kind, level = parse_priority(text)
    if kind == 'none':
        return None
    tid = threading.get_native_id()
    try:
        if kind == 'nice':
            os.setpriority(os.PRIO_PROCESS, tid, level)
            return f'serving thread {tid}: nice {level}'
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(level))
        return f'serving thread {tid}: SCHED_FIFO priority {level}'
    except (AttributeError, OSError) as error:
        need = ('CAP_SYS_NICE or an "rtprio" limit (ulimit -r)' if kind == 'realtime'
                else 'CAP_SYS_NICE or a "nice" limit (ulimit -e)')
        return (f'cpu_priority {text} not applied ({error.__class__.__name__}: '
                f'{getattr(error, "strerror", None) or error}); it needs {need}; '
                f'serving at normal priority')
