"""
``coordinated``: the runtime's default policy.

ALERT's choice of the resource setting, made per setting with uncertainty, and Dělen's
per-frame early exit on calibrated confidence.

Before a request (``plan``), for every resource setting (intra-op thread count):

- a Kalman filter per setting (``kalman.SlowdownFilter``) gives the slowdown of that setting
  (measured / profiled latency of what ran) with its spread; the *safe factor*
  ``max(mean + z sd, mean x q)`` bounds one request's slowdown with probability
  ``1 - max_miss`` (z the normal quantile, q the same quantile of the last ``tail_window``
  residuals: preemption makes the tail heavier than a Gaussian);
- the *ceiling* is the deepest exit whose stage-by-stage path fits the remaining latency
  budget at that factor and the energy bound at the energy factor (ALERT, USENIX ATC 2020,
  Sec. 4.3: the choice within the bounds with probability ``1 - max_miss``).

The setting is chosen as ALERT does: latency and energy goals take the most accurate ceiling
within the bounds (ties go to the least predicted energy); accuracy goals the least energy
among the settings that reach the accuracy bound within the deadline.

With several models (``RequestContext.models``: ALERT's family of traditional and anytime
DNNs), the choice runs over model x setting: every model's path is scaled by the setting's
one slowdown (contention slows them alike; ALERT keeps one global slowdown), and the most
accurate ceiling within the bounds wins, the least energy among near ties.

After every exit (``should_stop``), per frame (BranchyNet, SDN; Dělen's conditions):

- latency and energy goals: stop when the answer is already as likely right as the deepest
  exit still reachable in time (the calibrated expected accuracy at this exit and confidence
  against the profile's accuracy of that exit, ``tolerance`` allowed), or nothing deeper fits;
- accuracy goals: stop once the expected accuracy reaches the bound plus ``accuracy_margin``
  plus an integral ``boost`` that keeps the mean of final answers at the bound (as ``budget``),
  or nothing deeper fits.

A setting unused for ``explore_every`` requests is probed once when, at the slowdown of the
setting in use, it would reach a deeper exit; a probe that finds it slow doubles its interval
(up to ``max_backoff``), one that finds it fine restarts its filter. A setting whose last
request ran more than 4x slower than the other setting's last one (measured within the last
``explore_every`` requests) is not chosen for the next ``explore_every`` x backoff requests
(its estimate would be stale when it next looked best).
"""

import bisect
import collections
import math
import statistics
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from .alert import nominal_energy_mj, observed_slowdown
from .base import Outcome, Plan, Policy, PolicyError, register_policy, RequestContext
from ..conditions import ExitStatus
from ..goals import GoalKind
from ..kalman import SlowdownFilter

__all__ = ['CoordinatedPolicy', 'ModelView', 'SettingState']

_INF = math.inf
# A setting whose last request ran this many times slower than the other's last one is left
# alone for a while: its estimate is stale when it next looks best (2 threads under a CPU hog
# take 100x, while 1 thread takes 2x).
_BLOCK_FACTOR = 4.0


class SettingState:
    """
    What the policy knows of one resource setting: filters, tails and path costs.

    ``path_ms`` / ``path_mj`` are the first model's; ``paths[name]`` every model's.
    """

    __slots__ = ('threads', 'path_ms', 'path_mj', 'paths', 'latency', 'energy', 'residuals',
                 'sorted_residuals', 'factor', 'energy_factor', 'last_used', 'backoff',
                 'last_ratio', 'last_observed', 'blocked_until')

    def __init__(self, threads: int, path_ms: Sequence[float], path_mj: Sequence[float],
                 spread: float) -> None:
        self.threads = threads
        self.path_ms = tuple(path_ms)   # cumulative profiled median, stage by stage, per exit
        self.path_mj = tuple(path_mj)   # the same times the active power
        self.paths: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {}  # per model
        self.latency = _filter(1.0, spread)
        self.energy = _filter(1.0, spread)
        self.residuals: Deque[float] = collections.deque()
        self.sorted_residuals: List[float] = []
        self.factor = self.energy_factor = 1.0
        self.last_used = 0
        self.backoff = 1
        self.last_ratio: Optional[float] = None  # none measured yet
        self.last_observed = 0
        self.blocked_until = 0


class ModelView:
    """What the policy knows of one candidate model: its name, profile and accuracies."""

    __slots__ = ('name', 'profile', 'accuracy', 'best_at')

    def __init__(self, name: str, profile: Any, best_at: Tuple[float, ...]) -> None:
        self.name = name
        self.profile = profile
        self.accuracy = tuple(profile.exit_accuracy)
        self.best_at = best_at  # the most an answer of each exit is expected to be right


def _first_reaching(accuracies: Sequence[float], bound: float) -> int:
    """Return the first exit whose profiled accuracy reaches ``bound`` (else the last)."""
    for exit_index, accuracy in enumerate(accuracies):
        if accuracy >= bound:
            return exit_index
    return len(accuracies) - 1


Path = Tuple[Tuple[float, ...], Tuple[float, ...]]  # cumulative ms and mJ, per exit


def _paths(profile: Any, threads: int, watts: float) -> Path:
    profiled = min(profile.thread_counts, key=lambda t: (abs(t - threads), t))
    path, total = [], 0.0
    for k in range(profile.num_exits):
        total += profile.stage_latency_ms(k, profiled, 'median')
        path.append(total)
    return tuple(path), tuple(p * watts for p in path)


def _ceiling(path_ms: Sequence[float], path_mj: Sequence[float], remaining_ms: float,
             energy_mj: float, factor: float, energy_factor: float) -> int:
    """Return the deepest exit whose path fits both bounds at these factors (-1: none)."""
    for exit_index in range(len(path_ms) - 1, -1, -1):
        if path_ms[exit_index] * factor <= remaining_ms \
                and path_mj[exit_index] * energy_factor <= energy_mj:
            return exit_index
    return -1


def _filter(initial: float, spread: float) -> SlowdownFilter:
    # Trust the profile (or the probe) at first: its own spread, not a wide prior. ALERT's
    # adaptive process noise, innovations not clipped: a setting used again after a while
    # may be 100x slower, and one request must tell (single spikes fade within a few
    # requests; the residual tail covers them meanwhile).
    return SlowdownFilter(initial=initial, variance=spread * spread, measurement_std=spread,
                          sigma=0.0, forgetting=0.7, clip=math.inf)


@register_policy
class CoordinatedPolicy(Policy):
    """
    Resource setting chosen per goal from per-setting slowdowns; exit chosen per frame.

    ``max_miss``: largest chance of missing the deadline (or energy bound) a choice may take;
    ``tolerance``: stop when the expected accuracy here is within this of the deepest
    reachable exit's; ``accuracy_margin`` and ``gain``: margin and controller step under an
    accuracy bound; ``explore_every``, ``max_backoff``, ``slow_margin``: probing of settings
    not used lately; ``tail_window``: residuals kept per setting for the tail.
    """

    name = 'coordinated'

    def __init__(self, *, threads: Optional[int] = None, max_miss: float = 0.01,
                 tolerance: float = 0.0, accuracy_margin: float = 0.01, gain: float = 0.05,
                 explore_every: int = 50, max_backoff: int = 16, slow_margin: float = 1.5,
                 tail_window: int = 100) -> None:
        super().__init__(threads=threads)
        self.max_miss = self._check_fraction('max_miss', max_miss, 0.5)
        self.tolerance = self._check_fraction('tolerance', tolerance)
        self.accuracy_margin = self._check_fraction('accuracy_margin', accuracy_margin)
        self.gain = self._check_fraction('gain', gain)
        self.explore_every = self._check_count('explore_every', explore_every, 1)
        self.max_backoff = self._check_count('max_backoff', max_backoff, 1)
        self.tail_window = self._check_count('tail_window', tail_window, 0)
        if not (math.isfinite(float(slow_margin)) and float(slow_margin) >= 1.0):
            raise PolicyError(f'{self.name}: slow_margin must be >= 1, got {slow_margin!r}')
        self.slow_margin = float(slow_margin)
        self.z = statistics.NormalDist().inv_cdf(1.0 - self.max_miss) if max_miss > 0 else 4.0
        self.settings: Dict[int, SettingState] = {}
        self.boost = 0.0
        self.requests = 0
        self.probes = 0
        self._bound: Optional[float] = None
        self._profile = None
        self._power = None
        self._accuracy: Tuple[float, ...] = ()
        self._setting: Optional[SettingState] = None
        self._ceiling = 0
        self._states: Dict[Tuple[int, ...], Tuple[SettingState, ...]] = {}
        self._plans: Dict[Tuple[int, int, Optional[Tuple[int, ...]], Optional[str]], Plan] = {}
        self._best_at: Tuple[float, ...] = ()
        self._family: Tuple[Any, ...] = ()
        self._views: Tuple[ModelView, ...] = ()
        self._view_of: Dict[str, ModelView] = {}
        self._next_probe = self.explore_every
        self._probe_guess: Optional[float] = None

    # -- state -------------------------------------------------------------------------------

    def attach(self, profile: Any) -> None:
        """Remember the profile (its tables are built on the first request)."""
        self._profile = profile
        self.settings = {}
        self._states = {}

    def setting(self, threads: int, context: RequestContext) -> SettingState:
        """Return the state of one thread count (built on first use)."""
        found = self.settings.get(threads)
        if found is None:
            found = self.settings[threads] = self._build(threads, context)
        return found

    def _build(self, threads: int, context: RequestContext) -> SettingState:
        profile = context.profile
        profiled = min(profile.thread_counts, key=lambda t: (abs(t - threads), t))
        medians = [profile.stage_latency_ms(k, profiled, 'median')
                   for k in range(profile.num_exits)]
        p95 = [profile.stage_latency_ms(k, profiled, 'p95') for k in range(profile.num_exits)]
        spread = max(0.05, max((b / a - 1.0) / 1.645 for a, b in zip(medians, p95) if a > 0))
        watts = float(context.cost.power.active_w(threads))
        state = SettingState(threads, *_paths(profile, threads, watts), spread)
        for view in self._views:
            state.paths[view.name] = _paths(view.profile, threads, watts)
        self._refresh(state)
        return state

    def _refresh(self, state: SettingState) -> None:
        latency, energy = state.latency, state.energy
        factor = latency.mean + self.z * latency.std
        ordered = state.sorted_residuals
        if len(ordered) >= 30:
            index = min(int(math.ceil((1.0 - self.max_miss) * len(ordered))) - 1,
                        len(ordered) - 1)
            factor = max(factor, latency.mean * ordered[max(index, 0)])
        state.factor = factor
        state.energy_factor = energy.mean + self.z * energy.std

    # -- planning ----------------------------------------------------------------------------

    def _ceiling_of(self, state: SettingState, remaining_ms: float, energy_mj: float,
                    factor: float) -> int:
        return _ceiling(state.path_ms, state.path_mj, remaining_ms, energy_mj, factor,
                        state.energy_factor)

    def _states_of(self, context: RequestContext) -> Tuple[SettingState, ...]:
        counts = (self.threads,) if self.threads is not None else context.thread_counts
        if context.models is not self._family:
            self._use_models(context)
        states = self._states.get(counts)
        if states is None:
            if self._profile is not context.profile or not self._accuracy:
                self._profile, self._power = context.profile, context.cost.power
                self._accuracy = tuple(context.profile.exit_accuracy)
                self.settings = {}
                self._states = {}
                self._best_at = ()
            states = self._states[counts] = tuple(self.setting(t, context) for t in counts)
        return states

    def _use_models(self, context: RequestContext) -> None:
        """Take the request's candidate models; the settings' filters carry over."""
        self._family = context.models
        views = []
        for served in context.models:
            curve = served.executor.accuracy
            views.append(ModelView(served.name, served.profile,
                                   tuple(curve(k, 1.0) for k in range(served.num_exits))))
        self._views = tuple(views)
        self._view_of = {view.name: view for view in views}
        power = context.cost.power
        for state in self.settings.values():
            watts = float(power.active_w(state.threads))
            state.paths = {view.name: _paths(view.profile, state.threads, watts)
                           for view in views}

    def plan(self, context: RequestContext) -> Plan:
        """Choose the setting and the deepest exit it reaches in time; stop per frame."""
        states = self._states_of(context)
        self.requests += 1
        goal = context.goal
        remaining = context.remaining_ms
        energy = context.energy_budget_mj
        accuracy_goal = goal.kind is GoalKind.ACCURACY
        accuracy = self._accuracy
        margin = self.tolerance if self.tolerance > 0.002 else 0.002
        best = None
        best_ceiling = -1
        best_value = best_cost = 0.0
        best_view = None
        requests = self.requests
        views = self._views if len(self._views) > 1 else (None,)
        needs = [_first_reaching(accuracy if view is None else view.accuracy, goal.min_accuracy)
                 if accuracy_goal else 0 for view in views]
        for state in states:
            if state.blocked_until > requests:
                continue
            for view, model_needed in zip(views, needs):
                if view is None:
                    path_ms, path_mj, model_accuracy = state.path_ms, state.path_mj, accuracy
                else:
                    path_ms, path_mj = state.paths[view.name]
                    model_accuracy = view.accuracy
                ceiling = _ceiling(path_ms, path_mj, remaining, energy, state.factor,
                                   state.energy_factor)
                if ceiling < 0:
                    continue
                if accuracy_goal:
                    # Reaching the bound first (the deeper the ceiling, the more frames do),
                    # then the least energy to the exit that reaches it.
                    value = 1.0 if ceiling >= model_needed else model_accuracy[ceiling]
                    cost = path_mj[min(model_needed, ceiling)] * state.energy.mean
                    better = best is None or value > best_value or (
                        value == best_value and cost < best_cost)
                else:
                    value = model_accuracy[ceiling]
                    cost = path_mj[ceiling] * state.energy.mean
                    # Accuracies within the margin are ties, settled by energy.
                    better = best is None or value > best_value + margin or (
                        value >= best_value - margin and cost < best_cost)
                if better:
                    best, best_ceiling, best_value, best_cost = state, ceiling, value, cost
                    best_view = view
        if best is None:
            # Nothing fits: the first exit on the setting expected to be fastest, of the model
            # whose first exit is quickest.
            allowed = [s for s in states if s.blocked_until <= requests] or states
            best = min(allowed, key=lambda s: (s.path_ms[0] * s.latency.mean, s.threads))
            best_ceiling = 0
            if views[0] is not None:
                best_view = min(views, key=lambda v: best.paths[v.name][0][0])
        elif self.requests >= self._next_probe and len(states) > 1 and best_view in (
                None, views[0]):
            probe = self._probe(states, best, best_ceiling, remaining, energy)
            if probe is not None:
                best, best_ceiling = probe
        model = None
        if best_view is not None and best_view is not views[0]:
            model = best_view.name
            accuracy = best_view.accuracy
        self._setting, self._ceiling = best, best_ceiling
        best.last_used = self.requests
        if best_ceiling <= 0:
            stops: Tuple[int, ...] = ()
            best_ceiling = 0
        elif context.stages is None:
            stops = None  # no plan-first runtime: decide after every exit
        else:
            # Heads run only where a confident answer could end the request early.
            if accuracy_goal:
                bound = goal.min_accuracy + self.accuracy_margin + self.boost
            else:
                bound = accuracy[best_ceiling] - self.tolerance
            best_at = best_view.best_at if best_view is not None else \
                self._best_accuracy(context)
            stops = tuple(k for k in range(best_ceiling) if best_at[k] >= bound)
            self._ceiling = len(accuracy) - 1  # the runtime stops at the target
        plans = self._plans
        key = (best.threads, best_ceiling, stops, model)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = Plan(
                threads=best.threads, target_exit=None if stops is None else best_ceiling,
                stop_exits=stops, model=model)
        return plan

    def _best_accuracy(self, context: RequestContext) -> Tuple[float, ...]:
        if not self._best_at:
            curve = context.stages.accuracy
            self._best_at = tuple(curve(k, 1.0) for k in range(context.num_exits))
        return self._best_at

    def _probe(self, states: Sequence[SettingState], chosen: SettingState, ceiling: int,
               remaining: float, energy: float) -> Optional[Tuple[SettingState, int]]:
        self._probe_guess = None
        found = None
        for state in states:
            if found is not None or state is chosen or self.requests < state.last_used + \
                    self.explore_every * state.backoff:
                continue
            # Optimistic: the slowdown of the setting in use, relative to its own profile.
            reach = self._ceiling_of(state, remaining, energy, chosen.factor)
            if reach > ceiling:
                self._probe_guess = chosen.latency.mean
                self.probes += 1
                found = state, reach
            # Checked (probed or not worth it): due again after another interval.
            state.last_used = self.requests
        self._next_probe = min(s.last_used + self.explore_every * s.backoff
                               for s in states if s is not chosen)
        return found

    # -- per exit ----------------------------------------------------------------------------

    def should_stop(self, status: ExitStatus) -> bool:
        """Stop when already likely right, at the ceiling, or when nothing deeper fits."""
        # From the status (and a ceiling set only without plan-first execution, where the
        # runtime does not stop at the target itself): frames of one tenant may be in flight
        # together.
        exit_index = status.exit_index
        ceiling = min(self._ceiling, status.num_exits - 1)
        if exit_index >= ceiling or status.next_energy_mj > status.remaining_mj:
            return True
        state = self.settings.get(status.threads)
        if state is None:
            return False
        path_ms, path_mj = state.path_ms, state.path_mj
        accuracy = self._accuracy
        view = self._view_of.get(status.model) if len(self._views) > 1 else None
        if view is not None:
            path_ms, path_mj = state.paths[view.name]
            accuracy = view.accuracy
        factor, energy_factor = state.factor, state.energy_factor
        spent_ms, spent_mj = path_ms[exit_index], path_mj[exit_index]
        remaining_ms, remaining_mj = status.remaining_ms, status.remaining_mj
        reach = exit_index
        for deeper in range(ceiling, exit_index, -1):
            if (path_ms[deeper] - spent_ms) * factor <= remaining_ms \
                    and (path_mj[deeper] - spent_mj) * energy_factor <= remaining_mj:
                reach = deeper
                break
        if reach == exit_index:
            return True
        goal = status.goal
        if goal.kind is GoalKind.ACCURACY:
            return status.expected_accuracy >= (goal.min_accuracy + self.accuracy_margin
                                                + self.boost)
        return status.expected_accuracy >= accuracy[reach] - self.tolerance

    # -- learning ----------------------------------------------------------------------------

    def observe(self, outcome: Outcome) -> None:
        """Update the setting that ran: slowdown, tail, energy ratio; the accuracy control."""
        state = self.settings.get(outcome.threads)
        if state is not None and self._profile is not None:
            view = self._view_of.get(outcome.model)
            profile = view.profile if view is not None else self._profile
            ratio = observed_slowdown(outcome, profile)
            if ratio is not None:
                self._learn_latency(state, ratio)
            nominal = nominal_energy_mj(outcome, profile, self._power)
            if nominal:
                state.energy.update(outcome.energy_mj / nominal)
            self._refresh(state)
        goal = outcome.goal
        if goal.kind is GoalKind.ACCURACY and self.gain:
            if goal.min_accuracy != self._bound:
                self._bound, self.boost = goal.min_accuracy, 0.0
            deficit = goal.min_accuracy - outcome.expected_accuracy
            self.boost = min(max(self.boost + self.gain * deficit, 0.0),
                             1.0 - goal.min_accuracy)

    def _learn_latency(self, state: SettingState, ratio: float) -> None:
        guess, self._probe_guess = self._probe_guess, None
        if guess is not None and state is self._setting:
            if ratio > self.slow_margin * guess:
                state.backoff = min(2 * state.backoff, self.max_backoff)
            else:
                # Fine again: what it learned before (level, tails) is obsolete.
                state.latency = _filter(ratio, math.sqrt(state.latency.noise))
                state.last_ratio = ratio
                state.residuals.clear()
                state.sorted_residuals.clear()
                state.backoff = 1
                return
        state.latency.update(ratio)
        state.last_ratio = ratio
        state.last_observed = self.requests
        slowest = ratio * state.path_ms[0]
        for other in self.settings.values():
            # Only against a recent measurement: a stale one says nothing about now.
            if other is not state and other.last_ratio is not None \
                    and self.requests - other.last_observed <= self.explore_every \
                    and slowest > _BLOCK_FACTOR * other.last_ratio * other.path_ms[0]:
                state.blocked_until = self.requests + self.explore_every * state.backoff
                state.backoff = min(2 * state.backoff, self.max_backoff)
                break
        if self.tail_window:
            # Against the updated level: a lasting jump is the filter's to follow, not a tail.
            residual = ratio / state.latency.mean
            state.residuals.append(residual)
            bisect.insort(state.sorted_residuals, residual)
            if len(state.residuals) > self.tail_window:
                old = state.residuals.popleft()
                del state.sorted_residuals[bisect.bisect_left(state.sorted_residuals, old)]

    def params(self) -> Dict[str, Any]:
        """Return the non-default parameters."""
        params: Dict[str, Any] = {}
        for key, value, default in (('max_miss', self.max_miss, 0.01),
                                    ('tolerance', self.tolerance, 0.0),
                                    ('accuracy_margin', self.accuracy_margin, 0.01),
                                    ('gain', self.gain, 0.05),
                                    ('explore_every', self.explore_every, 50),
                                    ('max_backoff', self.max_backoff, 16),
                                    ('slow_margin', self.slow_margin, 1.5),
                                    ('tail_window', self.tail_window, 100)):
            if value != default:
                params[key] = value
        return {**params, **super().params()}
