"""
``alert_plus``: ALERT with one slowdown estimate per resource setting, kept fresh.

ALERT (USENIX ATC 2020, Sec. 4.2) assumes one global slowdown for every resource setting. On
a 2-core machine under a CPU-bound competitor that breaks: 2 intra-op threads slow down about
100x (each parallel region waits for a descheduled thread), 1 thread less than 2x. A global
estimate then swings between the two and the choice oscillates.

``alert_plus`` keeps a Kalman filter (the same ALERT filter) per thread count, fed only by
requests run with it. The estimate of a setting not used lately goes stale, so it is refreshed
by cheap, bounded exploration: once a setting has gone ``explore_every`` requests unused, one
request runs with it if, under the *global* assumption (the slowdown and spread of the
setting in use), its predicted risk is acceptable and it would be chosen over the setting in
use (a setting that could not win is not worth knowing), or the setting in use cannot meet the
bounds itself (the policy is stuck on it); a probe that finds the
setting still slow doubles that setting's interval (up to ``max_backoff`` times), a probe that
finds it fine restarts its filter from that observation and resets the interval.

Latencies under contention are heavy-tailed (a preempted request takes several times the
usual), which a Gaussian with ALERT's adaptive noise underestimates. ``alert_plus`` also keeps
the last ``tail_window`` residuals (observed / predicted slowdown) per setting and takes a
deadline risk no lower than the share of them that would have missed.
"""

import collections
from dataclasses import replace
import math
from typing import Deque, Dict, Optional

from .alert import AlertPolicy, Candidate, evaluate_candidates, observed_slowdown, \
    resource_settings, SettingEstimate, within_bounds
from .base import Outcome, Plan, PolicyError, register_policy, RequestContext
from ..goals import GoalKind
from ..kalman import alert_filter, SlowdownFilter

__all__ = ['AlertPlusPolicy']


@register_policy
class AlertPlusPolicy(AlertPolicy):
    """
    ALERT with per-setting slowdown filters and bounded exploration of stale settings.

    ``explore_every``: requests a setting may go unused before a probe; ``max_backoff``: the
    largest factor the interval grows to while probes keep finding the setting slow;
    ``explore_max_miss``: largest predicted deadline risk a probe may take; ``slow_margin``:
    a probe whose slowdown exceeds the optimistic guess by this factor counts as slow;
    ``tail_window``: residuals kept per setting for the deadline risk (0: Gaussian only).
    """

    name = 'alert_plus'

    def __init__(self, *, threads: Optional[int] = None, max_miss: float = 0.01,
                 accuracy_tolerance: float = 0.002, period_ms: Optional[float] = None,
                 measurement_noise: float = 0.01, process_noise: float = 1e-3,
                 forgetting: float = 0.7, explore_every: int = 20, max_backoff: int = 16,
                 explore_max_miss: float = 0.05, slow_margin: float = 1.5,
                 tail_window: int = 100) -> None:
        super().__init__(threads=threads, max_miss=max_miss,
                         accuracy_tolerance=accuracy_tolerance, period_ms=period_ms,
                         measurement_noise=measurement_noise, process_noise=process_noise,
                         forgetting=forgetting)
        self.explore_every = self._check_count('explore_every', explore_every, 1)
        self.max_backoff = self._check_count('max_backoff', max_backoff, 1)
        self.tail_window = self._check_count('tail_window', tail_window, 0)
        self.explore_max_miss = self._check_fraction('explore_max_miss', explore_max_miss)
        if not (math.isfinite(float(slow_margin)) and float(slow_margin) >= 1.0):
            raise PolicyError(f'{self.name}: slow_margin must be >= 1, got {slow_margin!r}')
        self.slow_margin = float(slow_margin)
        self.residuals: Dict[int, Deque[float]] = {}
        self.filters: Dict[int, SlowdownFilter] = {}
        self.energy_filters: Dict[int, SlowdownFilter] = {}
        self.last_used: Dict[int, int] = {}
        self.backoff: Dict[int, int] = {}
        self.probes = 0
        self._probe: Optional[Candidate] = None
        self._probe_guess = 1.0

    def slowdown(self, threads: int) -> SlowdownFilter:
        """Return the filter of this thread count (one per setting)."""
        found = self.filters.get(threads)
        if found is None:
            found = self.filters[threads] = alert_filter(self.config.kalman)
        return found

    def energy_ratio(self, threads: int) -> SlowdownFilter:
        """Return the energy-ratio filter of this thread count (one per setting)."""
        found = self.energy_filters.get(threads)
        if found is None:
            found = self.energy_filters[threads] = alert_filter(self.config.kalman)
        return found

    def estimate(self, threads: int) -> SettingEstimate:
        """Return the prediction for one setting, with its recent residuals."""
        window = self.residuals.get(threads, ())
        return replace(super().estimate(threads), residuals=tuple(sorted(window)))

    def age(self, threads: int) -> int:
        """Return the number of requests planned since this setting last ran."""
        return self.requests - self.last_used.get(threads, 0)

    def _stale(self, context: RequestContext, in_use: int) -> Optional[int]:
        stale = [t for t in self.candidate_threads(context) if t != in_use
                 and self.age(t) >= self.explore_every * self.backoff.get(t, 1)]
        return max(stale, key=lambda t: (self.age(t), -t)) if stale else None

    def _probe_choice(self, context: RequestContext, threads: int, in_use: int, *,
                      relaxed: bool = False) -> Optional[Candidate]:
        # Optimistic guess: ALERT's global assumption (the setting in use's slowdown, spread).
        in_use_estimate = self.estimate(in_use)
        guess = in_use_estimate.slowdown
        energy = self.energy_ratio(threads)
        estimate = replace(in_use_estimate, energy_ratio=energy.mean,
                           energy_ratio_std=energy.predictive_std)
        settings = resource_settings(context.profile, context.cost.power,
                                     thread_counts=(threads,))
        if not settings:
            return None
        candidates = evaluate_candidates(
            context.profile, settings, estimates={threads: estimate},
            remaining_ms=context.remaining_ms,
            idle_w=float(getattr(context.cost.power, 'idle_w', 0.0)),
            period_ms=self.config.period_ms or context.goal.deadline_ms,
            energy_bound_mj=context.goal.energy_mj, exits=self.candidate_exits(context))
        choice = self.choose(candidates, context.goal, max_miss=self.explore_max_miss)
        if not (relaxed or within_bounds(choice, context.goal, max_miss=self.explore_max_miss)):
            return None
        self._probe_guess = guess
        return choice

    def plan(self, context: RequestContext) -> Plan:
        """Pick as ALERT does per setting, or probe a stale setting when one is due."""
        self._profile, self._power = context.profile, context.cost.power
        choice = self.choose(self.candidates(context), context.goal)
        self.requests += 1
        self._probe = None
        stale = self._stale(context, choice.threads)
        if stale is not None:
            # Probe a setting that, as optimistically predicted, would be chosen; or, while
            # the setting in use cannot meet the bounds either (stuck), whatever it offers.
            stuck = not within_bounds(choice, context.goal, max_miss=self.config.max_miss,
                                      accuracy=context.goal.kind is GoalKind.ACCURACY)
            probe = self._probe_choice(context, stale, choice.threads, relaxed=stuck)
            if probe is not None and (stuck or self.choose([choice, probe],
                                                           context.goal) is probe):
                choice = self._probe = probe
                self.probes += 1
        self.last_choice = choice
        self.last_used[choice.threads] = self.requests
        return Plan(threads=choice.threads, target_exit=choice.exit_index)

    def observe(self, outcome: Outcome) -> None:
        """Update the filter of the setting that ran; adapt its probe interval."""
        self.observe_energy(outcome)
        ratio = observed_slowdown(outcome, self._profile)
        if ratio is None:
            return
        probe, self._probe = self._probe, None
        if probe is None or probe.threads != outcome.threads:
            slowdown = self.slowdown(outcome.threads)
            if self.tail_window:
                window = self.residuals.get(outcome.threads)
                if window is None:
                    window = self.residuals[outcome.threads] = collections.deque(
                        maxlen=self.tail_window)
                window.append(ratio / slowdown.mean)
            slowdown.update(ratio)
        elif ratio > self.slow_margin * self._probe_guess:
            self.slowdown(outcome.threads).update(ratio)
            self.backoff[outcome.threads] = min(2 * self.backoff.get(outcome.threads, 1),
                                                self.max_backoff)
        else:
            # The setting is fine again: what it learned before (level, tails) is obsolete.
            self.filters[outcome.threads] = alert_filter(
                replace(self.config.kalman, initial=ratio,
                        initial_variance=self.config.kalman.measurement_noise))
            self.residuals.pop(outcome.threads, None)
            self.backoff[outcome.threads] = 1

    def params(self):
        """Parameters that differ from the defaults."""
        params = super().params()
        for key, value, default in (('explore_every', self.explore_every, 20),
                                    ('max_backoff', self.max_backoff, 16),
                                    ('explore_max_miss', self.explore_max_miss, 0.05),
                                    ('slow_margin', self.slow_margin, 1.5),
                                    ('tail_window', self.tail_window, 100)):
            if value != default:
                params[key] = value
        return params
