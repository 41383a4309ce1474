"""
Predicted cost of the next stage: the profile corrected by measured latencies.

The correction is a slowdown factor (measured / profiled median latency) tracked by a scalar
Kalman filter, as ALERT (USENIX ATC 2020, Sec. 4.2) does to follow contention from other
processes; predictions are conservative: mean + ``sigma`` standard deviations of the factor.
"""

import math
import threading
from typing import Dict, List, NamedTuple, Optional

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
    estimate's uncertainty and the spread of single observations.
    """

    def __init__(self, *, initial: float = 1.0, variance: float = 0.25,
                 process_noise: float = 1e-3, measurement_std: float = 0.1,
                 noise_decay: float = 0.05) -> None:
        if not (initial > 0 and variance >= 0 and process_noise >= 0 and measurement_std > 0
                and 0 < noise_decay <= 1):
            raise ValueError('SlowdownFilter: initial, measurement_std and noise_decay must be '
                             'positive, variance and process_noise non-negative')
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

    @property
    def std(self) -> float:
        """Return the standard deviation of the next observation."""
        return math.sqrt(self.variance + self.noise)

    def upper(self, sigma: float) -> float:
        """Conservative slowdown: mean + sigma standard deviations (never below 0.5)."""
        return max(self.mean + sigma * self.std, 0.5)


class CostModel:
    """
    Per-stage latency and energy predictions for each thread count, learning from use.

    Energy predictions are latency x power, the power coming from the platform's
    ``PowerModel`` and, when a hardware meter is in use, from the power it measured.
    """

    def __init__(self, profile, *, power: PowerModel, meter: Optional[EnergyMeter] = None,
                 sigma: float = 2.0) -> None:
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f'sigma must be finite and >= 0, got {sigma}')
        self.profile = profile
        self.power = power
        self.meter = meter or power
        self.sigma = float(sigma)
        self.num_exits = profile.num_exits
        self.thread_counts = tuple(profile.thread_counts)
        self._lock = threading.Lock()
        self._median: Dict[int, List[float]] = {}
        self._filters: Dict[int, SlowdownFilter] = {}
        self._factor: Dict[int, float] = {}
        self._watts: Dict[int, float] = {}
        for threads in self.thread_counts:
            self._add_threads(threads)

    def _add_threads(self, threads: int) -> None:
        profiled = min(self.thread_counts, key=lambda t: (abs(t - threads), t))
        median = [self.profile.stage_latency_ms(k, profiled, 'median')
                  for k in range(self.num_exits)]
        p95 = [self.profile.stage_latency_ms(k, profiled, 'p95') for k in range(self.num_exits)]
        # Seed the noise with the profile's own spread: p95 ~ median + 1.645 sd.
        spread = max((b / a - 1.0) / 1.645 for a, b in zip(median, p95) if a > 0)
        self._median[threads] = median
        self._filters[threads] = SlowdownFilter(measurement_std=max(spread, 0.05))
        self._factor[threads] = self._filters[threads].upper(self.sigma)
        self._watts[threads] = self.power.active_w(threads)

    def _ensure(self, threads: int) -> None:
        if threads not in self._median:
            with self._lock:
                if threads not in self._median:
                    self._add_threads(threads)

    def slowdown(self, threads: int) -> SlowdownFilter:
        """Return the slowdown filter of a thread count."""
        self._ensure(threads)
        return self._filters[threads]

    def watts(self, threads: int) -> float:
        """Power used for energy predictions at this thread count."""
        self._ensure(threads)
        return self._watts[threads]

    def stage(self, exit_index: int, threads: int) -> StageCost:
        """Conservative cost of stage ``exit_index`` (with its exit head)."""
        self._ensure(threads)
        latency = self._median[threads][exit_index] * self._factor[threads]
        return StageCost(latency, latency * self._watts[threads])

    def stage_latency_ms(self, exit_index: int, threads: int) -> float:
        """Conservative latency of one stage (with its head), in ms."""
        self._ensure(threads)
        return self._median[threads][exit_index] * self._factor[threads]

    def to_exit(self, exit_index: int, threads: int, *, start: int = 0) -> StageCost:
        """Conservative cost of stages ``start..exit_index`` run with every head."""
        self._ensure(threads)
        latency = sum(self._median[threads][start:exit_index + 1]) * self._factor[threads]
        return StageCost(latency, latency * self._watts[threads])

    def median_ms(self, exit_index: int, threads: int) -> float:
        """Profiled median latency of one stage (with its head), uncorrected."""
        self._ensure(threads)
        return self._median[threads][exit_index]

    def expected_ms(self, exit_index: int, threads: int) -> float:
        """Profiled median latency of one stage times the mean slowdown (not conservative)."""
        self._ensure(threads)
        return self._median[threads][exit_index] * self._filters[threads].mean

    def observe_stage(self, exit_index: int, threads: int, measured_ms: float,
                      *, with_head: bool = True) -> None:
        """Learn from one stage's measured latency (stages run without their head are skipped)."""
        if not with_head:
            return
        self._ensure(threads)
        median = self._median[threads][exit_index]
        if median <= 0.0:
            return
        with self._lock:
            slowdown = self._filters[threads]
            slowdown.update(measured_ms / median)
            self._factor[threads] = slowdown.upper(self.sigma)

    def observe_power(self, threads: int, compute_ms: float, energy_mj: float) -> None:
        """Learn the average power from a hardware meter's reading of a request."""
        if compute_ms <= 0.5 or energy_mj <= 0.0 or not self.meter.measured:
            return
        self._ensure(threads)
        with self._lock:
            self._watts[threads] += 0.1 * (energy_mj / compute_ms - self._watts[threads])
