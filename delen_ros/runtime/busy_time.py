"""
Where the serving thread's busy time goes: on a CPU, waiting for one, or asleep.

From taking work to going back to wait for frames, the serving thread should be running. When
it is not, it is either runnable and waiting for a CPU (the OS gave the core to another thread
or process) or asleep: waiting for the GIL while another Python thread holds it (the node's
executor), or blocked in a call. The CPU time comes from ``time.thread_time_ns`` and the time
runnable on a run queue from Linux's ``/proc/thread-self/schedstat`` (its CPU-time field
is only brought up to date at scheduler ticks, up to a few ms late for a running thread, so it
is not used); the rest of the wall time is asleep. Where that file is missing the time off the
CPU is not split.

``compute_clock()`` is the calling thread's wall time less its time waiting for a CPU, read
without the thread's CPU clock: on Linux, reading that clock brings the scheduler's account of
the running thread up to date, and a thread whose time slice is used up is then preempted at
once, in the middle of a frame, where it would have run on to the next tick.
"""

import collections
import os
import threading
import time
from typing import Dict, Iterable, Optional, Tuple

__all__ = ['BusyTime', 'compute_clock']

Mark = Tuple[float, int, Optional[int]]  # wall s, ns on a CPU, ns runnable (None: unknown)


class _Schedstat:
    """The calling thread's schedstat file, open while the thread lives (``_this_thread``)."""

    def __init__(self) -> None:
        self.last_ns = 0
        self.fd: Optional[int] = None
        try:
            self.fd = os.open('/proc/thread-self/schedstat', os.O_RDONLY)
            self.run_delay_ns()
        except (OSError, ValueError, IndexError):
            self.close()

    def run_delay_ns(self) -> int:
        """Return the ns the thread has waited runnable for a CPU (raises if unreadable)."""
        self.last_ns = int(os.pread(self.fd, 128, 0).split()[1])
        return self.last_ns

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


_threads = threading.local()


def _this_thread() -> _Schedstat:
    schedstat = getattr(_threads, 'schedstat', None)
    if schedstat is None:
        schedstat = _threads.schedstat = _Schedstat()
    return schedstat


def compute_clock() -> float:
    """
    Return seconds of the calling thread's wall time not spent waiting for a CPU.

    Time asleep counts; where schedstat is missing this is the wall clock. A failed read keeps
    the last value, so a stage is never charged the thread's whole past wait.
    """
    schedstat = _this_thread()
    delay_ns = schedstat.last_ns
    if schedstat.fd is not None:
        try:
            delay_ns = schedstat.run_delay_ns()
        except (OSError, ValueError, IndexError):
            pass
    return time.perf_counter() - delay_ns * 1e-9


class BusyTime:
    """
    Totals over the serving thread's busy turns, and the recent turns' time asleep.

    ``bind()`` on the thread to watch, ``mark()`` when a turn starts, ``add(mark)`` when it
    ends, ``unbind()`` when the thread stops. ``values()`` may be read from any thread.
    """

    RECENT = 1000

    def __init__(self, *, schedstat: bool = True) -> None:
        self._use_schedstat = schedstat
        self._schedstat: Optional[_Schedstat] = None
        self.turns = 0
        self.wall_ms = 0.0
        self.on_cpu_ms = 0.0
        self.runnable_ms: Optional[float] = None  # None until a turn was split
        self.asleep_ms: Optional[float] = None
        self._recent_asleep = collections.deque(maxlen=self.RECENT)

    @property
    def split(self) -> bool:
        """Return True when the time off the CPU is split into runnable and asleep."""
        return self._schedstat is not None

    def bind(self) -> None:
        """Watch the calling thread (its schedstat, where the OS has one)."""
        self.unbind()
        if self._use_schedstat:
            schedstat = _this_thread()
            self._schedstat = schedstat if schedstat.fd is not None else None

    def unbind(self) -> None:
        self._schedstat = None

    def mark(self) -> Mark:
        """Read the clocks at the start of a turn."""
        wall, on_cpu = time.perf_counter(), time.thread_time_ns()
        if self._schedstat is None:
            return wall, on_cpu, None
        try:
            return wall, on_cpu, self._schedstat.run_delay_ns()
        except (OSError, ValueError, IndexError):
            self.unbind()
            return wall, on_cpu, None

    def add(self, start: Mark) -> float:
        """Count the turn that began at ``start``; return its wall time (ms)."""
        end = self.mark()
        wall_ms = (end[0] - start[0]) * 1e3
        on_cpu_ms = (end[1] - start[1]) * 1e-6
        self.turns += 1
        self.wall_ms += wall_ms
        self.on_cpu_ms += on_cpu_ms
        if start[2] is None or end[2] is None:
            return wall_ms
        runnable_ms = (end[2] - start[2]) * 1e-6
        asleep_ms = max(0.0, wall_ms - on_cpu_ms - runnable_ms)
        self.runnable_ms = (self.runnable_ms or 0.0) + runnable_ms
        self.asleep_ms = (self.asleep_ms or 0.0) + asleep_ms
        self._recent_asleep.append(asleep_ms)
        return wall_ms

    @classmethod
    def total(cls, parts: Iterable['BusyTime']) -> 'BusyTime':
        """Return the sum of several threads' busy times (for ``values``; not bound)."""
        total = cls(schedstat=False)
        for part in parts:
            total.turns += part.turns
            total.wall_ms += part.wall_ms
            total.on_cpu_ms += part.on_cpu_ms
            if part.runnable_ms is not None:
                total.runnable_ms = (total.runnable_ms or 0.0) + part.runnable_ms
                total.asleep_ms = (total.asleep_ms or 0.0) + part.asleep_ms
            total._recent_asleep.extend(part._recent_asleep)
        return total

    def values(self, prefix: str = 'worker') -> Dict[str, str]:
        """Diagnostic values: busy time, and the shares of it on a CPU, runnable and asleep."""
        if not self.turns:
            return {f'{prefix}_busy_turns': '0'}
        wall = self.wall_ms or 1e-9

        def share(ms: Optional[float]) -> str:
            return '' if ms is None else f'{100 * ms / wall:.1f}'

        recent = sorted(self._recent_asleep)
        values = {
            'busy_turns': str(self.turns),
            'busy_s': f'{self.wall_ms * 1e-3:.2f}',
            'on_cpu_pct': share(self.on_cpu_ms),
            'off_cpu_pct': share(max(0.0, self.wall_ms - self.on_cpu_ms)),
            'runnable_pct': share(self.runnable_ms),
            'asleep_pct': share(self.asleep_ms),
            'asleep_ms_p99': f'{recent[int(0.99 * (len(recent) - 1))]:.2f}' if recent else '',
        }
        return {f'{prefix}_{key}': value for key, value in values.items()}
