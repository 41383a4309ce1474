"""
Python's cyclic garbage collector, kept off the serving path.

A full collection scans every object the collector tracks. With torch and the ROS 2 wheels
loaded that is 340,000-400,000 objects, and one pass took 200 ms of the serving thread on our
2-core VM: eight 30 Hz streams lost 30 frames to overflowing queues (docs/serving_path.md).
What is loaded before serving (libraries, models, message types) lives as long as the process,
so it is frozen once (``gc.freeze``): later full passes scan only what serving allocates.
"""

import gc
import threading

__all__ = ['freeze_loaded_objects']

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
