"""
Source stamps in ROS time, served in monotonic time (no ROS import).

A frame's age on arrival is measured in ROS time (``now - header.stamp``, so it follows
``/clock`` with ``use_sim_time``); from then on the runtime measures queueing and compute on
the monotonic clock, so a coarse or slow ``/clock`` cannot shrink the latency it reports.
A zero stamp (a driver that does not stamp) means "received now"; a stamp in the future
(clock skew between hosts) is clamped to now; a stamp already older than the bound is
served late. Each of these is counted.
"""

import collections
from dataclasses import dataclass
import threading
import time
from typing import Callable, Dict, Optional

__all__ = ['FrameArrival', 'FrameClock', 'STAMP_CHECKS']

STAMP_CHECKS = ('zero', 'future', 'stale')
_KEPT = 512


@dataclass(frozen=True)
class FrameArrival:
    """One frame on arrival: its stamp on the runtime's clock and what was odd about it."""

    runtime_stamp_s: float
    age_ms: float
    check: str = ''
    label: Optional[int] = None


class FrameClock:
    """
    One tenant's translation of source stamps into the runtime's monotonic time base.

    Ground truth arrives keyed by the source stamp, before or after its image: ``label``
    returns the runtime stamp to record it under, or keeps it for the image still to come.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen: 'collections.OrderedDict[int, float]' = collections.OrderedDict()
        self._early: 'collections.OrderedDict[int, int]' = collections.OrderedDict()
        self.counts: Dict[str, int] = dict.fromkeys(STAMP_CHECKS, 0)

    def arrival(self, stamp_ns: int, now_ns: int, *,
                bound_ms: Optional[float]) -> FrameArrival:
        """Place a frame stamped ``stamp_ns`` that arrives at ROS time ``now_ns``."""
        mono = self._monotonic()
        if stamp_ns == 0:
            check, age_ms = 'zero', 0.0
        elif stamp_ns > now_ns:
            check, age_ms = 'future', 0.0
        else:
            age_ms = (now_ns - stamp_ns) * 1e-6
            check = 'stale' if bound_ms is not None and age_ms > bound_ms else ''
        runtime_stamp = mono - age_ms * 1e-3
        with self._lock:
            if check:
                self.counts[check] += 1
            label = self._early.pop(stamp_ns, None)
            self._seen[stamp_ns] = runtime_stamp
            _trim(self._seen)
        return FrameArrival(runtime_stamp, age_ms, check, label)

    def label(self, stamp_ns: int, label: int) -> Optional[float]:
        """Runtime stamp of the frame a label belongs to; None: kept until that frame comes."""
        with self._lock:
            runtime_stamp = self._seen.get(stamp_ns)
            if runtime_stamp is None:
                self._early[stamp_ns] = int(label)
                _trim(self._early)
            return runtime_stamp


def _trim(items: collections.OrderedDict) -> None:
    while len(items) > _KEPT:
        items.popitem(last=False)
