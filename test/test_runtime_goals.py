"""Goals, policy parameter strings and conditions: validation and composition (no model)."""

import math

from delen_ros.runtime import (accuracy_reached, all_of, any_of, available_policies,
                               BudgetPolicy, confidence_at_least, exit_reached, ExitStatus,
                               Goal, GoalError, GoalKind, is_last_exit, make_policy,
                               next_stage_fits, next_stage_fits_energy,
                               next_stage_fits_latency, parse_goal, Plan, Policy, PolicyError,
                               register_policy, StaticPolicy)
import pytest


def _status(**changes):
    values = {'exit_index': 1, 'num_exits': 4, 'class_id': 3, 'confidence': 0.8,
              'exit_accuracy': 0.85, 'expected_accuracy': 0.9, 'elapsed_ms': 6.0,
              'compute_ms': 4.0, 'remaining_ms': 9.0, 'energy_mj': 20.0, 'remaining_mj': 10.0,
              'next_latency_ms': 2.0, 'next_energy_mj': 11.0, 'threads': 1,
              'goal': Goal.accuracy(0.88)}
    values.update(changes)
    return ExitStatus(**values)


def test_goal_factories_and_text_round_trip():
    goal = Goal.latency(15.0, energy_mj=40.0)
    assert goal.kind is GoalKind.LATENCY and goal.primary == 15.0
    assert goal.deadline_ms == 15.0 and goal.energy_mj == 40.0 and goal.min_accuracy is None
    assert str(goal) == 'latency:15ms,energy:40mJ'
    assert parse_goal(str(goal)) == goal
    assert parse_goal('accuracy:91%,latency:30') == Goal.accuracy(0.91, latency_ms=30.0)
    assert parse_goal('energy=12.5mJ') == Goal.energy(12.5)
    assert Goal('accuracy', min_accuracy=0.5).kind is GoalKind.ACCURACY


@pytest.mark.parametrize('make, message', [
    (lambda: Goal.latency(-1.0), 'latency_ms must be positive'),
    (lambda: Goal.latency(0.0), 'latency_ms must be positive'),
    (lambda: Goal.latency(math.nan), 'latency_ms is NaN'),
    (lambda: Goal.energy(math.inf), 'energy_mj must be finite'),
    (lambda: Goal.accuracy(1.2), r'fraction in \(0, 1\]'),
    (lambda: Goal.accuracy('high'), 'must be a number'),
    (lambda: Goal.latency(True), 'must be a number'),
    (lambda: Goal('throughput', latency_ms=3.0), "unknown goal kind 'throughput'"),
    (lambda: Goal('energy', latency_ms=3.0), 'an energy goal needs energy_mj'),
    (lambda: Goal.latency(10.0, energy_mj=-2.0), 'energy_mj must be positive'),
    (lambda: parse_goal(''), 'empty goal'),
    (lambda: parse_goal('speed:3'), "unknown goal kind 'speed'"),
    (lambda: parse_goal('latency:fast'), 'latency needs a number'),
    (lambda: parse_goal('latency:3,latency:4'), 'given twice'),
])
def test_invalid_goals_say_why(make, message):
    with pytest.raises(GoalError, match=message):
        make()


def test_goal_error_is_a_value_error_and_reachability_is_checked():
    assert issubclass(GoalError, ValueError)
    assert Goal.accuracy(0.9).check_reachable(0.93) == Goal.accuracy(0.9)
    with pytest.raises(GoalError, match=r'above what the model reaches \(0\.9300'):
        Goal.accuracy(0.95).check_reachable(0.93)
    with pytest.raises(GoalError, match='above what the model reaches'):
        Goal.latency(10.0, min_accuracy=0.99).check_reachable(0.93)


def test_policy_registry_and_parameter_strings():
    assert {'static', 'confidence', 'budget'} <= set(available_policies())
    policy = make_policy('confidence:threshold=0.75,threads=2')
    assert policy.threshold == 0.75 and policy.threads == 2
    assert policy.describe() == 'confidence:threshold=0.75,threads=2'
    assert make_policy(policy.describe()).describe() == policy.describe()
    assert isinstance(make_policy('static:exit_index=-1'), StaticPolicy)
    assert make_policy('budget').describe() == 'budget'
    assert make_policy('static', exit_index=2).exit_index == 2
    assert make_policy(policy) is policy


@pytest.mark.parametrize('spec, message', [
    ('nope', "unknown policy 'nope'; known: .*budget"),
    ('static:exit=2', 'no parameter exit; it takes exit_index, threads'),
    ('confidence:threshold=1.5', r'threshold must be in \[0, 1\]'),
    ('confidence:threshold', 'is not key=value'),
    ('static:threads=0', 'threads must be a positive integer'),
    ('budget:gain=2', r'gain must be in \[0, 1\]'),
    ('', 'empty policy'),
])
def test_bad_policy_strings_say_why(spec, message):
    with pytest.raises(PolicyError, match=message):
        make_policy(spec)


def test_custom_policies_register_by_name():
    @register_policy
    class EveryOther(Policy):
        name = 'test_every_other'

        def should_stop(self, status):
            return status.exit_index % 2 == 1

    assert isinstance(make_policy('test_every_other:threads=1'), EveryOther)
    with pytest.raises(PolicyError, match='already taken'):
        register_policy(type('Clash', (EveryOther,), {'name': 'budget'}))
    with pytest.raises(PolicyError, match='positive integer'):
        Plan(threads=0)


def test_conditions_compose():
    status = _status()
    assert confidence_at_least(0.8)(status) and not confidence_at_least(0.81)(status)
    assert accuracy_reached()(status)  # 0.9 expected >= 0.88 asked by the goal
    assert not accuracy_reached(0.95)(status)
    assert not accuracy_reached()(_status(goal=Goal.latency(10.0)))
    assert exit_reached(1)(status) and not exit_reached(2)(status)
    assert exit_reached(-3)(status) and not exit_reached(-1)(status)
    assert not is_last_exit()(status) and is_last_exit()(_status(exit_index=3))
    assert next_stage_fits_latency()(status) and not next_stage_fits_latency(7.5)(status)
    assert not next_stage_fits_energy()(status)
    assert not next_stage_fits()(status)
    either = confidence_at_least(0.99) | exit_reached(1)
    both = confidence_at_least(0.5) & ~next_stage_fits_energy()
    assert either(status) and both(status)
    assert any_of(confidence_at_least(0.99), accuracy_reached())(status)
    assert not all_of(confidence_at_least(0.5), next_stage_fits())(status)
    assert 'confidence >= 0.99 or exit >= 1' in repr(either)
    with pytest.raises(ValueError, match=r'threshold must be in \[0, 1\]'):
        confidence_at_least(2.0)


def test_budget_policy_decisions():
    policy = BudgetPolicy(accuracy_margin=0.0, gain=0.0)
    latency_goal = Goal.latency(20.0)
    fits = {'remaining_ms': 5.0, 'next_latency_ms': 2.0, 'remaining_mj': math.inf,
            'next_energy_mj': 1.0, 'goal': latency_goal}
    assert not policy.should_stop(_status(**fits))
    assert policy.should_stop(_status(**{**fits, 'next_latency_ms': 6.0}))
    energy = dict(fits, goal=Goal.energy(30.0), remaining_ms=math.inf, remaining_mj=4.0)
    assert not policy.should_stop(_status(**energy))
    assert policy.should_stop(_status(**{**energy, 'next_energy_mj': 4.5}))
    accuracy = dict(fits, goal=Goal.accuracy(0.9), remaining_ms=math.inf)
    assert policy.should_stop(_status(**accuracy, expected_accuracy=0.9))
    assert not policy.should_stop(_status(**accuracy, expected_accuracy=0.89))
