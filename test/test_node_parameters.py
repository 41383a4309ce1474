"""The serving node's parameter table and consistency rules (no ROS)."""

from delen_ros.nodes.parameters import (check_tenant, SERVER_PARAMETERS, tenant_defaults,
                                        tenant_goal, TENANT_PARAMETERS)
from delen_ros.runtime import GoalError, PolicyError
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
