"""
Scenarios of the trace-driven evaluation: tenants, request rates, goal changes, CPU load.

A scenario is plain configuration (frozen dataclasses). ``Scenario.trace`` turns it into the
list of arrivals every policy is run on: the same frames at the same times, so policies are
compared on identical input; ``Scenario.loaded_at`` says which load phase a time falls in.
"""

from dataclasses import dataclass, replace
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.goals import Goal, parse_goal

__all__ = ['Arrival', 'GoalChange', 'LoadPhase', 'RateChange', 'SCENARIOS', 'Scenario',
           'TenantPlan', 'builtin_scenarios', 'contention_scenario', 'energy_latency_scenario',
           'goal_change_scenario', 'multi_tenant_scenario', 'opposite_goals_scenario',
           'rate_change_scenario', 'tight_contention_scenario']


@dataclass(frozen=True)
class LoadPhase:
    """A CPU-bound competitor on every core from ``start_s`` to ``end_s`` (scenario time)."""

    start_s: float
    end_s: float

    def __post_init__(self):
        if not (0.0 <= self.start_s < self.end_s and math.isfinite(self.end_s)):
            raise ValueError(f'load phase needs 0 <= start < end, got {self}')


@dataclass(frozen=True)
class RateChange:
    """From ``at_s`` on, a tenant's frames arrive every ``1 / rate_hz`` s."""

    at_s: float
    rate_hz: float

    def __post_init__(self):
        if not (self.at_s >= 0.0 and math.isfinite(self.rate_hz) and self.rate_hz > 0.0):
            raise ValueError(f'rate change needs at_s >= 0 and rate_hz > 0, got {self}')


@dataclass(frozen=True)
class GoalChange:
    """From ``at_s`` on, a tenant's frames are served under ``goal``."""

    at_s: float
    goal: Goal

    def __post_init__(self):
        if isinstance(self.goal, str):
            object.__setattr__(self, 'goal', parse_goal(self.goal))
        if self.at_s < 0.0:
            raise ValueError(f'goal change needs at_s >= 0, got {self.at_s}')


@dataclass(frozen=True)
class TenantPlan:
    """
    One tenant of a scenario: its goal at t=0, later goal changes and its request rates.

    ``rates`` must start at 0 s; frames are periodic at the rate in force (a camera).
    """

    name: str
    goal: Goal
    rates: Tuple[RateChange, ...]
    goal_changes: Tuple[GoalChange, ...] = ()

    def __post_init__(self):
        if isinstance(self.goal, str):
            object.__setattr__(self, 'goal', parse_goal(self.goal))
        object.__setattr__(self, 'rates', tuple(sorted(self.rates, key=lambda r: r.at_s)))
        object.__setattr__(self, 'goal_changes',
                           tuple(sorted(self.goal_changes, key=lambda g: g.at_s)))
        if not self.rates or self.rates[0].at_s != 0.0:
            raise ValueError(f'tenant {self.name!r}: the first rate must start at 0 s')

    def goal_at(self, time_s: float) -> Goal:
        """Return the goal in force at scenario time ``time_s``."""
        goal = self.goal
        for change in self.goal_changes:
            if change.at_s <= time_s:
                goal = change.goal
        return goal

    def arrival_times(self, duration_s: float) -> List[float]:
        """Return the periodic arrival times over the scenario."""
        times = []
        for index, rate in enumerate(self.rates):
            end = self.rates[index + 1].at_s if index + 1 < len(self.rates) else duration_s
            period = 1.0 / rate.rate_hz
            count = int(math.ceil((min(end, duration_s) - rate.at_s) / period - 1e-9))
            times.extend(rate.at_s + period * i for i in range(max(count, 0)))
        return times


@dataclass(frozen=True)
class Arrival:
    """One frame of the trace: when, for whom, which test image, under which goal."""

    time_s: float
    tenant: str
    frame: int
    goal: Goal
    loaded: bool


@dataclass(frozen=True)
class Scenario:
    """
    A scripted run: tenants with rates and goals, CPU load phases, and the policies run.

    ``policies`` lists policy strings (``make_policy`` form) run one after another, each on
    a fresh runtime; ``seed`` picks the test frames; ``on_infeasible`` is the runtime's
    tenant option for frames predicted to miss even at the first exit (serving them keeps
    every policy learning from every frame; a late answer still counts as a violation).
    """

    name: str
    description: str
    duration_s: float
    tenants: Tuple[TenantPlan, ...]
    load: Tuple[LoadPhase, ...] = ()
    policies: Tuple[str, ...] = ('coordinated', 'alert', 'alert_plus', 'app_only', 'sys_only')
    seed: int = 0
    queue_size: int = 2
    on_infeasible: str = 'serve_first_exit'

    def __post_init__(self):
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f'scenario {self.name!r}: duration must be positive')
        names = [t.name for t in self.tenants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f'scenario {self.name!r}: needs tenants with distinct names')
        for phase in self.load:
            if phase.end_s > self.duration_s:
                raise ValueError(f'scenario {self.name!r}: load phase {phase} ends after '
                                 f'the scenario ({self.duration_s} s)')
        if not self.policies:
            raise ValueError(f'scenario {self.name!r}: no policies to run')

    def loaded_at(self, time_s: float) -> bool:
        """Return True when the CPU competitor runs at scenario time ``time_s``."""
        return any(p.start_s <= time_s < p.end_s for p in self.load)

    def trace(self, num_frames: int) -> List[Arrival]:
        """Return every arrival in time order, test frames drawn with ``seed``."""
        rng = np.random.default_rng(self.seed)
        arrivals = []
        for tenant in self.tenants:
            for time_s in tenant.arrival_times(self.duration_s):
                arrivals.append((time_s, tenant))
        arrivals.sort(key=lambda item: (item[0], item[1].name))
        frames = rng.choice(num_frames, size=len(arrivals), replace=len(arrivals) > num_frames)
        return [Arrival(time_s=t, tenant=tenant.name, frame=int(frame),
                        goal=tenant.goal_at(t), loaded=self.loaded_at(t))
                for (t, tenant), frame in zip(arrivals, frames)]

    def goal_changes(self) -> List[Tuple[float, str, Goal]]:
        """Return (time, tenant, goal) of every scripted goal change, in time order."""
        changes = [(c.at_s, t.name, c.goal) for t in self.tenants for c in t.goal_changes]
        return sorted(changes, key=lambda item: (item[0], item[1]))


# The default policy first; then ALERT and its one-sided baselines; then the runtime's others.
_ADAPTIVE = ('coordinated', 'alert', 'alert_plus', 'app_only', 'sys_only')
_ALL = _ADAPTIVE + ('static', 'confidence', 'budget')


def contention_scenario(*, duration_s: float = 24.0, rate_hz: float = 20.0,
                        deadline_ms: float = 10.0,
                        policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (a): one tenant with a deadline, a CPU hog per core from 1/3 to 2/3 of the run."""
    return Scenario(
        name='contention',
        description=(f'one tenant, latency:{deadline_ms:g} ms at {rate_hz:g} frames/s; a '
                     f'CPU-bound process per core from {duration_s / 3:.0f} s to '
                     f'{2 * duration_s / 3:.0f} s'),
        duration_s=duration_s,
        tenants=(TenantPlan('camera', Goal.latency(deadline_ms),
                            rates=(RateChange(0.0, rate_hz),)),),
        load=(LoadPhase(duration_s / 3, 2 * duration_s / 3),),
        policies=tuple(policies or _ALL))


def tight_contention_scenario(*, duration_s: float = 18.0, rate_hz: float = 20.0,
                              deadline_ms: float = 4.0,
                              policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (a'): as (a) with a deadline that needs 2 threads for the last exit when idle."""
    scenario = contention_scenario(duration_s=duration_s, rate_hz=rate_hz,
                                   deadline_ms=deadline_ms,
                                   policies=policies or _ADAPTIVE)
    return replace(scenario, name='contention_tight')


def goal_change_scenario(*, duration_s: float = 12.0, rate_hz: float = 20.0,
                         policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (b): one tenant whose goal changes twice: tight deadline, accuracy, energy cap."""
    third = duration_s / 3
    return Scenario(
        name='goal_change',
        description=(f'one tenant at {rate_hz:g} frames/s; goal latency:4 ms, then at '
                     f'{third:.0f} s accuracy:0.93 (latency 20 ms), then at {2 * third:.0f} s '
                     'energy:15 mJ (latency 20 ms); no CPU load'),
        duration_s=duration_s,
        tenants=(TenantPlan('camera', Goal.latency(4.0), rates=(RateChange(0.0, rate_hz),),
                            goal_changes=(GoalChange(third, Goal.accuracy(0.93,
                                                                          latency_ms=20.0)),
                                          GoalChange(2 * third, Goal.energy(
                                              15.0, latency_ms=20.0)))),),
        policies=tuple(policies or _ADAPTIVE + ('budget',)))


def rate_change_scenario(*, duration_s: float = 12.0, deadline_ms: float = 10.0,
                         policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (c): one tenant whose rate jumps from 20/s to 400/s and back; no CPU load."""
    third = duration_s / 3
    return Scenario(
        name='rate_change',
        description=(f'one tenant, latency:{deadline_ms:g} ms; 20 frames/s, 400 frames/s from '
                     f'{third:.0f} s, 20 frames/s from {2 * third:.0f} s; no CPU load'),
        duration_s=duration_s,
        tenants=(TenantPlan('camera', Goal.latency(deadline_ms),
                            rates=(RateChange(0.0, 20.0), RateChange(third, 400.0),
                                   RateChange(2 * third, 20.0))),),
        policies=tuple(policies or _ADAPTIVE + ('budget',)))


def multi_tenant_scenario(*, duration_s: float = 18.0,
                          policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (d): three tenants with a latency, an accuracy and an energy goal; load mid-run."""
    return Scenario(
        name='three_tenants',
        description=('three tenants at 10 frames/s each: latency:10 ms, accuracy:0.93 '
                     '(latency 30 ms), energy:15 mJ (latency 30 ms); a CPU-bound process per '
                     f'core from {duration_s / 2:.0f} s to {3 * duration_s / 4:.1f} s'),
        duration_s=duration_s,
        tenants=(
            TenantPlan('latency', Goal.latency(10.0), rates=(RateChange(0.0, 10.0),)),
            TenantPlan('accuracy', Goal.accuracy(0.93, latency_ms=30.0),
                       rates=(RateChange(0.0, 10.0),)),
            TenantPlan('energy', Goal.energy(15.0, latency_ms=30.0),
                       rates=(RateChange(0.0, 10.0),)),
        ),
        load=(LoadPhase(duration_s / 2, 3 * duration_s / 4),),
        policies=tuple(policies or _ALL))


def energy_latency_scenario(*, duration_s: float = 18.0, rate_hz: float = 20.0,
                            energy_mj: float = 10.0, deadline_ms: float = 10.0,
                            policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (e): an energy goal under a latency bound, with CPU load in the middle third."""
    return Scenario(
        name='energy_latency',
        description=(f'one tenant, energy:{energy_mj:g} mJ with latency {deadline_ms:g} ms at '
                     f'{rate_hz:g} frames/s; a CPU-bound process per core from '
                     f'{duration_s / 3:.0f} s to {2 * duration_s / 3:.0f} s'),
        duration_s=duration_s,
        tenants=(TenantPlan('camera', Goal.energy(energy_mj, latency_ms=deadline_ms),
                            rates=(RateChange(0.0, rate_hz),)),),
        load=(LoadPhase(duration_s / 3, 2 * duration_s / 3),),
        policies=tuple(policies or _ALL))


def opposite_goals_scenario(*, duration_s: float = 18.0,
                            policies: Optional[Sequence[str]] = None) -> Scenario:
    """Build (f): two tenants with opposite goals (accuracy first, energy first) and load."""
    return Scenario(
        name='opposite_goals',
        description=('two tenants at 15 frames/s each: `accurate` latency:10 ms (most '
                     'accuracy), `frugal` accuracy:0.9 with latency 20 ms (least energy); a '
                     f'CPU-bound process per core from {duration_s / 3:.0f} s to '
                     f'{2 * duration_s / 3:.0f} s'),
        duration_s=duration_s,
        tenants=(
            TenantPlan('accurate', Goal.latency(10.0), rates=(RateChange(0.0, 15.0),)),
            TenantPlan('frugal', Goal.accuracy(0.9, latency_ms=20.0),
                       rates=(RateChange(0.0, 15.0),)),
        ),
        load=(LoadPhase(duration_s / 3, 2 * duration_s / 3),),
        policies=tuple(policies or _ALL))


SCENARIOS = {
    'contention': contention_scenario,
    'contention_tight': tight_contention_scenario,
    'goal_change': goal_change_scenario,
    'rate_change': rate_change_scenario,
    'three_tenants': multi_tenant_scenario,
    'energy_latency': energy_latency_scenario,
    'opposite_goals': opposite_goals_scenario,
}


def builtin_scenarios(names: Optional[Sequence[str]] = None, *,
                      scale: float = 1.0) -> List[Scenario]:
    """Return the built-in scenarios by name (all by default), durations times ``scale``."""
    names = list(names or SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise ValueError(f'unknown scenario {", ".join(unknown)}; known: '
                         f'{", ".join(SCENARIOS)}')
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f'scale must be positive, got {scale}')
    built = []
    for name in names:
        default = SCENARIOS[name]()
        built.append(SCENARIOS[name](duration_s=default.duration_s * scale))
    return built
