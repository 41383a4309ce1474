"""
How many tasks want a CPU right now, from Linux's run queues (``/proc/loadavg``).

A job with more intra-op threads than the cores nobody else wants stalls at every operator's
barrier, waiting for a thread the OS gave to another process: beside two CPU-bound processes on
2 cores, 2 threads ran the network at 14-32 ms p50 and up to 446 ms, where 1 thread ran it in
2.2-2.7 ms, as fast as alone (``bench/bench_threads_under_load.py``). So the server offers a
plan only the thread counts that fit the cores left by its own jobs and by the tasks runnable
elsewhere (ALERT chooses the resource setting for the conditions it sees), and a job on more
threads looks again before each stage.

The fourth field of ``/proc/loadavg`` (``running/total``) counts the tasks runnable on the
whole machine at the moment of the read, the reading thread included; CPU affinity is not
looked at. Where the file is missing (not Linux) nothing is counted.
"""

import io
import os
from typing import Optional

__all__ = ['RunQueue']


class RunQueue:
    """Reads the number of runnable tasks on the machine; cheap enough for every plan (~2 µs)."""

    def __init__(self, path: str = '/proc/loadavg') -> None:
        self.read_errors = 0
        try:  # unbuffered: every read is the kernel's count now; closed with the object
            self._file: Optional[io.FileIO] = io.FileIO(path, 'r')
        except OSError:
            self._file = None

    @property
    def available(self) -> bool:
        """Return True when the run queues can be read here."""
        return self._file is not None

    def runnable(self) -> Optional[int]:
        """Return the tasks runnable now, the caller included; None where unknown."""
        if self._file is None:
            return None
        try:
            fields = os.pread(self._file.fileno(), 128, 0).split()
            return int(fields[3].split(b'/')[0])
        except (OSError, ValueError, IndexError):
            self.read_errors += 1
            return None

    def others(self, own: int) -> int:
        """Return the runnable tasks besides the caller and ``own`` threads of its process."""
        runnable = self.runnable()
        return 0 if runnable is None else max(0, runnable - 1 - own)

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._file is not None:
            self._file.close()
