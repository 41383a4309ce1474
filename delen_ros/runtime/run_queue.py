"""
How many tasks want a CPU right now, from Linux's run queues (``/proc/loadavg``).

A job with more intra-op threads than the cores nobody else wants stalls at every operator's
barrier, waiting for a thread the OS gave to another process: beside two CPU-bound processes on
2 cores, 2 threads ran the network at 14-32 ms p50 and up to 446 ms, where 1 thread ran it in
2.2-2.7 ms, as fast as alone (``bench/bench_threads_under_load.py``). So the server offers a
plan only the thread counts that fit the cores left by its own jobs and by the tasks runnable
elsewhere (ALERT chooses the resource setting for the conditions it sees), and a job on more
threads looks again before each stage: ``FreeCores``.

The fourth field of ``/proc/loadavg`` (``running/total``) counts the tasks runnable on the
whole machine at the moment of the read, the reading thread included; CPU affinity is not
looked at. Where the file is missing (not Linux) nothing is counted.
"""

import io
import os
import time
from typing import Optional, Sequence, Tuple

from .policies import thread_counts_left

__all__ = ['FreeCores', 'RunQueue']


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

    def wait_for_others(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until ``count`` tasks besides the caller are runnable; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.others(0) < count:
            if time.monotonic() >= deadline or not self.available:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._file is not None:
            self._file.close()


class FreeCores:
    """
    The thread counts a job may use: those that fit the cores nobody else wants.

    The cores left by our other jobs and by the tasks runnable elsewhere, read from the run
    queues at each plan and before each stage. ``ours``: the threads of the server's other
    running jobs. The counters say how often the tasks elsewhere narrowed a plan or a running
    job (``/diagnostics``).
    """

    def __init__(self, cores: int, run_queue: Optional[RunQueue] = None) -> None:
        if isinstance(cores, bool) or int(cores) != cores or cores < 1:
            raise ValueError(f'cores must be a positive integer, got {cores!r}')
        self.cores = int(cores)
        self.run_queue = run_queue if run_queue is not None else RunQueue()
        self.runnable_elsewhere = 0  # at the last plan: tasks wanting a CPU besides our jobs
        self.plans_narrowed = 0  # plans offered fewer thread counts for the tasks elsewhere
        self.jobs_narrowed = 0  # jobs that went on with fewer threads than planned, for them

    def for_plan(self, counts: Sequence[int], *, ours: int) -> Tuple[int, ...]:
        """Return the thread counts that fit the cores left free for a new job."""
        elsewhere = self.run_queue.others(ours)
        self.runnable_elsewhere = elsewhere
        left = thread_counts_left(counts, cores=self.cores, busy=ours + elsewhere)
        if elsewhere and left != thread_counts_left(counts, cores=self.cores, busy=ours):
            self.plans_narrowed += 1
        return left

    def for_next_stage(self, counts: Sequence[int], threads: int, *, ours: int) -> int:
        """
        Return the threads a job running on ``threads`` goes on with for its next stage.

        Its plan saw the cores free; a process started since would stall each stage. The run
        queues count the job's own pool threads, which may still spin after its last stage.
        """
        elsewhere = self.run_queue.others(ours + threads - 1)
        if not elsewhere:
            return threads
        fitting = max(thread_counts_left(counts, cores=self.cores, busy=ours + elsewhere))
        if fitting >= threads:
            return threads
        self.jobs_narrowed += 1
        return fitting
