"""The server's composition: base goals x the governor's adjustments -> effective goals."""

from delen_ros.governor import adjust_goal, AdjustedGoals, Adjustment
from delen_ros.runtime import Goal
import pytest

HOT = Adjustment(latency_scale=1.5, accuracy_drop=0.03)
CRITICAL = Adjustment(energy_scale=0.4)


def test_adjust_goal_scales_the_bounds_the_goal_has():
    base = Goal.latency(20.0, min_accuracy=0.8, energy_mj=10.0)
    effective = adjust_goal(base, HOT.then(CRITICAL))
    assert effective.kind is base.kind
    assert effective.latency_ms == pytest.approx(30.0)
    assert effective.min_accuracy == pytest.approx(0.77)
    assert effective.energy_mj == pytest.approx(4.0)
    assert adjust_goal(base, Adjustment()) == base
    # Absent bounds stay absent: an energy goal gets no latency bound from a hot adjustment.
    energy = Goal.energy(20.0)
    assert adjust_goal(energy, HOT) == energy
    assert adjust_goal(energy, CRITICAL) == Goal.energy(8.0)


def test_accuracy_relaxed_to_nothing():
    # A secondary bound is dropped; a primary one keeps a token target.
    assert adjust_goal(Goal.latency(10.0, min_accuracy=0.02), HOT).min_accuracy is None
    relaxed = adjust_goal(Goal.accuracy(0.02), HOT)
    assert relaxed.kind.value == 'accuracy' and 0 < relaxed.min_accuracy < 0.01


@pytest.mark.parametrize('fields,words', [
    ({'latency_scale': 0.0}, 'latency_scale must be in [0.01, 100], got 0'),
    ({'energy_scale': float('nan')}, 'energy_scale must be a finite number'),
    ({'accuracy_drop': -0.1}, 'accuracy_drop must be in [0, 1], got -0.1'),
    ({'energy_scale': True}, 'energy_scale must be a finite number, got True'),
])
def test_invalid_adjustments_are_refused_by_name(fields, words):
    with pytest.raises(ValueError) as caught:
        Adjustment(**fields)
    assert words in str(caught.value)


def test_message_fields_lose_their_float32_noise():
    import numpy as np
    adjustment = Adjustment.from_message(latency_scale=float(np.float32(1.5)),
                                         accuracy_relaxation=float(np.float32(0.03)),
                                         energy_scale=float(np.float32(0.7)))
    assert adjustment == Adjustment(latency_scale=1.5, accuracy_drop=0.03, energy_scale=0.7)
    assert adjustment.describe() == 'latency x1.50, min_accuracy -0.03, energy x0.70'
    with pytest.raises(ValueError, match='accuracy_relaxation must be a finite number'):
        Adjustment.from_message(latency_scale=1.0, accuracy_relaxation=float('inf'),
                                energy_scale=1.0)


class Runtime:
    """Stands for InferenceServer.set_goal: records what the runtime was given."""

    def __init__(self):
        self.goals = {}

    def set_goal(self, tenant, goal):
        self.goals[tenant] = goal


def test_base_goals_adjustments_and_timeout():
    runtime = Runtime()
    goals = AdjustedGoals(timeout_s=5.0, apply=runtime.set_goal)
    goals.set_base('nav', Goal.latency(20.0, energy_mj=10.0))
    goals.set_base('arm', Goal.accuracy(0.9))
    assert runtime.goals == {'nav': Goal.latency(20.0, energy_mj=10.0),
                             'arm': Goal.accuracy(0.9)}
    assert goals.reason('nav') == '' and goals.describe(0.0) == 'none received: base budgets'

    changed = goals.receive('', HOT, 'temperature 80.0 C: hot', now_s=10.0)
    assert sorted(changed) == ['arm', 'nav']
    assert runtime.goals['nav'].latency_ms == pytest.approx(30.0)
    assert runtime.goals['arm'].min_accuracy == pytest.approx(0.87)
    assert goals.reason('nav') == 'temperature 80.0 C: hot'
    assert goals.receive('', HOT, '', now_s=10.0) == []  # no reason given: described
    assert goals.reason('nav') == 'latency x1.50, min_accuracy -0.03'
    # The heartbeat: the same adjustment again changes nothing but keeps it alive.
    assert goals.receive('', HOT, 'temperature 80.0 C: hot', now_s=14.0) == []
    assert goals.expire(18.0) == []

    # A user's parameter change moves the base; the adjustment stays on top of it.
    goals.set_base('nav', Goal.latency(40.0, energy_mj=10.0))
    assert goals.base('nav') == Goal.latency(40.0, energy_mj=10.0)
    assert runtime.goals['nav'].latency_ms == pytest.approx(60.0)

    # One tenant's own adjustment takes precedence over the one for all.
    assert goals.receive('nav', CRITICAL, 'battery low', now_s=15.0) == ['nav']
    assert runtime.goals['nav'] == Goal.latency(40.0, energy_mj=4.0)
    assert goals.adjustment('arm') == HOT
    assert goals.receive('ghost', CRITICAL, '', now_s=15.0) == []  # not served: no effect

    # Not renewed for timeout_s: the base goals return.
    assert goals.next_expiry_s() == pytest.approx(19.0)  # the one for all, renewed at 14
    assert goals.expire(19.5) == ['arm']  # the one for all lapsed; nav's own not yet
    assert goals.expire(20.5) == ['nav']
    assert runtime.goals == {'nav': Goal.latency(40.0, energy_mj=10.0),
                             'arm': Goal.accuracy(0.9)}
    assert goals.describe(21.0) == 'lapsed 0.5 s ago (none for 5 s): base budgets'
    assert goals.next_expiry_s() is None
    assert goals.effective('nav') == goals.base('nav')

    goals.timeout_s = 1.0
    with pytest.raises(ValueError, match='timeout_s must be positive'):
        goals.timeout_s = 0.0
    goals.remove('arm')
    assert goals.receive('', HOT, 'hot', now_s=30.0) == ['nav']
