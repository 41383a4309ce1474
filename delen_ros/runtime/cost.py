"""
Predicted cost of the next stage: the profile corrected by measured latencies.

The correction is a slowdown factor (measured / profiled median) tracked by a scalar Kalman
filter, as ALERT (USENIX ATC 2020, Sec. 4.2) does to follow contention from other processes;
predictions are conservative: mean + ``sigma`` standard deviations of the factor. The filter
is the one of ``kalman.py`` (shared with the ALERT policies).
"""

import math
import threading
from typing import Dict, List, NamedTuple, Optional

from .energy import EnergyMeter, PowerModel
from .kalman import SlidingMax, SlowdownFilter

__all__ = ['CostModel', 'SettingCosts', 'SlidingMax', 'SlowdownFilter', 'StageCost']


class StageCost(NamedTuple):
    """Predicted latency and energy of running something."""

    latency_ms: float
    energy_mj: float


class SettingCosts:
    """
    Cost predictions for one resource setting (thread count); the executor's hot path.

    ``median_ms[k]`` / ``nominal_mj[k]``: profiled median latency of stage k (with its head)
    and that latency times the active power. ``latency`` / ``energy``: slowdown filters of
    the measured wall latency and energy against them. Energy caps are hard, so a stage's
    energy factor (``energy_factor(k)``) also covers that stage's largest ratio over its last
    ``energy_window`` runs, scaled by ``1 + energy_margin``; ``latency.upper`` is the Gaussian
    bound alone.
    """

    __slots__ = ('threads', 'median_ms', 'nominal_mj', 'latency', 'energy', 'energy_margin',
                 'energy_peak', '_peaks')

    def __init__(self, threads: int, median_ms: List[float], nominal_mj: List[float],
                 latency: SlowdownFilter, energy: SlowdownFilter, *, energy_window: int,
                 energy_margin: float) -> None:
        self.threads = threads
        self.median_ms = median_ms
        self.nominal_mj = nominal_mj
        self.latency = latency
        self.energy = energy
        self.energy_margin = energy_margin
        self._peaks = [SlidingMax(energy_window) for _ in median_ms]
        self.energy_peak = [0.0] * len(median_ms)

    def energy_factor(self, exit_index: int) -> float:
        """Return the conservative energy slowdown of one stage."""
        gaussian = self.energy.upper
        peak = self.energy_peak[exit_index]
        return (gaussian if gaussian > peak else peak) * (1.0 + self.energy_margin)

    def stage(self, exit_index: int) -> StageCost:
        """Conservative cost of stage ``exit_index`` (with its exit head)."""
        return StageCost(self.median_ms[exit_index] * self.latency.upper,
                         self.nominal_mj[exit_index] * self.energy_factor(exit_index))

    def expected(self, exit_index: int) -> StageCost:
        """Return the expected cost of stage ``exit_index``: profiled median x mean slowdown."""
        return StageCost(self.median_ms[exit_index] * self.latency.mean,
                         self.nominal_mj[exit_index] * self.energy.mean)

    def observe(self, exit_index: int, latency_ms: float,
                energy_mj: Optional[float] = None) -> None:
        """Learn from one stage run with its head: wall latency and, if known, energy."""
        self.latency.update(latency_ms / self.median_ms[exit_index])
        if energy_mj is None:
            return
        ratio = energy_mj / self.nominal_mj[exit_index]
        self.energy.update(ratio)
        if 0.0 < ratio < math.inf:
            peaks = self._peaks[exit_index]
            peaks.add(ratio)
            self.energy_peak[exit_index] = peaks.value


class CostModel:
    """
    Per-stage latency and energy predictions for each thread count, learning from use.

    Two slowdown filters per thread count: one on wall latency (what deadlines see), one on
    energy relative to the nominal ``profiled median latency x active power`` (what energy
    budgets see: CPU time under a power model, the meter's reading otherwise). Under
    contention the first grows and spreads while the second, charged by CPU time, stays put.
    Energy bounds are caps, so a stage's energy prediction also covers its largest ratio of
    its last ``energy_window`` runs, plus ``energy_margin`` (a fraction) for a new worst case.
    Updates take no lock: with several workers an observation may rarely be lost.
    """

    def __init__(self, profile, *, power: PowerModel, meter: Optional[EnergyMeter] = None,
                 sigma: float = 2.0, energy_window: int = 1000,
                 energy_margin: float = 0.3) -> None:
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f'sigma must be finite and >= 0, got {sigma}')
        if not (0 <= energy_margin < 10 and energy_window >= 1):
            raise ValueError(f'energy_margin must be in [0, 10) and energy_window >= 1, got '
                             f'{energy_margin} and {energy_window}')
        self.profile = profile
        self.power = power
        self.meter = meter or power
        self.sigma = float(sigma)
        self.energy_window = int(energy_window)
        self.energy_margin = float(energy_margin)
        self.num_exits = profile.num_exits
        self.thread_counts = tuple(profile.thread_counts)
        self._lock = threading.Lock()
        self._settings: Dict[int, SettingCosts] = {}
        for threads in self.thread_counts:
            self._settings[threads] = self._build(threads)

    def _build(self, threads: int) -> SettingCosts:
        profiled = min(self.thread_counts, key=lambda t: (abs(t - threads), t))
        median = [self.profile.stage_latency_ms(k, profiled, 'median')
                  for k in range(self.num_exits)]
        p95 = [self.profile.stage_latency_ms(k, profiled, 'p95') for k in range(self.num_exits)]
        # Seed the noise with the profile's own spread: p95 ~ median + 1.645 sd.
        spread = max(0.05, max((b / a - 1.0) / 1.645 for a, b in zip(median, p95) if a > 0))
        watts = self.power.active_w(threads)
        return SettingCosts(
            threads, median, [m * watts for m in median],
            SlowdownFilter(measurement_std=spread, sigma=self.sigma),
            SlowdownFilter(measurement_std=spread, sigma=self.sigma),
            energy_window=self.energy_window, energy_margin=self.energy_margin)

    def setting(self, threads: int) -> SettingCosts:
        """Return the costs of a thread count (built on first use for unprofiled ones)."""
        costs = self._settings.get(threads)
        if costs is None:
            with self._lock:
                costs = self._settings.get(threads)
                if costs is None:
                    costs = self._settings[threads] = self._build(threads)
        return costs

    def slowdown(self, threads: int) -> SlowdownFilter:
        """Return the wall-latency slowdown filter of a thread count."""
        return self.setting(threads).latency

    def energy_slowdown(self, threads: int) -> SlowdownFilter:
        """Return the energy slowdown filter of a thread count."""
        return self.setting(threads).energy

    def stage(self, exit_index: int, threads: int) -> StageCost:
        """Conservative cost of stage ``exit_index`` (with its exit head)."""
        return self.setting(threads).stage(exit_index)

    def to_exit(self, exit_index: int, threads: int, *, start: int = 0) -> StageCost:
        """Conservative cost of stages ``start..exit_index`` run with every head."""
        costs = self.setting(threads)
        stages = slice(start, exit_index + 1)
        energy = sum(costs.nominal_mj[k] * costs.energy_factor(k)
                     for k in range(start, exit_index + 1))
        return StageCost(sum(costs.median_ms[stages]) * costs.latency.upper, energy)

    def median_ms(self, exit_index: int, threads: int) -> float:
        """Profiled median latency of one stage (with its head), uncorrected."""
        return self.setting(threads).median_ms[exit_index]

    def expected(self, exit_index: int, threads: int) -> StageCost:
        """Return the expected cost of one stage: median x mean slowdown (not conservative)."""
        return self.setting(threads).expected(exit_index)

    def observe_stage(self, exit_index: int, threads: int, latency_ms: float,
                      energy_mj: Optional[float] = None) -> None:
        """Learn from one stage (run with its head): its wall latency and, if known, energy."""
        self.setting(threads).observe(exit_index, latency_ms, energy_mj)
