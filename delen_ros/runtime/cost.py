"""
Predicted cost of the next stage: the profile corrected by measured latencies.

The correction is a slowdown factor (measured / profiled median) tracked by a scalar Kalman
filter, as ALERT (USENIX ATC 2020, Sec. 4.2) does to follow contention from other processes;
predictions are conservative: mean + ``sigma`` standard deviations of the factor.
"""

import collections
import math
import threading
from typing import Deque, Dict, List, NamedTuple, Optional, Tuple

from .energy import EnergyMeter, PowerModel

__all__ = ['CostModel', 'SlowdownFilter', 'StageCost']


class StageCost(NamedTuple):
    """Predicted latency and energy of running something."""

    latency_ms: float
    energy_mj: float


class SlowdownFilter:
    """
    Scalar Kalman filter of the ratio measured/profiled latency (1.0 = as profiled).

    The measurement noise is adapted from the innovations, so ``std`` covers both the
    estimate's uncertainty and the spread of single observations. With a ``window``, the
    conservative bound never goes below the largest of the last ``window`` ratios (for hard
    caps, where a Gaussian tail is too thin).
    """

    def __init__(self, *, initial: float = 1.0, variance: float = 0.25,
                 process_noise: float = 1e-3, measurement_std: float = 0.1,
                 noise_decay: float = 0.05, window: int = 0) -> None:
        if not (initial > 0 and variance >= 0 and process_noise >= 0 and measurement_std > 0
                and 0 < noise_decay <= 1 and window >= 0):
            raise ValueError('SlowdownFilter: initial, measurement_std and noise_decay must be '
                             'positive, variance, process_noise and window non-negative')
        self.window = int(window)
        # Sliding-window maximum of the last `window` ratios: (index, ratio), ratios decreasing.
        self._recent: Deque[Tuple[int, float]] = collections.deque()
        self.mean = float(initial)
        self.variance = float(variance)
        self.process_noise = float(process_noise)
        self.noise = float(measurement_std) ** 2
        self.noise_decay = float(noise_decay)
        self.count = 0

    def update(self, ratio: float) -> None:
        """Fold in one observed ratio."""
        if not (ratio > 0.0 and math.isfinite(ratio)):
            return
        prior = self.variance + self.process_noise
        innovation = ratio - self.mean
        gain = prior / (prior + self.noise)
        self.mean += gain * innovation
        self.variance = (1.0 - gain) * prior
        self.noise += self.noise_decay * (innovation * innovation - self.noise)
        self.count += 1
        if self.window:
            recent = self._recent
            while recent and recent[-1][1] <= ratio:
                recent.pop()
            recent.append((self.count, ratio))
            if recent[0][0] <= self.count - self.window:
                recent.popleft()

    @property
    def std(self) -> float:
        """Return the standard deviation of the next observation."""
        return math.sqrt(self.variance + self.noise)

    @property
    def recent_max(self) -> float:
        """Largest ratio among the last ``window`` observations (0 without a window)."""
        return self._recent[0][1] if self._recent else 0.0

    def upper(self, sigma: float) -> float:
        """Conservative slowdown: mean + sigma sd, at least the recent maximum (and 0.5)."""
        return max(self.mean + sigma * self.std, self.recent_max, 0.5)


class CostModel:
    """
    Per-stage latency and energy predictions for each thread count, learning from use.

    Two slowdown filters per thread count: one on wall latency (what deadlines see), one on
    energy relative to the nominal ``profiled median latency x active power`` (what energy
    budgets see: CPU time under a power model, the meter's reading otherwise). Under
    contention the first grows and spreads while the second, charged by CPU time, stays put.
    Energy bounds are caps, so energy predictions also cover the largest ratio of the last
    ``energy_window`` stages, plus ``energy_margin`` (a fraction) for a new worst case.
    """

    def __init__(self, profile, *, power: PowerModel, meter: Optional[EnergyMeter] = None,
                 sigma: float = 2.0, energy_window: int = 1000,
                 energy_margin: float = 0.2) -> None:
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f'sigma must be finite and >= 0, got {sigma}')
        if not (0 <= energy_margin < 10 and energy_window >= 0):
            raise ValueError(f'energy_margin must be in [0, 10) and energy_window >= 0, got '
                             f'{energy_margin} and {energy_window}')
        self.energy_window = int(energy_window)
        self.energy_margin = float(energy_margin)
        self.profile = profile
        self.power = power
        self.meter = meter or power
        self.sigma = float(sigma)
        self.num_exits = profile.num_exits
        self.thread_counts = tuple(profile.thread_counts)
        self._lock = threading.Lock()
        self._median: Dict[int, List[float]] = {}
        self._nominal_mj: Dict[int, List[float]] = {}
        self._latency: Dict[int, SlowdownFilter] = {}
        self._energy: Dict[int, SlowdownFilter] = {}
        self._latency_factor: Dict[int, float] = {}
        self._energy_factor: Dict[int, float] = {}
        for threads in self.thread_counts:
            self._add_threads(threads)

    def _add_threads(self, threads: int) -> None:
        profiled = min(self.thread_counts, key=lambda t: (abs(t - threads), t))
        median = [self.profile.stage_latency_ms(k, profiled, 'median')
                  for k in range(self.num_exits)]
        p95 = [self.profile.stage_latency_ms(k, profiled, 'p95') for k in range(self.num_exits)]
        # Seed the noise with the profile's own spread: p95 ~ median + 1.645 sd.
        spread = max(0.05, max((b / a - 1.0) / 1.645 for a, b in zip(median, p95) if a > 0))
        watts = self.power.active_w(threads)
        self._median[threads] = median
        self._nominal_mj[threads] = [m * watts for m in median]
        self._latency[threads] = SlowdownFilter(measurement_std=spread)
        self._energy[threads] = SlowdownFilter(measurement_std=spread,
                                               window=self.energy_window)
        self._latency_factor[threads] = self._latency[threads].upper(self.sigma)
        self._energy_factor[threads] = self._energy_upper(self._energy[threads])

    def _energy_upper(self, energy: SlowdownFilter) -> float:
        return energy.upper(self.sigma) * (1.0 + self.energy_margin)

    def _ensure(self, threads: int) -> None:
        if threads not in self._median:
            with self._lock:
                if threads not in self._median:
                    self._add_threads(threads)

    def slowdown(self, threads: int) -> SlowdownFilter:
        """Return the wall-latency slowdown filter of a thread count."""
        self._ensure(threads)
        return self._latency[threads]

    def energy_slowdown(self, threads: int) -> SlowdownFilter:
        """Return the energy slowdown filter of a thread count."""
        self._ensure(threads)
        return self._energy[threads]

    def stage(self, exit_index: int, threads: int) -> StageCost:
        """Conservative cost of stage ``exit_index`` (with its exit head)."""
        self._ensure(threads)
        return StageCost(self._median[threads][exit_index] * self._latency_factor[threads],
                         self._nominal_mj[threads][exit_index] * self._energy_factor[threads])

    def to_exit(self, exit_index: int, threads: int, *, start: int = 0) -> StageCost:
        """Conservative cost of stages ``start..exit_index`` run with every head."""
        self._ensure(threads)
        stages = slice(start, exit_index + 1)
        return StageCost(sum(self._median[threads][stages]) * self._latency_factor[threads],
                         sum(self._nominal_mj[threads][stages]) * self._energy_factor[threads])

    def median_ms(self, exit_index: int, threads: int) -> float:
        """Profiled median latency of one stage (with its head), uncorrected."""
        self._ensure(threads)
        return self._median[threads][exit_index]

    def expected_ms(self, exit_index: int, threads: int) -> float:
        """Profiled median latency of one stage times the mean slowdown (not conservative)."""
        self._ensure(threads)
        return self._median[threads][exit_index] * self._latency[threads].mean

    def observe_stage(self, exit_index: int, threads: int, latency_ms: float,
                      energy_mj: Optional[float] = None) -> None:
        """Learn from one stage (run with its head): its wall latency and, if known, energy."""
        self._ensure(threads)
        median = self._median[threads][exit_index]
        if median <= 0.0:
            return
        with self._lock:
            latency = self._latency[threads]
            latency.update(latency_ms / median)
            self._latency_factor[threads] = latency.upper(self.sigma)
            if energy_mj is not None:
                energy = self._energy[threads]
                energy.update(energy_mj / self._nominal_mj[threads][exit_index])
                self._energy_factor[threads] = self._energy_upper(energy)
