"""The scripted power trace of the demo (ROS-free): battery drain and heat-up over time."""

import math

from delen_ros.governor.power_trace import power_trace, PowerTrace
import pytest


def test_default_trace_goes_from_start_to_end_values_then_holds():
    start, middle, end = power_trace(0.0), power_trace(30.0), power_trace(60.0)
    assert (start.soc, start.temperature_c) == (0.9, 45.0)
    assert math.isclose(middle.soc, 0.5)
    assert math.isclose(end.soc, 0.1) and math.isclose(end.temperature_c, 80.0)
    later = power_trace(600.0)
    assert (later.soc, later.temperature_c) == (end.soc, end.temperature_c)
    before = power_trace(-5.0)  # before the start: the start values
    assert (before.soc, before.temperature_c) == (start.soc, start.temperature_c)


def test_battery_drains_linearly_and_the_temperature_levels_off():
    times = [0.5 * step for step in range(121)]
    samples = [power_trace(t) for t in times]
    for before, after in zip(samples, samples[1:]):
        assert after.soc < before.soc
        assert after.temperature_c > before.temperature_c
        assert after.voltage_v < before.voltage_v
    for t, sample in zip(times, samples):
        assert math.isclose(sample.soc, 0.9 - 0.8 * t / 60.0, abs_tol=1e-12)
    # Heating like a body towards a steady state: fast first, then levelling off.
    first_half = samples[60].temperature_c - samples[0].temperature_c
    second_half = samples[120].temperature_c - samples[60].temperature_c
    assert first_half > 2 * second_half


def test_the_shape_is_configurable():
    trace = PowerTrace(duration_s=10.0, soc_start=1.0, soc_end=0.5, temperature_start_c=30.0,
                       temperature_end_c=20.0)
    assert math.isclose(trace.sample(5.0).soc, 0.75)
    assert 20.0 < trace.sample(5.0).temperature_c < 30.0  # cooling down works too
    assert trace.sample(10.0).temperature_c == pytest.approx(20.0)
    assert power_trace(5.0, duration_s=10.0).soc == pytest.approx(0.5)


def test_loop_starts_again():
    trace = PowerTrace(duration_s=10.0, loop=True)
    assert math.isclose(trace.sample(12.0).soc, trace.sample(2.0).soc)
    assert math.isclose(trace.sample(12.0).soc, 0.74)
    assert trace.progress(25.0) == pytest.approx(0.5)


@pytest.mark.parametrize('shape, name', [
    ({'soc_end': 1.5}, 'soc_end'),
    ({'soc_start': -0.1}, 'soc_start'),
    ({'duration_s': 0.0}, 'duration_s'),
    ({'duration_s': float('nan')}, 'duration_s'),
    ({'temperature_end_c': float('inf')}, 'temperature_end_c'),
    ({'loop': 'yes'}, 'loop'),
])
def test_bad_shapes_are_refused(shape, name):
    with pytest.raises(ValueError, match=name):
        PowerTrace(**shape)


def test_bad_times_are_refused():
    with pytest.raises(ValueError, match='t_s'):
        power_trace(float('nan'))
