"""
Python's cyclic garbage collector, kept off the serving path.

A full collection scans every object the collector tracks. With torch and the ROS 2 wheels
loaded that is 340,000-400,000 objects, and one pass took 200 ms of the serving thread on our
2-core VM: eight 30 Hz streams lost 30 frames to overflowing queues (docs/serving_path.md).
What is loaded before serving (libraries, models, message types) lives as long as the process,
so it is frozen once (``gc.freeze``): later full passes scan only what serving allocates.

The young generations' passes still took 0.2-4 ms each, wherever an allocation crossed the
threshold: inside a frame's stages as often as not. ``IdleCollector`` moves them to the time
the serving thread would wait for frames anyway (docs/serving_path.md).
"""

import gc
import threading
import time
from typing import Optional

__all__ = ['IdleCollector', 'freeze_loaded_objects']

_LOCK = threading.Lock()
_FROZEN = threading.Event()


def freeze_loaded_objects() -> int:
    """
    Collect once, then move every tracked object out of the collector's reach.

    Return how many objects were frozen; 0 after the first call of the process (objects
    allocated later may be garbage of a stopped server: they stay collectable).
    """
    with _LOCK:
        if _FROZEN.is_set():
            return 0
        gc.collect()
        gc.freeze()
        _FROZEN.set()
        return gc.get_freeze_count()


class IdleCollector:
    """
    Automatic collection off while a serving thread runs; its passes run when it goes idle.

    ``hold()`` / ``release()`` bracket a serving thread (automatic collection stays off for the
    process while any holds it, and comes back as it was after the last). Before it waits for
    frames the thread calls ``collect(idle=True)``: a pass runs when the collector's own
    thresholds say one is due, with the generation it would have chosen. Between jobs it calls
    ``collect(idle=False)``, which runs a pass only when ``OVERDUE`` times the threshold was
    allocated (a thread that never goes idle still collects). A full pass runs at most every
    ``full_interval_s``: CPython also skips most of the ones its counters ask for.
    """

    OVERDUE = 4
    _holders = 0
    _disabled_by_us = False
    _class_lock = threading.Lock()

    def __init__(self, *, full_interval_s: float = 10.0) -> None:
        if not full_interval_s >= 0.0:
            raise ValueError(f'full_interval_s must be >= 0, got {full_interval_s!r}')
        self.full_interval_s = float(full_interval_s)
        self.idle_passes = 0
        self.overdue_passes = 0
        self.longest_pass_ms = 0.0
        self._last_full = time.monotonic()

    @classmethod
    def hold(cls) -> None:
        """Turn automatic collection off for the process (first holder only)."""
        with cls._class_lock:
            if cls._holders == 0 and gc.isenabled():
                gc.disable()
                cls._disabled_by_us = True
            cls._holders += 1

    @classmethod
    def release(cls) -> None:
        """Give automatic collection back after the last holder, if ``hold`` took it."""
        with cls._class_lock:
            cls._holders = max(0, cls._holders - 1)
            if cls._holders == 0 and cls._disabled_by_us:
                gc.enable()
                cls._disabled_by_us = False

    def collect(self, *, idle: bool) -> Optional[int]:
        """Run the pass that is due, if one is; return its generation (None: none ran)."""
        young, middle, old = gc.get_count()
        first, second, third = gc.get_threshold()
        if first <= 0 or young < (first if idle else first * self.OVERDUE):
            return None
        generation = 0
        if middle >= second:
            generation = 1
            now = time.monotonic()
            if old >= third and now - self._last_full >= self.full_interval_s:
                generation = 2
                self._last_full = now
        # Counted as it starts: weakref callbacks run inside the pass and may wake other threads.
        if idle:
            self.idle_passes += 1
        else:
            self.overdue_passes += 1
        start = time.perf_counter()
        gc.collect(generation)
        self.longest_pass_ms = max(self.longest_pass_ms, (time.perf_counter() - start) * 1e3)
        return generation
