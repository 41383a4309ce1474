"""
A real co-located CPU load: one busy-looping process per core, started and stopped on cue.

Each competitor is a separate ``python -c`` process spinning on arithmetic, so it competes
for the cores exactly as another program would (no GIL shared with the server). Every
process also ends by itself after ``max_seconds``, so a crashed evaluation cannot leave
hogs behind; ``stop`` ends only the processes this object started, by their pid.
"""

import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

__all__ = ['CpuLoad']

_BUSY_LOOP = (
    'import sys, time\n'
    'end = time.monotonic() + float(sys.argv[1])\n'
    'x = 0\n'
    'while time.monotonic() < end:\n'
    '    for i in range(10000):\n'
    '        x = (x * 31 + i) % 1000003\n'
)


class CpuLoad:
    """
    ``workers`` CPU-bound processes (default: one per core), each living at most ``max_seconds``.

    Use as a context manager, or call ``start``/``stop``; ``stop`` is idempotent.
    """

    def __init__(self, *, workers: Optional[int] = None, max_seconds: float = 120.0) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or int(workers) != workers or workers < 1:
            raise ValueError(f'workers must be a positive integer, got {workers!r}')
        if not 0.0 < max_seconds <= 3600.0:
            raise ValueError(f'max_seconds must be in (0, 3600], got {max_seconds!r}')
        self.workers = int(workers)
        self.max_seconds = float(max_seconds)
        self._processes: List[subprocess.Popen] = []

    @property
    def running(self) -> bool:
        """Return True while any competitor started here is alive."""
        return any(p.poll() is None for p in self._processes)

    @property
    def pids(self) -> List[int]:
        """Return the process ids of the live competitors."""
        return [p.pid for p in self._processes if p.poll() is None]

    def start(self) -> 'CpuLoad':
        """Start the competitors (no-op when already running)."""
        if self.running:
            return self
        self._processes = [
            subprocess.Popen([sys.executable, '-c', _BUSY_LOOP, repr(self.max_seconds)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, close_fds=True)
            for _ in range(self.workers)]
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """End the competitors started here: SIGTERM, then SIGKILL after ``timeout`` s."""
        processes, self._processes = self._processes, []
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> 'CpuLoad':
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, '_processes', None):
            self.stop(timeout=0.5)
