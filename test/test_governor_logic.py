"""Governor rules: power states, hysteresis, thermal relaxation, staleness, bad inputs."""

from delen_ros.governor import (Adjustment, Governor, GovernorConfig, IGNORE_REASONS,
                                POWER_SUPPLY_STATUS_CHARGING, POWER_SUPPLY_STATUS_FULL,
                                PowerState, ThermalState)
import numpy as np
import pytest

NONE = Adjustment()
CRITICAL = Adjustment(energy_scale=0.4)
HOT = Adjustment(latency_scale=1.5, accuracy_drop=0.03)


def _fresh(governor, t, *, soc=None, celsius=None, status=None):
    if soc is not None:
        governor.update_battery(soc, stamp_s=t, power_supply_status=status)
    if celsius is not None:
        governor.update_temperature(celsius, stamp_s=t)
    return governor.decide(t)


# --- battery -------------------------------------------------------------------------------


def test_energy_scale_shrinks_as_the_battery_drains():
    governor = Governor()
    seen = []
    for step, soc in enumerate(np.linspace(0.95, 0.05, 19)):
        decision = _fresh(governor, float(step), soc=float(soc), celsius=30.0)
        assert not decision.stale_inputs and not decision.unheard_inputs
        seen.append((round(float(soc), 2), decision.power_state,
                     decision.adjustment.energy_scale))
    scales = [scale for _, _, scale in seen]
    assert scales == sorted(scales, reverse=True)
    by_soc = {soc: (state, scale) for soc, state, scale in seen}
    assert by_soc[0.5] == (PowerState.NORMAL, 1.0)
    assert by_soc[0.45] == (PowerState.SAVING, 0.7)
    assert by_soc[0.2] == (PowerState.SAVING, 0.7)
    assert by_soc[0.15] == (PowerState.CRITICAL, 0.4)
    # Energy only: latency and accuracy stay as the tenants asked while cool.
    assert governor.decide(18.0).adjustment == CRITICAL
    assert governor.decide(18.0).reason == 'battery soc 0.05: critical power, energy x0.40'


def test_recovery_needs_threshold_plus_hysteresis():
    governor = Governor(GovernorConfig(soc_hysteresis=0.05))
    expected = [
        (0.10, PowerState.CRITICAL),
        (0.21, PowerState.CRITICAL),  # above 0.20 but below 0.25
        (0.2499, PowerState.CRITICAL),
        (0.25, PowerState.SAVING),
        (0.52, PowerState.SAVING),    # above 0.50 but below 0.55
        (0.55, PowerState.NORMAL),
        (0.499, PowerState.SAVING),   # going down is immediate
        (0.19, PowerState.CRITICAL),
        (0.60, PowerState.NORMAL),    # a big jump skips saving
    ]
    for t, (soc, state) in enumerate(expected):
        decision = _fresh(governor, float(t), soc=soc, celsius=25.0)
        assert decision.power_state is state, f'soc {soc}'
    governor = Governor()
    _fresh(governor, 0.0, soc=0.1, celsius=25.0)
    held = _fresh(governor, 1.0, soc=0.22, celsius=25.0)
    assert any('hysteresis: saving again at soc >= 0.25' in r for r in held.reasons)


def _noisy_trace(center, amplitude, count, seed):
    rng = np.random.default_rng(seed)
    return center + rng.uniform(-amplitude, amplitude, size=count)


@pytest.mark.parametrize('center', [0.5, 0.2])
def test_noisy_soc_around_a_threshold_does_not_flap(center):
    # A clear reading above the threshold first, then noise of +-0.02 around it.
    trace = np.concatenate([[center + 0.1], _noisy_trace(center, 0.02, 2000, seed=1)])
    with_margin = Governor(GovernorConfig(soc_hysteresis=0.05))
    without_margin = Governor(GovernorConfig(soc_hysteresis=0.0))
    for t, soc in enumerate(trace):
        with_margin.update_battery(float(soc), stamp_s=float(t))
        without_margin.update_battery(float(soc), stamp_s=float(t))
    # One step down at the first dip below the threshold, then it holds.
    assert with_margin.transitions == 1
    # The same trace without a margin flaps hundreds of times: the margin is what helps.
    assert without_margin.transitions > 100


def test_slow_noisy_discharge_changes_state_once_per_threshold():
    rng = np.random.default_rng(2)
    trace = np.linspace(0.8, 0.05, 3000) + rng.normal(0.0, 0.01, size=3000)
    governor = Governor()
    states = []
    for t, soc in enumerate(np.clip(trace, 0.0, 1.0)):
        governor.update_battery(float(soc), stamp_s=float(t))
        if not states or states[-1] is not governor.power_state:
            states.append(governor.power_state)
    assert states == [PowerState.NORMAL, PowerState.SAVING, PowerState.CRITICAL]
    assert governor.transitions == 2


def test_charging_battery_counts_as_normal():
    governor = Governor()
    decision = _fresh(governor, 0.0, soc=0.1, celsius=25.0, status=POWER_SUPPLY_STATUS_CHARGING)
    assert decision.power_state is PowerState.NORMAL and decision.adjustment == NONE
    assert any('charging' in reason for reason in decision.reasons)
    assert _fresh(governor, 1.0, soc=0.1, celsius=25.0,
                  status=POWER_SUPPLY_STATUS_FULL).power_state is PowerState.NORMAL
    # Unplugged: the low charge takes effect at once.
    assert _fresh(governor, 2.0, soc=0.1, celsius=25.0).power_state is PowerState.CRITICAL
    strict = Governor(GovernorConfig(charging_is_normal=False))
    assert _fresh(strict, 0.0, soc=0.1, celsius=25.0,
                  status=POWER_SUPPLY_STATUS_CHARGING).power_state is PowerState.CRITICAL


# --- temperature ---------------------------------------------------------------------------


def test_heat_relaxes_latency_and_accuracy_until_cooled_past_the_margin():
    governor = Governor(GovernorConfig(hot_above_c=70.0, temperature_hysteresis_c=5.0,
                                       hot_latency_scale=1.5, hot_accuracy_drop=0.03))
    cool = _fresh(governor, 0.0, soc=0.9, celsius=60.0)
    assert cool.thermal_state is ThermalState.NOMINAL
    assert cool.adjustment == NONE and cool.reason == ''
    hot = _fresh(governor, 1.0, soc=0.9, celsius=70.0)
    assert hot.thermal_state is ThermalState.HOT and hot.changed
    assert hot.adjustment == HOT
    assert hot.reason == 'temperature 70.0 C: hot, latency x1.50, min_accuracy -0.03'
    cooling = _fresh(governor, 2.0, soc=0.9, celsius=66.0)
    assert cooling.thermal_state is ThermalState.HOT and not cooling.changed
    assert any('nominal again below 65.0 C' in r for r in cooling.reasons)
    assert _fresh(governor, 3.0, soc=0.9, celsius=65.0).thermal_state is ThermalState.HOT
    cooled = _fresh(governor, 4.0, soc=0.9, celsius=64.9)
    assert cooled.thermal_state is ThermalState.NOMINAL and cooled.adjustment == NONE


def test_noisy_temperature_around_the_threshold_does_not_flap():
    governor = Governor()
    trace = np.concatenate([[50.0], _noisy_trace(70.0, 2.0, 2000, seed=3)])
    for t, celsius in enumerate(trace):
        governor.update_temperature(float(celsius), stamp_s=float(t))
    assert governor.transitions == 1 and governor.thermal_state is ThermalState.HOT


def test_hot_and_critical_combine():
    governor = Governor()
    governor.update_battery(0.1, stamp_s=0.0)
    governor.update_temperature(90.0, stamp_s=0.0)
    decision = governor.decide(0.0)
    assert decision.adjustment == Adjustment(energy_scale=0.4, latency_scale=1.5,
                                             accuracy_drop=0.03)
    assert decision.reason.startswith('battery soc 0.10: critical power, energy x0.40; '
                                      'temperature 90.0 C: hot')


# --- no inputs, staleness ------------------------------------------------------------------


def test_no_readings_means_no_adjustment():
    governor = Governor()
    for t in (0.0, 30.0, 3600.0):  # however long it waits
        decision = governor.decide(t)
        assert decision.adjustment == NONE and decision.reason == ''
        assert decision.unheard_inputs == ('battery', 'temperature')
        assert not decision.stale_inputs
        assert decision.power_state is None and decision.thermal_state is None
        assert decision.changed == (t == 0.0)  # logged once, not at every decision
    assert 'battery: none heard yet, no adjustment' in decision.reasons


def test_only_an_input_once_heard_gets_its_safe_adjustment_when_stale():
    governor = Governor(GovernorConfig(stale_after_s=2.0))
    governor.update_battery(0.9, stamp_s=100.0)
    assert governor.decide(102.0).adjustment == NONE  # exactly stale_after_s: still fresh
    decision = governor.decide(102.5)
    assert decision.changed and decision.stale_inputs == ('battery',)
    assert decision.unheard_inputs == ('temperature',)
    # Stale battery: counted as critical; the temperature, never heard, adjusts nothing.
    assert decision.adjustment == CRITICAL
    assert decision.power_state is PowerState.CRITICAL and decision.thermal_state is None
    assert decision.reason == ('battery stale (silent for more than 2 s): safe adjustment, '
                               'counted as critical power, energy x0.40')
    assert not governor.decide(110.0).changed  # the same state: nothing new to log
    governor.update_temperature(30.0, stamp_s=111.0)
    later = governor.decide(120.0)
    assert later.stale_inputs == ('battery', 'temperature') and later.changed
    assert later.adjustment == CRITICAL.then(HOT)
    governor.update_battery(0.9, stamp_s=121.0)
    governor.update_temperature(30.0, stamp_s=121.0)
    recovered = governor.decide(121.0)
    assert recovered.adjustment == NONE and recovered.changed and not recovered.stale_inputs


def test_optional_inputs_count_as_normal_when_stale():
    governor = Governor(GovernorConfig(temperature_required=False, battery_required=False))
    hot = _fresh(governor, 0.0, soc=0.3, celsius=80.0)
    assert hot.adjustment == Adjustment(energy_scale=0.7).then(HOT)
    later = governor.decide(60.0)
    assert later.thermal_state is ThermalState.NOMINAL
    assert later.power_state is PowerState.NORMAL
    assert later.adjustment == NONE and not later.stale_inputs
    assert ('temperature stale (silent for more than 10 s); not required: counted as '
            'nominal') in later.reasons


# --- bad inputs ----------------------------------------------------------------------------


def test_bad_readings_are_ignored_and_counted():
    governor = Governor()
    _fresh(governor, 0.0, soc=0.9, celsius=30.0)
    assert not governor.update_battery(float('nan'), stamp_s=1.0)
    assert not governor.update_battery(57.0, stamp_s=1.0)  # a driver publishing percent
    assert not governor.update_battery(-0.1, stamp_s=1.0)
    assert not governor.update_battery(0.1, stamp_s=float('inf'))
    assert not governor.update_battery(0.1, stamp_s=-1.0)  # older than the last reading
    assert not governor.update_temperature(float('nan'), stamp_s=1.0)
    assert not governor.update_temperature(-273.15, stamp_s=1.0)
    assert not governor.update_temperature(float('inf'), stamp_s=1.0)
    assert not governor.update_temperature(500.0, stamp_s=1.0)
    assert not governor.update_temperature(95.0, stamp_s=None)
    decision = governor.decide(1.0)
    assert decision.power_state is PowerState.NORMAL
    assert decision.thermal_state is ThermalState.NOMINAL
    assert decision.adjustment == NONE and not decision.changed
    assert decision.ignored == {
        'battery_nan': 1, 'battery_out_of_range': 2, 'battery_bad_stamp': 1,
        'battery_out_of_order': 1, 'temperature_nan': 1, 'temperature_implausible': 3,
        'temperature_bad_stamp': 1}
    assert set(decision.ignored) <= set(IGNORE_REASONS)
    assert any(r.startswith('ignored readings: battery_nan 1') for r in decision.reasons)


def test_nan_readings_alone_adjust_nothing():
    governor = Governor()
    for t in range(5):
        governor.update_battery(float('nan'), stamp_s=float(t))
        governor.update_temperature(float('nan'), stamp_s=float(t))
    decision = governor.decide(30.0)
    assert decision.adjustment == NONE and decision.power_state is None
    assert decision.unheard_inputs == ('battery', 'temperature')


@pytest.mark.parametrize('kwargs,words', [
    ({'critical_below_soc': 0.6}, ['critical_below_soc 0.6 must be below saving_below_soc 0.5']),
    ({'saving_below_soc': 0.0}, ['saving_below_soc must be in (0, 1]', 'got 0']),
    ({'saving_below_soc': 0.98}, ['saving_below_soc 0.98 + soc_hysteresis 0.05 exceeds 1']),
    ({'soc_hysteresis': -0.01}, ['soc_hysteresis must be in [0, 1]']),
    ({'energy_scale_saving': 1.2}, ['must not grow as the battery drains', '1 / 1.2 / 0.4']),
    ({'energy_scale_critical': 0.0}, ['energy_scale_critical must be in [0.01, 100]']),
    ({'hot_latency_scale': 0.5}, ['hot_latency_scale must be in [1, 100]', 'got 0.5']),
    ({'hot_accuracy_drop': 1.5}, ['hot_accuracy_drop must be in [0, 1]']),
    ({'stale_after_s': 0}, ['stale_after_s must be in (0, inf]']),
    ({'stale_after_s': float('nan')}, ['stale_after_s must be a finite number', 'nan']),
    ({'hot_above_c': 200.0}, ['hot_above_c must be in (-40, 150)']),
    ({'temperature_hysteresis_c': 200.0}, ['temperature_hysteresis_c must be in [0, 110)']),
    ({'plausible_temperature_c': 5}, ['plausible_temperature_c must be (low, high)']),
    ({'battery_required': 'yes'}, ['battery_required must be true or false', "'yes'"]),
    ({'hot_latency_scale': 500.0}, ['hot_latency_scale must be in [1, 100]']),
    ({'saving_below_soc': True}, ['saving_below_soc must be a finite number, got True']),
])
def test_invalid_config_is_refused_with_a_clear_message(kwargs, words):
    with pytest.raises(ValueError) as caught:
        GovernorConfig(**kwargs)
    for word in words:
        assert word in str(caught.value)


def test_config_from_mapping():
    config = GovernorConfig.from_mapping({
        'saving_below_soc': 0.4, 'critical_below_soc': 0.1,
        'plausible_temperature_c': [-20, 120]})
    assert config.plausible_temperature_c == (-20.0, 120.0)
    assert config.saving_below_soc == 0.4
    assert GovernorConfig.from_mapping(config.as_dict()) == config
    with pytest.raises(ValueError, match='unknown governor config key.*battery_low'):
        GovernorConfig.from_mapping({'battery_low': 0.2})


def test_decide_refuses_bad_arguments_by_name():
    with pytest.raises(ValueError, match='now_s must be a finite time'):
        Governor().decide(float('nan'))
    with pytest.raises(ValueError, match='config must be a GovernorConfig'):
        Governor({'stale_after_s': 1})


# --- change detection and determinism ------------------------------------------------------


def test_changed_only_when_the_adjustment_or_states_move():
    governor = Governor()
    first = _fresh(governor, 0.0, soc=0.9, celsius=30.0)
    assert first.changed
    same = _fresh(governor, 1.0, soc=0.85, celsius=31.0)
    assert not same.changed and same.reason == first.reason == ''
    assert _fresh(governor, 2.0, soc=0.4).changed
    assert not _fresh(governor, 3.0, soc=0.38).changed


def test_same_trace_gives_the_same_decisions():
    rng = np.random.default_rng(4)
    socs = np.clip(np.linspace(0.9, 0.1, 400) + rng.normal(0, 0.02, 400), 0, 1)
    temps = 60.0 + 15.0 * np.sin(np.linspace(0, 6, 400)) + rng.normal(0, 1, 400)

    def replay():
        governor = Governor()
        decisions = []
        for t, (soc, celsius) in enumerate(zip(socs, temps)):
            if t % 37 != 0:  # a few gaps, to pass through staleness
                governor.update_battery(float(soc), stamp_s=float(t))
                governor.update_temperature(float(celsius), stamp_s=float(t))
            decisions.append(governor.decide(float(t) + (15.0 if t % 97 == 0 else 0.0)))
        return decisions

    first, second = replay(), replay()
    assert first == second
    assert any(d.stale_inputs for d in first)
    assert {d.power_state for d in first} >= set(PowerState)
    assert {d.thermal_state for d in first} >= set(ThermalState)


def test_real_battery_and_temperature_messages():
    msg = pytest.importorskip('sensor_msgs.msg')
    assert msg.BatteryState.POWER_SUPPLY_STATUS_CHARGING == POWER_SUPPLY_STATUS_CHARGING
    assert msg.BatteryState.POWER_SUPPLY_STATUS_FULL == POWER_SUPPLY_STATUS_FULL
    governor = Governor()
    battery = msg.BatteryState(percentage=0.15, power_supply_status=(
        msg.BatteryState.POWER_SUPPLY_STATUS_DISCHARGING))
    assert governor.update_battery(battery.percentage, stamp_s=0.0,
                                   power_supply_status=battery.power_supply_status)
    unknown = msg.BatteryState(percentage=float('nan'))
    assert not governor.update_battery(unknown.percentage, stamp_s=1.0)
    temperature = msg.Temperature(temperature=72.5, variance=0.0)
    assert governor.update_temperature(temperature.temperature, stamp_s=0.0)
    decision = governor.decide(1.0)
    assert decision.power_state is PowerState.CRITICAL
    assert decision.thermal_state is ThermalState.HOT
    assert decision.ignored == {'battery_nan': 1}
