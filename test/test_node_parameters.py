"""The serving node's parameter table and consistency rules (no ROS)."""

import os
from pathlib import Path
import re

from delen_ros.engine.profiling import load_profile
from delen_ros.nodes.dds_profile import default_profiles_file, use_default_profiles
from delen_ros.nodes.parameters import (check_tenant, check_tenant_names, SERVER_PARAMETERS,
                                        tenant_defaults, tenant_goal, TENANT_PARAMETERS,
                                        unmeetable_bounds)
from delen_ros.runtime import CostModel, Goal, GoalError, PolicyError, PowerModel
import pytest


def _values(**changes):
    values = tenant_defaults('t')
    values.update(changes)
    return values


def test_every_parameter_is_described_and_numbers_have_ranges_with_steps():
    for spec in SERVER_PARAMETERS + TENANT_PARAMETERS:
        assert spec.description, spec.name
        if spec.kind in ('double', 'integer') and not spec.read_only:
            assert spec.minimum is not None and spec.step, spec.name
            assert spec.minimum <= spec.default <= spec.maximum, spec.name


def test_topics_default_to_relative_names_of_the_tenant():
    values = tenant_defaults('obstacle')
    assert values['input_topic'] == 'obstacle/image'
    assert values['output_topic'] == 'delen/obstacle/result'
    assert values['status_topic'] == 'delen/obstacle/status'


def test_defaults_accept_every_publisher_and_answer_late_rather_than_never():
    values = tenant_defaults('t')
    assert values['input_deadline_ms'] == 0.0
    assert values['on_infeasible'] == 'serve_first_exit'


def test_latency_bound_comes_from_the_parameter_else_the_offered_deadline():
    assert tenant_goal(_values(latency_ms=20.0), qos_deadline_ms=33.0,
                       fallback_latency_ms=100.0).latency_ms == 20.0
    assert tenant_goal(_values(), qos_deadline_ms=33.0,
                       fallback_latency_ms=100.0).latency_ms == 33.0
    assert tenant_goal(_values(), qos_deadline_ms=None,
                       fallback_latency_ms=100.0).latency_ms == 100.0
    energy = tenant_goal(_values(goal='energy', energy_mj=5.0), qos_deadline_ms=None,
                         fallback_latency_ms=100.0)
    assert energy.energy_mj == 5.0 and energy.latency_ms is None


@pytest.mark.parametrize('changes,error,words', [
    ({'goal': 'accuracy'}, GoalError, 'min_accuracy > 0'),
    ({'goal': 'energy'}, GoalError, 'energy_mj > 0'),
    ({'goal': 'speed'}, GoalError, 'one of latency, accuracy, energy'),
    ({'goal': 'accuracy', 'min_accuracy': 0.99}, GoalError, 'above what the model reaches'),
    ({'policy': 'fastest'}, PolicyError, 'fastest'),
])
def test_inconsistent_settings_are_refused_with_a_reason(changes, error, words):
    with pytest.raises(error, match=words):
        check_tenant(_values(**changes), max_accuracy=0.9376, qos_deadline_ms=None,
                     fallback_latency_ms=100.0)


@pytest.fixture(scope='module')
def profile():
    return load_profile(Path(__file__).resolve().parents[1] / 'models'
                        / 'fmnist_compact_resnet.profile.json')


@pytest.mark.parametrize('policy,words', [
    ('static:exit_index=99', 'exit_index 99 out of range'),
    ('static:exit_index=-99', 'exit_index -99 out of range'),
    ('budget:threads=1024', 'threads 1024 exceeds the'),
    ('confidence:threshold=1.5', 'threshold'),
    ('budget:gain=-1', 'gain must be in [0, 1]'),
])
def test_policy_arguments_are_checked_against_the_model_and_the_machine(profile, policy, words):
    with pytest.raises(PolicyError, match=re.escape(words)):
        check_tenant(_values(policy=policy), max_accuracy=profile.max_accuracy,
                     qos_deadline_ms=None, fallback_latency_ms=100.0, profile=profile)


def test_policies_within_the_model_and_the_cores_are_accepted(profile):
    for policy in ('static:exit_index=3', 'static:exit_index=-4', 'budget:threads=1'):
        check_tenant(_values(policy=policy), max_accuracy=profile.max_accuracy,
                     qos_deadline_ms=None, fallback_latency_ms=100.0, profile=profile)


def test_the_threads_parameter_stops_at_the_cores_this_process_may_use():
    threads = next(spec for spec in SERVER_PARAMETERS if spec.name == 'threads')
    assert threads.maximum == len(os.sched_getaffinity(0))


@pytest.mark.parametrize('names,words', [
    (['a', 'a'], "tenant 'a' is named twice"),
    (['a.b'], 'not a ROS name token'),
    ([''], 'not a ROS name token'),
    (['1a'], 'not a ROS name token'),
])
def test_bad_tenant_lists_are_refused(names, words):
    with pytest.raises(ValueError, match=words):
        check_tenant_names(names)
    assert check_tenant_names(['front', 'rear_2']) == ['front', 'rear_2']


def test_bounds_no_exit_can_meet_are_named(profile):
    cost = CostModel(profile, power=PowerModel.from_platform('generic_x86_2core'))
    first_ms = min(cost.expected(0, t).latency_ms for t in cost.thread_counts)
    tight = Goal.latency(first_ms / 2, energy_mj=1e-6)
    latency, energy = unmeetable_bounds(tight, cost)
    assert 'latency bound' in latency and 'below' in latency
    assert 'energy bound' in energy
    assert unmeetable_bounds(Goal.latency(first_ms * 2), cost) == ()
    assert unmeetable_bounds(Goal.accuracy(0.5), cost) == ()


def test_the_shipped_dds_profile_is_used_unless_the_environment_names_one():
    env = {}
    assert use_default_profiles(env) == str(default_profiles_file())
    assert env['FASTDDS_DEFAULT_PROFILES_FILE'].endswith('fastdds.xml')
    for chosen in ({'FASTRTPS_DEFAULT_PROFILES_FILE': '/robot.xml'},
                   {'FASTDDS_DEFAULT_PROFILES_FILE': ''},
                   {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}):
        env = dict(chosen)
        assert use_default_profiles(env) is None and env == chosen
