"""
ALERT: choose the exit and the resource setting together from a Kalman-filtered slowdown.

ALERT (Wan et al., USENIX ATC 2020, Sec. 4) keeps one *global slowdown factor* xi (observed /
profiled latency) estimated by a scalar Kalman filter whose process noise adapts to recent
corrections. For every request it predicts, for each (exit x resource setting) pair, the
probability of meeting the deadline (xi Gaussian), the expected accuracy (a missed deadline
counts as a wrong answer) and the energy (active power x time plus idle power for the rest of
the period; the active part is corrected by a filtered measured/nominal energy ratio so that
it follows the runtime's meter), then picks per the goal:

- latency or energy goals: maximize expected accuracy within the latency and energy bounds;
- accuracy goals: minimize energy within the latency and accuracy bounds.

Resource settings are the profile's intra-op thread counts (those the platform's power model
lists); the chosen one is applied for real through ``Plan.threads``. ``app_only`` and
``sys_only`` are the same machinery restricted to exits at all threads, and to thread counts
at the last exit (ALERT's App-only and Sys-only baselines, Sec. 5).
"""

import bisect
from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Sequence, Tuple

from .base import Outcome, Plan, Policy, PolicyError, register_policy, RequestContext
from ..conditions import ExitStatus
from ..goals import Goal, GoalKind
from ..kalman import alert_filter, KalmanConfig, SlowdownFilter

__all__ = ['AlertConfig', 'AlertPolicy', 'AppOnlyPolicy', 'Candidate', 'KalmanConfig',
           'ResourceSetting', 'SettingEstimate', 'SysOnlyPolicy',
           'choose_candidate', 'deadline_probability', 'evaluate_candidates',
           'nominal_energy_mj', 'observed_slowdown', 'profiled_latency_ms',
           'resource_settings', 'within_bounds']


@dataclass(frozen=True)
class ResourceSetting:
    """One resource setting: intra-op threads and the active power drawn with them."""

    threads: int
    active_w: float


@dataclass(frozen=True)
class SettingEstimate:
    """
    What a policy predicts for one resource setting.

    ``slowdown`` and ``slowdown_std``: mean and spread of one request's latency slowdown xi;
    ``energy_ratio`` and ``energy_ratio_std``: the same for measured / nominal energy,
    nominal being active power x profiled time (1.0 until measured; the ratio follows the
    runtime's meter, e.g. its CPU-time charging). ``residuals``: recent observed / predicted
    slowdowns, sorted; when there are enough, the deadline risk also counts them (see
    ``deadline_probability``).
    """

    slowdown: float
    slowdown_std: float
    energy_ratio: float = 1.0
    energy_ratio_std: float = 0.0
    residuals: Tuple[float, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """
    Predictions for one (exit, resource setting) pair of one request.

    ``latency_ms`` is the expected compute latency (mean slowdown x profiled latency);
    ``energy_mj`` ALERT's energy over the period (active + idle for the rest of it);
    ``active_energy_mj`` the active part alone, what the runtime meters per request;
    ``energy_probability`` the chance that part stays within the goal's energy bound.
    """

    exit_index: int
    threads: int
    profiled_ms: float
    latency_ms: float
    deadline_probability: float
    expected_accuracy: float
    energy_mj: float
    active_energy_mj: float
    energy_probability: float = 1.0


@dataclass(frozen=True)
class AlertConfig:
    """
    Behaviour of the ALERT policies apart from the filter.

    ``max_miss``: largest predicted chance of missing the deadline a choice may take
    (1.0 leaves only ALERT's expected-accuracy term); ``accuracy_tolerance``: expected
    accuracies this close to the best are ties, settled by energy; ``period_ms``: period over
    which idle power is charged (None: the goal's deadline, else no idle term).
    """

    max_miss: float = 0.01
    accuracy_tolerance: float = 0.002
    period_ms: Optional[float] = None
    kalman: KalmanConfig = KalmanConfig()

    def __post_init__(self):
        if not 0.0 <= self.max_miss <= 1.0:
            raise ValueError(f'max_miss must be in [0, 1], got {self.max_miss}')
        if not 0.0 <= self.accuracy_tolerance <= 1.0:
            raise ValueError(f'accuracy_tolerance must be in [0, 1], got '
                             f'{self.accuracy_tolerance}')
        if self.period_ms is not None and not (math.isfinite(self.period_ms)
                                               and self.period_ms > 0.0):
            raise ValueError(f'period_ms must be positive and finite, got {self.period_ms}')


MIN_RESIDUALS = 30


def deadline_probability(remaining_ms: float, profiled_ms: float, mean: float, std: float,
                         residuals: Sequence[float] = ()) -> float:
    """
    Return P(xi x profiled <= remaining) with xi ~ N(mean, std^2).

    With at least ``MIN_RESIDUALS`` sorted ``residuals`` (observed / predicted slowdowns),
    never more than the fraction of them that would have fit: heavy tails (a preempted
    request takes several times the usual) that a Gaussian misses. Used for energy bounds
    too: P(ratio x nominal energy <= bound).
    """
    if math.isinf(remaining_ms) and remaining_ms > 0:
        return 1.0
    if remaining_ms <= 0.0 or profiled_ms <= 0.0:
        return 0.0 if remaining_ms <= 0.0 else 1.0
    if std <= 0.0:
        gaussian = 1.0 if mean * profiled_ms <= remaining_ms else 0.0
    else:
        z = (remaining_ms / profiled_ms - mean) / std
        gaussian = 0.5 * math.erfc(-z / math.sqrt(2.0))
    if len(residuals) < MIN_RESIDUALS or mean <= 0.0:
        return gaussian
    fitting = bisect.bisect_right(residuals, remaining_ms / (profiled_ms * mean))
    return min(gaussian, fitting / len(residuals))


def profiled_latency_ms(profile, exit_index: int, threads: int) -> float:
    """Profiled median latency of the plain path to an exit (what ``Plan.target_exit`` runs)."""
    return profile.exit_latency_ms(exit_index, threads, 'median')


def resource_settings(profile, power, *,
                      thread_counts: Optional[Sequence[int]] = None) -> List[ResourceSetting]:
    """
    Return the resource settings: profiled thread counts with the power model's active power.

    ``power`` is the runtime's PowerModel (``CostModel.power``), or anything with
    ``active_w(threads)``.
    """
    counts = tuple(thread_counts or profile.thread_counts)
    return [ResourceSetting(threads=int(t), active_w=float(power.active_w(int(t))))
            for t in counts if t in profile.thread_counts]


def evaluate_candidates(profile, settings: Sequence[ResourceSetting], *,
                        estimates: Dict[int, SettingEstimate], remaining_ms: float,
                        idle_w: float, period_ms: Optional[float],
                        energy_bound_mj: Optional[float] = None,
                        exits: Optional[Sequence[int]] = None) -> List[Candidate]:
    """Predict every (exit x setting) pair from each setting's estimate (ALERT Sec. 4.3)."""
    exits = range(profile.num_exits) if exits is None else exits
    candidates = []
    for setting in settings:
        estimate = estimates[setting.threads]
        for exit_index in exits:
            profiled = profiled_latency_ms(profile, exit_index, setting.threads)
            latency = estimate.slowdown * profiled
            probability = deadline_probability(remaining_ms, profiled, estimate.slowdown,
                                               estimate.slowdown_std, estimate.residuals)
            nominal = setting.active_w * profiled  # W x ms = mJ
            active = nominal * estimate.energy_ratio
            idle = idle_w * max(period_ms - latency, 0.0) if period_ms else 0.0
            within_energy = 1.0 if energy_bound_mj is None else deadline_probability(
                energy_bound_mj, nominal, estimate.energy_ratio, estimate.energy_ratio_std)
            candidates.append(Candidate(
                exit_index=exit_index, threads=setting.threads, profiled_ms=profiled,
                latency_ms=latency, deadline_probability=probability,
                # Sec. 4.3: a missed deadline counts as a wrong answer.
                expected_accuracy=profile.exit_accuracy[exit_index] * probability,
                energy_mj=active + idle, active_energy_mj=active,
                energy_probability=within_energy))
    return candidates


def within_bounds(candidate: Candidate, goal: Goal, *, max_miss: float,
                  accuracy: bool = False) -> bool:
    """
    Return True when a pair meets the goal's deadline and energy bound w.p. >= 1 - max_miss.

    With ``accuracy``, its expected accuracy must also reach the goal's accuracy bound.
    """
    if goal.deadline_ms is not None and candidate.deadline_probability < 1.0 - max_miss:
        return False
    if goal.energy_mj is not None and candidate.energy_probability < 1.0 - max_miss:
        return False
    if accuracy and goal.min_accuracy is not None \
            and candidate.expected_accuracy < goal.min_accuracy:
        return False
    return True


def _most_accurate(candidates: Sequence[Candidate], tolerance: float) -> Candidate:
    best = max(c.expected_accuracy for c in candidates)
    near = [c for c in candidates if c.expected_accuracy >= best - tolerance]
    return min(near, key=lambda c: (c.energy_mj, -c.expected_accuracy, c.threads))


def _best_effort(candidates: Sequence[Candidate]) -> Candidate:
    return max(candidates, key=lambda c: (c.deadline_probability * c.energy_probability,
                                          c.expected_accuracy, -c.latency_ms, -c.threads))


def _least_energy(candidates: Sequence[Candidate]) -> Candidate:
    return min(candidates, key=lambda c: (c.energy_mj, -c.expected_accuracy, c.threads))


def choose_candidate(candidates: Sequence[Candidate], goal: Goal, *, max_miss: float,
                     accuracy_tolerance: float = 0.0) -> Candidate:
    """
    Choose among predicted pairs as ALERT does (Sec. 4.3).

    Accuracy goals: least energy among the pairs within every bound. Latency and energy
    goals: most expected accuracy among the pairs within the latency and energy bounds, where
    pairs within ``accuracy_tolerance`` of the best count as ties and go to the least energy
    (else a 1e-6 gain in deadline probability would always outbid energy). Remaining ties go
    to more expected accuracy, then fewer threads. When no pair is within the bounds: the
    likeliest to meet the deadline and the energy bound together, then the most expected
    accuracy, then the faster.
    """
    if not candidates:
        raise PolicyError('alert: no (exit, resource setting) pair to choose from')
    if goal.kind is GoalKind.ACCURACY:
        feasible = [c for c in candidates
                    if within_bounds(c, goal, max_miss=max_miss, accuracy=True)]
        if feasible:
            return _least_energy(feasible)
    else:
        feasible = [c for c in candidates if within_bounds(c, goal, max_miss=max_miss)]
        if feasible:
            return _most_accurate(feasible, accuracy_tolerance)
    return _best_effort(candidates)


@register_policy
class AlertPolicy(Policy):
    """ALERT with one global slowdown for every resource setting (Sec. 4)."""

    name = 'alert'

    def __init__(self, *, threads: Optional[int] = None, max_miss: float = 0.01,
                 accuracy_tolerance: float = 0.002, period_ms: Optional[float] = None,
                 measurement_noise: float = 0.01, process_noise: float = 1e-3,
                 forgetting: float = 0.7) -> None:
        super().__init__(threads=threads)
        try:
            self.config = AlertConfig(
                max_miss=float(max_miss), accuracy_tolerance=float(accuracy_tolerance),
                period_ms=None if period_ms is None else float(period_ms),
                kalman=KalmanConfig(measurement_noise=float(measurement_noise),
                                    process_noise_floor=float(process_noise),
                                    forgetting=float(forgetting)))
        except (TypeError, ValueError) as error:
            raise PolicyError(f'{self.name}: {error}') from None
        self.filter = alert_filter(self.config.kalman)
        self.energy_filter = alert_filter(self.config.kalman)
        self.last_choice: Optional[Candidate] = None
        self.requests = 0
        self._profile = None
        self._power = None

    def attach(self, profile) -> None:
        """Remember the profile measured latencies are compared with."""
        self._profile = profile

    # -- what each variant may choose from -------------------------------------------------

    def candidate_threads(self, context: RequestContext) -> Tuple[int, ...]:
        """Thread counts this policy may choose (all profiled ones, or the fixed one)."""
        if self.threads is not None:
            return (self.threads,)
        return tuple(context.thread_counts)

    def candidate_exits(self, context: RequestContext) -> Sequence[int]:
        """Return the exits this policy may choose (all of them)."""
        return range(context.num_exits)

    def slowdown(self, threads: int) -> SlowdownFilter:
        """Return the latency slowdown filter of a setting (one global filter in ALERT)."""
        return self.filter

    def energy_ratio(self, threads: int) -> SlowdownFilter:
        """Return the measured/nominal energy filter of a setting (global in ALERT)."""
        return self.energy_filter

    def estimate(self, threads: int) -> SettingEstimate:
        """Return the current prediction for one setting."""
        slowdown, energy = self.slowdown(threads), self.energy_ratio(threads)
        return SettingEstimate(slowdown=slowdown.mean, slowdown_std=slowdown.predictive_std,
                               energy_ratio=energy.mean, energy_ratio_std=energy.predictive_std)

    # -- Policy interface ------------------------------------------------------------------

    def candidates(self, context: RequestContext) -> List[Candidate]:
        """Predictions for every pair this policy may choose, for this request."""
        profile = context.profile
        settings = resource_settings(profile, context.cost.power,
                                     thread_counts=self.candidate_threads(context))
        if not settings:
            raise PolicyError(f'{self.name}: none of the thread counts '
                              f'{self.candidate_threads(context)} is profiled')
        estimates = {setting.threads: self.estimate(setting.threads) for setting in settings}
        period = self.config.period_ms or context.goal.deadline_ms
        return evaluate_candidates(
            profile, settings, estimates=estimates, remaining_ms=context.remaining_ms,
            idle_w=float(getattr(context.cost.power, 'idle_w', 0.0)), period_ms=period,
            energy_bound_mj=context.goal.energy_mj, exits=self.candidate_exits(context))

    def choose(self, candidates: Sequence[Candidate], goal: Goal, *,
               max_miss: Optional[float] = None) -> Candidate:
        """Choose among predicted pairs with this policy's settings (``choose_candidate``)."""
        return choose_candidate(
            candidates, goal, max_miss=self.config.max_miss if max_miss is None else max_miss,
            accuracy_tolerance=self.config.accuracy_tolerance)

    def plan(self, context: RequestContext) -> Plan:
        """Pick the (exit, threads) pair per the goal and run straight to that exit."""
        self._profile, self._power = context.profile, context.cost.power
        choice = self.choose(self.candidates(context), context.goal)
        self.last_choice = choice
        self.requests += 1
        return Plan(threads=choice.threads, target_exit=choice.exit_index)

    def should_stop(self, status: ExitStatus) -> bool:
        """Stop at the planned exit (or at the last one)."""
        target = self.last_choice.exit_index if self.last_choice else status.num_exits - 1
        return status.is_last or status.exit_index >= target

    def observe(self, outcome: Outcome) -> None:
        """Update the filters of the setting that ran from its measured latency and energy."""
        ratio = observed_slowdown(outcome, self._profile)
        if ratio is not None:
            self.slowdown(outcome.threads).update(ratio)
        self.observe_energy(outcome)

    def observe_energy(self, outcome: Outcome) -> None:
        """Update the energy ratio of the setting that ran."""
        nominal = nominal_energy_mj(outcome, self._profile, self._power)
        if nominal:
            self.energy_ratio(outcome.threads).update(outcome.energy_mj / nominal)

    def params(self):
        """Parameters that differ from the defaults."""
        params = super().params()
        defaults = AlertConfig()
        if self.config.max_miss != defaults.max_miss:
            params['max_miss'] = self.config.max_miss
        if self.config.accuracy_tolerance != defaults.accuracy_tolerance:
            params['accuracy_tolerance'] = self.config.accuracy_tolerance
        if self.config.period_ms is not None:
            params['period_ms'] = self.config.period_ms
        kalman, base = self.config.kalman, defaults.kalman
        for key, value, default in (
                ('measurement_noise', kalman.measurement_noise, base.measurement_noise),
                ('process_noise', kalman.process_noise_floor, base.process_noise_floor),
                ('forgetting', kalman.forgetting, base.forgetting)):
            if value != default:
                params[key] = value
        return params


def _profiled_ms(outcome: Outcome, profile) -> Optional[float]:
    if profile is None:
        return None
    try:
        if tuple(outcome.exits_evaluated) == (outcome.exit_index,):
            profiled = profiled_latency_ms(profile, outcome.exit_index, outcome.threads)
        else:
            profiled = profile.progressive_latency_ms(outcome.exit_index, outcome.threads)
    except (IndexError, KeyError):
        return None
    return profiled if profiled > 0.0 else None


def observed_slowdown(outcome: Outcome, profile) -> Optional[float]:
    """Return measured / profiled compute latency of a served request (None when unknown)."""
    profiled = _profiled_ms(outcome, profile)
    if profiled is None or outcome.compute_ms <= 0.0:
        return None
    return outcome.compute_ms / profiled


def nominal_energy_mj(outcome: Outcome, profile, power) -> Optional[float]:
    """Return active power x profiled latency of what a request ran (None when unknown)."""
    profiled = _profiled_ms(outcome, profile)
    if profiled is None or power is None or not outcome.energy_mj > 0.0:
        return None
    return power.active_w(outcome.threads) * profiled


@register_policy
class AppOnlyPolicy(AlertPolicy):
    """Application-only adaptation: ALERT's choice of exit at fixed resources (all threads)."""

    name = 'app_only'

    def candidate_threads(self, context: RequestContext) -> Tuple[int, ...]:
        """
        Return the fixed thread count: ``threads`` if given, else the most profiled.

        Fixed even while other jobs or processes take cores (``context.thread_counts`` then
        offers fewer): this baseline does not adapt its resources.
        """
        return (self.threads or max(context.profile.thread_counts),)


@register_policy
class SysOnlyPolicy(AlertPolicy):
    """System-only adaptation: ALERT's choice of threads for the fixed last exit."""

    name = 'sys_only'

    def candidate_exits(self, context: RequestContext) -> Sequence[int]:
        """Return only the last exit (the full network)."""
        return (context.num_exits - 1,)
