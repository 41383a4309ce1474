"""The default policy ``coordinated``: setting choice, per-frame stopping, learning, real model."""

import math

from delen_ros.engine import fashion_mnist, load_checkpoint
from delen_ros.engine.profiling import load_profile
from delen_ros.runtime import ExitStatus, Goal, InferenceServer, make_policy, PolicyError
from delen_ros.runtime.cost import CostModel
from delen_ros.runtime.policies import Outcome, Plan
from delen_ros.runtime.policies.coordinated import CoordinatedPolicy
import pytest
from test_alert import context, power_model, synthetic_profile


@pytest.fixture
def profile():
    return synthetic_profile()


@pytest.fixture
def cost(profile):
    return CostModel(profile, power=power_model())


def status(plan, exit_index, *, confidence, expected_accuracy, remaining_ms, goal,
           energy_mj=0.0):
    return ExitStatus(exit_index, 4, 0, confidence, 0.9, expected_accuracy, 0.0, 0.0,
                      remaining_ms, energy_mj,
                      (goal.energy_mj or math.inf) - energy_mj, 0.1, 0.1, plan.threads, goal)


def progressive_outcome(plan, exit_index, compute_ms, goal, *, expected_accuracy=0.95):
    return Outcome(
        tenant='t', goal=goal, plan=plan, threads=plan.threads, exit_index=exit_index,
        exits_evaluated=tuple(range(exit_index + 1)),
        stage_latencies_ms=(compute_ms / (exit_index + 1),) * (exit_index + 1), queue_ms=0.0,
        compute_ms=compute_ms, latency_ms=compute_ms,
        energy_mj=power_model().active_w(plan.threads) * compute_ms, deadline_met=True,
        confidence=0.9, expected_accuracy=expected_accuracy, slowdown=1.0)


def test_parameters_are_validated_and_described():
    policy = make_policy('coordinated')
    assert isinstance(policy, CoordinatedPolicy) and policy.describe() == 'coordinated'
    assert make_policy('coordinated:max_miss=0.05,threads=1').describe() == \
        'coordinated:max_miss=0.05,threads=1'
    for bad in ('coordinated:max_miss=0.9', 'coordinated:tolerance=-1',
                'coordinated:explore_every=0', 'coordinated:slow_margin=0.5',
                'coordinated:nope=1'):
        with pytest.raises(PolicyError):
            make_policy(bad)


def test_loose_deadline_picks_the_cheaper_setting_and_stops_when_confident(profile, cost):
    policy = make_policy('coordinated')
    goal = Goal.latency(100.0)
    plan = policy.plan(context(profile, cost, goal))
    # Both settings reach the last exit; 1 thread costs less (5.5 W x 9.5 ms < 9 W x 6.3 ms).
    assert plan.threads == 1 and plan.target_exit is None
    sure = status(plan, 0, confidence=0.99, expected_accuracy=0.99, remaining_ms=95.0,
                  goal=goal)
    unsure = status(plan, 0, confidence=0.6, expected_accuracy=0.6, remaining_ms=95.0,
                    goal=goal)
    assert policy.should_stop(sure)
    assert not policy.should_stop(unsure)
    # Unsure but out of time for any deeper exit: stop.
    late = status(plan, 0, confidence=0.6, expected_accuracy=0.6, remaining_ms=1.0, goal=goal)
    assert policy.should_stop(late)


def test_tight_deadline_needs_two_threads_and_caps_the_exit(profile, cost):
    policy = make_policy('coordinated')
    # 1 thread reaches exit 1 in 3.7 ms (x safety); 2 threads reach exit 2 in 4.2 ms.
    goal = Goal.latency(6.0)
    plan = policy.plan(context(profile, cost, goal))
    assert plan.threads == 2
    ceiling = policy._ceiling
    assert 0 < ceiling < 3
    at_ceiling = status(plan, ceiling, confidence=0.5, expected_accuracy=0.5,
                        remaining_ms=50.0, goal=goal)
    assert policy.should_stop(at_ceiling)


def test_nothing_fits_runs_the_first_exit(profile, cost):
    policy = make_policy('coordinated')
    plan = policy.plan(context(profile, cost, Goal.latency(10.0), remaining_ms=0.5))
    assert plan.target_exit == 0


def test_a_slow_setting_is_left_and_probed_later(profile, cost):
    policy = make_policy('coordinated:explore_every=10')
    goal = Goal.latency(6.0)
    for _ in range(30):
        plan = policy.plan(context(profile, cost, goal))
        exit_index = max(plan.target_exit or policy._ceiling, 0)
        profiled = profile.progressive_latency_ms(exit_index, plan.threads)
        slowdown = 20.0 if plan.threads == 2 else 1.0  # 2 threads wait for a busy core
        policy.observe(progressive_outcome(plan, exit_index, slowdown * profiled, goal))
    # Left after a slow request or two.
    assert policy.settings[2].latency.mean > 1.3 and policy.settings[2].latency.count <= 6
    chosen = [policy.plan(context(profile, cost, goal)).threads for _ in range(25)]
    assert chosen.count(1) >= 20, chosen
    assert policy.probes >= 1


def test_accuracy_goal_stops_at_the_bound_and_raises_it_when_short(profile, cost):
    policy = make_policy('coordinated:accuracy_margin=0')
    goal = Goal.accuracy(0.9, latency_ms=100.0)
    plan = policy.plan(context(profile, cost, goal))
    assert policy.should_stop(status(plan, 0, confidence=0.95, expected_accuracy=0.91,
                                     remaining_ms=90.0, goal=goal))
    assert not policy.should_stop(status(plan, 0, confidence=0.8, expected_accuracy=0.85,
                                         remaining_ms=90.0, goal=goal))
    for _ in range(20):
        policy.observe(progressive_outcome(plan, 3, 9.0, goal, expected_accuracy=0.8))
    assert policy.boost > 0.0
    assert not policy.should_stop(status(plan, 0, confidence=0.95, expected_accuracy=0.91,
                                         remaining_ms=90.0, goal=goal))


def test_energy_bound_caps_the_exit(profile, cost):
    policy = make_policy('coordinated')
    # 1 thread: exit 1 costs about 5.5 W x 3.7 ms = 20 mJ (28 with the margin), exit 2 35.
    goal = Goal.energy(30.0, latency_ms=100.0)
    plan = policy.plan(context(profile, cost, goal))
    assert plan.threads == 1 and policy._ceiling == 1


def test_real_model_answers_early_without_losing_accuracy():
    model, profile = load_checkpoint(), load_profile()
    images, labels = fashion_mnist.load('test')
    server = InferenceServer(model, profile, threads=1)
    server.add_tenant('camera', goal=Goal.latency(600_000.0), queue_size=400)
    assert server.stats()['camera'].policy == 'coordinated'
    count = 400
    for index in range(count):
        server.submit('camera', images[index], frame_id=str(index), label=int(labels[index]))
    with server:
        assert server.wait_idle(timeout=300)
    stats = server.stats()['camera']
    assert stats.served == count
    # Stops early on most frames, yet within 2 points of the last exit's profiled accuracy.
    assert stats.mean_exit < 2.0
    assert stats.accuracy >= profile.exit_accuracy[-1] - 0.02


def test_plan_is_a_plan(profile, cost):
    plan = make_policy('coordinated').plan(context(profile, cost, Goal.latency(50.0)))
    assert isinstance(plan, Plan)
