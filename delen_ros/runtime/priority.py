"""
CPU priority of the serving thread (Linux).

``none``, ``nice:<n>``, ``realtime:<priority>`` or ``slice:<µs>``.

Applied by the thread itself (its native id), so only serving gets it. Raising priority needs
rights a robot grants on purpose: a negative nice needs CAP_SYS_NICE or an ``rlimit nice``;
SCHED_FIFO needs CAP_SYS_NICE or ``rtprio`` in /etc/security/limits.conf (docs/serving_path.md).
A shorter time slice needs no rights: EEVDF (Linux 6.12 and later) gives a thread that asks
for one an earlier virtual deadline, so on waking it preempts a CPU hog at once instead of at
the next scheduler tick; its share of the CPU stays that of its nice level.
"""

import ctypes
import os
import platform
import threading
from typing import Optional, Tuple

__all__ = ['PriorityError', 'apply_priority', 'parse_priority', 'thread_slice_us']

KINDS = ('none', 'nice', 'realtime', 'slice')
_LEVELS = {'nice': (-20, 19), 'realtime': (1, 99),
           'slice': (100, 100_000)}  # µs: the kernel clamps a slice to 0.1-100 ms
_SCHED_OTHER = 0
# (sched_setattr, sched_getattr) by machine; the generic table's numbers serve aarch64 and riscv64.
_SYSCALLS = {'x86_64': (314, 315), 'aarch64': (274, 275), 'riscv64': (274, 275)}


class PriorityError(ValueError):
    """A cpu_priority value that is not none, nice:<-20..19>, realtime:<1..99> or slice:<µs>."""


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` of sched_setattr(2), first version (48 bytes)."""

    _fields_ = [('size', ctypes.c_uint32), ('sched_policy', ctypes.c_uint32),
                ('sched_flags', ctypes.c_uint64), ('sched_nice', ctypes.c_int32),
                ('sched_priority', ctypes.c_uint32), ('sched_runtime', ctypes.c_uint64),
                ('sched_deadline', ctypes.c_uint64), ('sched_period', ctypes.c_uint64)]


def parse_priority(text: str) -> Tuple[str, int]:
    """Split ``'nice:-5'`` into ('nice', -5); ``'none'`` or '' gives ('none', 0)."""
    kind, _, level = str(text).strip().lower().partition(':')
    if kind in ('', 'none'):
        if level:
            raise PriorityError(f'cpu_priority none takes no level, got {text!r}')
        return 'none', 0
    if kind not in KINDS:
        raise PriorityError(f'cpu_priority must be none, nice:<n>, realtime:<priority> or '
                            f'slice:<µs>, got {text!r}')
    try:
        value = int(level)
    except ValueError:
        raise PriorityError(f'cpu_priority {text!r}: the level must be an integer') from None
    low, high = _LEVELS[kind]
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
    if kind == 'slice':
        return _apply_slice(tid, level)
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


def thread_slice_us(tid: int = 0) -> Optional[int]:
    """Return a thread's time slice as the kernel reports it (µs; None where it reports none)."""
    attr = _sched_attr(tid)
    return attr.sched_runtime // 1000 if attr is not None and attr.sched_runtime else None


def _apply_slice(tid: int, slice_us: int) -> str:
    attr = _sched_attr(tid)
    if attr is None or attr.sched_policy != _SCHED_OTHER:
        return (f'cpu_priority slice:{slice_us} not applied: it needs Linux sched_setattr on '
                f'{platform.machine()} and a thread under the normal policy; serving with the '
                f"kernel's default slice")
    attr.sched_runtime = slice_us * 1000  # the nice level read above is kept
    error = _syscall(0, tid, ctypes.byref(attr), 0)
    if error:
        return (f'cpu_priority slice:{slice_us} not applied ({os.strerror(error)}); serving '
                f"with the kernel's default slice")
    if thread_slice_us(tid) != slice_us:
        return (f'cpu_priority slice:{slice_us} not applied: this kernel '
                f'({platform.release()}) keeps no slice per thread (EEVDF custom slices: '
                f"Linux 6.12 and later); serving with the kernel's default slice")
    return f'serving thread {tid}: time slice {slice_us} µs'


def _sched_attr(tid: int) -> Optional[_SchedAttr]:
    attr = _SchedAttr()
    if _syscall(1, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0):
        return None
    attr.size = ctypes.sizeof(attr)
    return attr


def _syscall(which: int, *args) -> int:
    """Run sched_setattr (0) or sched_getattr (1); return 0 or the errno."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 38  # ENOSYS
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(numbers[which], *args) == 0:
        return 0
    return ctypes.get_errno() or 38
