"""ALERT policies: Kalman slowdown, brute-force optimal choice, per-setting filters, baselines."""

import itertools
import math

from delen_ros.engine.profiling import load_profile, ModelProfile, PROFILE_FORMAT, ProfileError
from delen_ros.runtime.cost import CostModel
from delen_ros.runtime.energy import PowerModel, PowerSetting
from delen_ros.runtime.goals import Goal, GoalKind
from delen_ros.runtime.kalman import alert_filter, KalmanConfig
from delen_ros.runtime.policies import make_policy, Outcome, Plan, PolicyError, RequestContext
from delen_ros.runtime.policies.alert import AlertPolicy, deadline_probability
from delen_ros.runtime.policies.alert_plus import AlertPlusPolicy
import numpy as np
import pytest

# Latency (ms, median) of the plain path to each exit, per thread count; p95 = 1.2 x median.
PLAIN_MS = {1: [1.5, 3.5, 6.0, 9.0], 2: [1.0, 2.3, 4.0, 6.0]}
STAGE_MS = {1: [1.5, 2.2, 2.6, 3.2], 2: [1.0, 1.4, 1.8, 2.1]}
ACCURACY = [0.84, 0.89, 0.915, 0.93]


def _stats(median):
    return {'median': median, 'p95': 1.2 * median, 'p99': 1.4 * median}


def synthetic_profile() -> ModelProfile:
    """Build a fixed 4-exit, 2-thread-count profile (the shape the profiler writes)."""
    exits = []
    for k, accuracy in enumerate(ACCURACY):
        exits.append({
            'index': k, 'flops': 10 ** 6 * (k + 1), 'stage_flops': 10 ** 6, 'params': 1000,
            'accuracy': accuracy, 'temperature': 1.0,
            'latency_ms': {str(t): _stats(PLAIN_MS[t][k]) for t in PLAIN_MS},
            'stage_latency_ms': {str(t): _stats(STAGE_MS[t][k]) for t in STAGE_MS},
            'confidence_thresholds': [],
            'reliability': [{'low': 0.0, 'high': 1.0, 'count': 100, 'accuracy': accuracy}],
        })
    return ModelProfile({'format': PROFILE_FORMAT, 'thread_counts': [1, 2], 'exits': exits})


def power_model() -> PowerModel:
    return PowerModel(name='test', idle_w=2.0, settings=[PowerSetting(1, 5.5),
                                                         PowerSetting(2, 9.0)])


@pytest.fixture
def profile():
    return synthetic_profile()


@pytest.fixture
def cost(profile):
    return CostModel(profile, power=power_model())


def context(profile, cost, goal, *, remaining_ms=None, queue_ms=0.0):
    remaining = goal.latency_ms - queue_ms if goal.latency_ms is not None else math.inf
    return RequestContext(
        tenant='t', goal=goal, num_exits=profile.num_exits, queue_ms=queue_ms,
        remaining_ms=remaining if remaining_ms is None else remaining_ms,
        energy_budget_mj=goal.energy_mj if goal.energy_mj is not None else math.inf,
        default_threads=1, thread_counts=tuple(profile.thread_counts), cost=cost,
        profile=profile)


def outcome(plan: Plan, compute_ms: float, goal: Goal) -> Outcome:
    return Outcome(
        tenant='t', goal=goal, plan=plan, threads=plan.threads, exit_index=plan.target_exit,
        exits_evaluated=(plan.target_exit,),
        stage_latencies_ms=(compute_ms,) * (plan.target_exit + 1), queue_ms=0.0,
        compute_ms=compute_ms, latency_ms=compute_ms,
        energy_mj=power_model().active_w(plan.threads) * compute_ms, deadline_met=True,
        confidence=0.9, expected_accuracy=0.9, slowdown=1.0)


# -- the Kalman filter ----------------------------------------------------------------------


def recorded_latencies():
    """Median and p95 of the plain path per (exit, threads) from the shipped profile, if any."""
    try:
        shipped = load_profile()
    except ProfileError:
        shipped = synthetic_profile()
    return [(shipped.exit_latency_ms(k, t), shipped.exit_latency_ms(k, t, 'p95'))
            for k in range(shipped.num_exits) for t in shipped.thread_counts]


def test_kalman_converges_to_an_injected_slowdown():
    rng = np.random.default_rng(0)
    pairs = recorded_latencies()
    kalman = alert_filter()
    for injected in (3.0, 1.0, 40.0, 1.5):
        estimates = []
        for _ in range(80):
            median, p95 = pairs[rng.integers(len(pairs))]
            # A latency as the profile recorded it (log-normal with its median and p95)...
            sigma = max(math.log(p95 / median) / 1.645, 1e-3)
            recorded = median * math.exp(rng.normal(0.0, sigma))
            # ... slowed down by the injected factor, observed against the profiled median.
            kalman.update(injected * recorded / median)
            estimates.append(kalman.mean)
        assert np.mean(estimates[-40:]) == pytest.approx(injected, rel=0.05), injected
        assert kalman.mean == pytest.approx(injected, rel=0.3), injected
        assert kalman.predictive_std < 0.5 * injected


def test_kalman_process_noise_adapts_to_a_jump():
    kalman = alert_filter(KalmanConfig(measurement_noise=0.01))
    for _ in range(50):
        kalman.update(1.0)
    calm = kalman.process_noise
    kalman.update(20.0)
    assert kalman.process_noise > 100 * calm
    for _ in range(3):
        kalman.update(20.0)
    assert kalman.mean > 15.0, 'adaptive Q should track a jump within a few observations'
    for _ in range(50):
        kalman.update(20.0)
    assert kalman.process_noise < 0.01


def test_kalman_ignores_garbage():
    kalman = alert_filter()
    for value in (math.nan, math.inf, -1.0, 0.0):
        kalman.update(value)
    assert kalman.count == 0 and kalman.mean == 1.0


def test_policy_learns_the_slowdown_from_outcomes(profile, cost):
    policy = make_policy('alert')
    goal = Goal.latency(1000.0)
    for _ in range(40):
        plan = policy.plan(context(profile, cost, goal))
        policy.observe(outcome(plan, 2.5 * PLAIN_MS[plan.threads][plan.target_exit], goal))
    assert policy.filter.mean == pytest.approx(2.5, rel=0.02)


def test_energy_ratio_follows_the_meter_and_loosens_an_energy_bound(profile, cost):
    goal = Goal.energy(30.0)
    policy = make_policy('alert')
    first = policy.plan(context(profile, cost, goal))
    for _ in range(40):
        plan = policy.plan(context(profile, cost, goal))
        compute = PLAIN_MS[plan.threads][plan.target_exit]
        # The meter charges half of active power x time (e.g. CPU time under contention).
        result = outcome(plan, compute, goal)
        policy.observe(Outcome(**{**vars(result), 'energy_mj': 0.5 * result.energy_mj}))
    assert policy.energy_filter.mean == pytest.approx(0.5, rel=0.05)
    later = policy.plan(context(profile, cost, goal))
    assert later.target_exit > first.target_exit


def test_deadline_probability_is_a_gaussian_tail():
    assert deadline_probability(10.0, 5.0, 2.0, 0.1) == pytest.approx(0.5)
    assert deadline_probability(math.inf, 5.0, 2.0, 0.1) == 1.0
    assert deadline_probability(-1.0, 5.0, 2.0, 0.1) == 0.0
    assert deadline_probability(12.0, 5.0, 2.0, 0.2) == pytest.approx(0.9772, abs=1e-3)


# -- brute force ------------------------------------------------------------------------------


def gaussian_within(bound, nominal, mean, std):
    if math.isinf(bound):
        return 1.0
    return 0.5 * math.erfc(-(bound / nominal - mean) / (std * math.sqrt(2)))


def brute_force(profile, goal, remaining_ms, slowdown, *, max_miss, tolerance=0.002,
                idle_w=2.0, energy_ratio=None, exits=None, threads=None):
    """Enumerate every (exit, threads) pair with the objective written out independently."""
    watts = {1: 5.5, 2: 9.0}
    energy_ratio = energy_ratio or {1: (1.0, 0.1), 2: (1.0, 0.1)}
    rows = []
    for t, k in itertools.product(threads or (1, 2), exits or range(4)):
        mean, std = slowdown[t]
        profiled = PLAIN_MS[t][k]
        latency = mean * profiled
        p = gaussian_within(remaining_ms, profiled, mean, std)
        period = goal.latency_ms
        ratio, ratio_std = energy_ratio[t]
        active = watts[t] * profiled * ratio
        p_energy = gaussian_within(goal.energy_mj or math.inf, watts[t] * profiled, ratio,
                                   ratio_std)
        energy = active + (idle_w * max(period - latency, 0.0) if period else 0.0)
        rows.append({'exit': k, 'threads': t, 'p': p, 'acc': ACCURACY[k] * p,
                     'energy': energy, 'p_energy': p_energy, 'latency': latency})

    def within(row, with_accuracy):
        if goal.latency_ms is not None and row['p'] < 1.0 - max_miss:
            return False
        if goal.energy_mj is not None and row['p_energy'] < 1.0 - max_miss:
            return False
        return not (with_accuracy and row['acc'] < goal.min_accuracy)
    if goal.kind is GoalKind.ACCURACY:
        feasible = [r for r in rows if within(r, True)]
        if feasible:
            best = min(feasible, key=lambda r: (r['energy'], -r['acc'], r['threads']))
            return best['exit'], best['threads']
    else:
        feasible = [r for r in rows if within(r, False)]
        if feasible:
            top = max(r['acc'] for r in feasible)
            near = [r for r in feasible if r['acc'] >= top - tolerance]
            best = min(near, key=lambda r: (r['energy'], -r['acc'], r['threads']))
            return best['exit'], best['threads']
    best = max(rows, key=lambda r: (r['p'] * r['p_energy'], r['acc'], -r['latency'],
                                    -r['threads']))
    return best['exit'], best['threads']


GOALS = [Goal.latency(b) for b in (1.2, 3.0, 4.5, 6.5, 9.5, 20.0, 200.0)] + [
    Goal.latency(20.0, energy_mj=e) for e in (10.0, 25.0, 40.0)] + [
    Goal.accuracy(a) for a in (0.8, 0.88, 0.91, 0.925)] + [
    Goal.accuracy(a, latency_ms=b) for a in (0.85, 0.9) for b in (3.0, 7.0, 12.0)] + [
    Goal.energy(e) for e in (6.0, 15.0, 30.0, 80.0)] + [
    Goal.energy(e, latency_ms=b) for e in (15.0, 40.0) for b in (4.0, 10.0)]


@pytest.mark.parametrize('factor', [1.0, 1.8, 6.0])
@pytest.mark.parametrize('goal', GOALS, ids=str)
def test_alert_choice_is_the_brute_force_optimum(profile, cost, goal, factor):
    policy = make_policy('alert')
    # Put the filter in a known state: it has seen the slowdown ``factor`` many times.
    for _ in range(30):
        policy.filter.update(factor)
        policy.energy_filter.update(0.5 + factor / 2)
    std = policy.filter.predictive_std
    plan = policy.plan(context(profile, cost, goal))
    remaining = goal.latency_ms if goal.latency_ms is not None else math.inf
    ratio = (policy.energy_filter.mean, policy.energy_filter.predictive_std)
    expected = brute_force(profile, goal, remaining, {1: (policy.filter.mean, std),
                                                      2: (policy.filter.mean, std)},
                           max_miss=0.01, energy_ratio={1: ratio, 2: ratio})
    assert (plan.target_exit, plan.threads) == expected


@pytest.mark.parametrize('goal', GOALS[:10], ids=str)
def test_alert_plus_choice_is_the_brute_force_optimum_per_setting(profile, cost, goal):
    policy = make_policy('alert_plus', explore_every=10 ** 6)
    for _ in range(30):
        policy.slowdown(1).update(1.6)
        policy.slowdown(2).update(60.0)
        policy.energy_ratio(1).update(1.1)
        policy.energy_ratio(2).update(3.0)
    estimates = {t: (policy.slowdown(t).mean, policy.slowdown(t).predictive_std)
                 for t in (1, 2)}
    ratios = {t: (policy.energy_ratio(t).mean, policy.energy_ratio(t).predictive_std)
              for t in (1, 2)}
    plan = policy.plan(context(profile, cost, goal))
    remaining = goal.latency_ms if goal.latency_ms is not None else math.inf
    assert (plan.target_exit, plan.threads) == brute_force(
        profile, goal, remaining, estimates, max_miss=0.01, energy_ratio=ratios)


def test_queueing_eats_into_the_budget(profile, cost):
    policy = make_policy('alert')
    for _ in range(30):
        policy.filter.update(1.0)
    goal = Goal.latency(9.5)
    free = policy.plan(context(profile, cost, goal))
    late = policy.plan(context(profile, cost, goal, queue_ms=6.0))
    assert free.target_exit == 3
    assert late.target_exit < free.target_exit


# -- per-setting estimates and exploration ---------------------------------------------------


def run_requests(policy, profile, cost, goal, count, slowdown):
    """Plan/observe ``count`` requests where threads t run ``slowdown[t]`` x the profile."""
    plans = []
    for _ in range(count):
        plan = policy.plan(context(profile, cost, goal))
        policy.observe(outcome(plan, slowdown[plan.threads]
                               * PLAIN_MS[plan.threads][plan.target_exit], goal))
        plans.append(plan)
    return plans


def test_global_slowdown_oscillates_where_per_setting_estimates_settle(profile, cost):
    # Contention as measured on the 2-core machines: 2 threads ~100x slower, 1 thread ~1.7x.
    contention = {1: 1.7, 2: 100.0}
    goal = Goal.latency(6.5)
    alert = make_policy('alert')
    plus = make_policy('alert_plus')
    alert_plans = run_requests(alert, profile, cost, goal, 200, contention)
    plus_plans = run_requests(plus, profile, cost, goal, 200, contention)
    alert_two = sum(p.threads == 2 for p in alert_plans[50:])
    plus_two = sum(p.threads == 2 for p in plus_plans[50:])
    assert alert_two > 3 * max(plus_two, 1), (alert_two, plus_two)
    assert plus_two <= 4, 'alert_plus should probe 2 threads rarely (back-off)'
    assert plus.slowdown(2).mean > 50 and plus.slowdown(1).mean == pytest.approx(1.7, rel=0.1)


def test_alert_plus_refreshes_a_stale_setting(profile, cost):
    goal = Goal.latency(8.5)
    plus = make_policy('alert_plus', explore_every=20)
    run_requests(plus, profile, cost, goal, 150, {1: 1.7, 2: 100.0})
    assert plus.backoff[2] > 1
    # Contention ends: 1 thread is back to its profile; 2 threads is too, but stale.
    plans = run_requests(plus, profile, cost, goal, 400, {1: 1.0, 2: 1.0})
    assert plus.slowdown(2).mean < 1.5, 'a probe should have refreshed the 2-thread estimate'
    assert plus.backoff[2] == 1
    # With 8.5 ms, exit 3 fits only with 2 threads: once refreshed, 2 threads is used (but
    # for probes of the now stale 1-thread setting).
    assert sum(p.threads == 2 and p.target_exit == 3 for p in plans[-100:]) >= 90


def test_alert_plus_does_not_probe_when_the_risk_is_too_high(profile, cost):
    plus = make_policy('alert_plus', explore_every=5)
    goal = Goal.latency(1.2)  # only exit 0 with 2 threads fits at all
    for _ in range(30):
        plus.slowdown(1).update(1.0)
    plus.slowdown(2)  # known but never used: its filter is at the prior
    plus.last_used[2] = 0
    plans = run_requests(plus, profile, cost, goal, 30, {1: 1.0, 2: 1.0})
    assert {p.threads for p in plans} <= {1, 2}
    assert plus.probes == 0 or all(p.target_exit == 0 for p in plans)


# -- baselines on the same API -----------------------------------------------------------------


def test_app_only_keeps_all_threads_and_sys_only_the_last_exit(profile, cost):
    goals = [Goal.latency(b) for b in (1.2, 4.5, 9.5, 200.0)] + [Goal.accuracy(0.9)]
    app, sys_only = make_policy('app_only'), make_policy('sys_only')
    for goal in goals:
        app_plans = run_requests(app, profile, cost, goal, 10, {1: 1.0, 2: 3.0})
        sys_plans = run_requests(sys_only, profile, cost, goal, 10, {1: 1.0, 2: 3.0})
        assert {p.threads for p in app_plans} == {2}
        assert {p.target_exit for p in sys_plans} == {3}
    tight = run_requests(make_policy('app_only'), profile, cost, Goal.latency(1.2), 5,
                         {1: 1.0, 2: 1.0})
    assert {p.target_exit for p in tight} == {0}
    loose = run_requests(make_policy('sys_only'), profile, cost, Goal.latency(200.0), 5,
                         {1: 1.0, 2: 1.0})
    assert {p.threads for p in loose} == {1}, 'with time to spare 1 thread costs less energy'


def test_policy_parameters_are_validated():
    for spec in ('alert:max_miss=2', 'alert:forgetting=1', 'alert:measurement_noise=0',
                 'alert_plus:explore_every=0', 'alert_plus:slow_margin=0.5',
                 'alert:nonsense=1'):
        with pytest.raises(PolicyError):
            make_policy(spec)
    policy = make_policy('alert_plus:explore_every=7,max_miss=0.05')
    assert isinstance(policy, AlertPlusPolicy) and isinstance(policy, AlertPolicy)
    assert make_policy(policy.describe()).params() == policy.params()


def test_deadline_probability_counts_heavy_tails():
    residuals = sorted([1.0] * 90 + [4.0] * 10)
    gaussian = deadline_probability(10.0, 5.0, 1.0, 0.1)
    assert gaussian > 0.999
    assert deadline_probability(10.0, 5.0, 1.0, 0.1, residuals) == pytest.approx(0.9)
    assert deadline_probability(10.0, 5.0, 1.0, 0.1, residuals[:10]) == gaussian


def test_alert_plus_misses_fewer_deadlines_under_heavy_tails(profile, cost):
    # 1 thread, as under a CPU hog: usually 1.5x the profile, 8 % of requests preempted (4x).
    rng = np.random.default_rng(3)
    goal = Goal.latency(12.0)  # exit 0 fits even when preempted, the others do not
    misses = {}
    for spec in ('alert:threads=1', 'alert_plus:threads=1'):
        policy, missed = make_policy(spec), 0
        for _ in range(600):
            plan = policy.plan(context(profile, cost, goal))
            ratio = 1.5 * math.exp(rng.normal(0.0, 0.1)) * (4.0 if rng.random() < 0.08 else 1.0)
            compute = ratio * PLAIN_MS[1][plan.target_exit]
            missed += compute > goal.latency_ms
            policy.observe(outcome(plan, compute, goal))
        misses[spec.split(':')[0]] = missed / 600
    assert misses['alert_plus'] <= 0.02 < misses['alert'], misses


def test_alert_plus_leaves_a_setting_that_cannot_meet_the_bounds(profile, cost):
    goal = Goal.latency(4.5)
    plus = make_policy('alert_plus', explore_every=10)
    for _ in range(30):  # 1 thread was slow when last used
        plus.slowdown(1).update(5.0)
    run_requests(plus, profile, cost, goal, 50, {1: 5.0, 2: 1.0})
    assert plus.last_choice.threads == 2
    # Now 2 threads is hopeless (nothing fits) and 1 thread is fine, but its estimate is stale.
    plans = run_requests(plus, profile, cost, goal, 200, {1: 1.0, 2: 6.0})
    assert plus.probes >= 1
    assert sum(p.threads == 1 for p in plans[-50:]) >= 45
