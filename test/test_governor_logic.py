"""Governor rules: power states, hysteresis, thermal relaxation, stale fallback, bad inputs."""

import math

from delen_ros.governor import (Adjustment, Budgets, Governor, GovernorConfig,
                                IGNORE_REASONS, POWER_SUPPLY_STATUS_CHARGING,
                                POWER_SUPPLY_STATUS_FULL, PowerState, ThermalState)
import numpy as np
import pytest

BASE = {
    'navigation': Budgets(latency_ms=50.0, min_accuracy=0.80, energy_mj=10.0),
    'inspection': Budgets(latency_ms=200.0, min_accuracy=0.90, energy_mj=40.0),
}


def _fresh(governor, t, *, soc=None, celsius=None, status=None):
    if soc is not None:
        governor.update_battery(soc, stamp_s=t, power_supply_status=status)
    if celsius is not None:
        governor.update_temperature(celsius, stamp_s=t)
    return governor.decide(t, BASE)


# --- battery -------------------------------------------------------------------------------


def test_energy_budgets_shrink_as_the_battery_drains():
    governor = Governor()
    seen = []
    for step, soc in enumerate(np.linspace(0.95, 0.05, 19)):
        decision = _fresh(governor, float(step), soc=float(soc), celsius=30.0)
        assert not decision.fallback
        seen.append((round(float(soc), 2), decision.power_state,
                     decision.budgets['navigation'].energy_mj))
    energies = [energy for _, _, energy in seen]
    assert energies == sorted(energies, reverse=True)
    by_soc = {soc: (state, energy) for soc, state, energy in seen}
    assert by_soc[0.5] == (PowerState.NORMAL, 10.0)
    assert by_soc[0.45] == (PowerState.SAVING, pytest.approx(7.0))
    assert by_soc[0.2] == (PowerState.SAVING, pytest.approx(7.0))
    assert by_soc[0.15] == (PowerState.CRITICAL, pytest.approx(4.0))
    # Energy only: latency and accuracy stay as the tenant asked while cool.
    final = governor.decide(18.0, BASE).budgets['inspection']
    assert (final.latency_ms, final.min_accuracy) == (200.0, 0.90)
    assert final.energy_mj == pytest.approx(16.0)


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
    assert decision.power_state is PowerState.NORMAL
    assert decision.budgets['navigation'].energy_mj == 10.0
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
    assert cool.budgets == BASE
    hot = _fresh(governor, 1.0, soc=0.9, celsius=70.0)
    assert hot.thermal_state is ThermalState.HOT and hot.changed
    nav = hot.budgets['navigation']
    assert nav.latency_ms == pytest.approx(75.0)
    assert nav.min_accuracy == pytest.approx(0.77)
    assert nav.energy_mj == 10.0
    cooling = _fresh(governor, 2.0, soc=0.9, celsius=66.0)
    assert cooling.thermal_state is ThermalState.HOT and not cooling.changed
    assert any('nominal again below 65.0 C' in r for r in cooling.reasons)
    assert _fresh(governor, 3.0, soc=0.9, celsius=65.0).thermal_state is ThermalState.HOT
    cooled = _fresh(governor, 4.0, soc=0.9, celsius=64.9)
    assert cooled.thermal_state is ThermalState.NOMINAL and cooled.budgets == BASE


def test_noisy_temperature_around_the_threshold_does_not_flap():
    governor = Governor()
    trace = np.concatenate([[50.0], _noisy_trace(70.0, 2.0, 2000, seed=3)])
    for t, celsius in enumerate(trace):
        governor.update_temperature(float(celsius), stamp_s=float(t))
    assert governor.transitions == 1 and governor.thermal_state is ThermalState.HOT


def test_hot_and_critical_combine_and_clamp():
    base = {'low': Budgets(latency_ms=10.0, min_accuracy=0.01, energy_mj=math.inf),
            'top': Budgets(latency_ms=10.0, min_accuracy=1.0, energy_mj=5.0)}
    governor = Governor()
    governor.update_battery(0.1, stamp_s=0.0)
    governor.update_temperature(90.0, stamp_s=0.0)
    decision = governor.decide(0.0, base)
    assert decision.adjustment == Adjustment(energy_scale=0.4, latency_scale=1.5,
                                             accuracy_drop=0.03)
    assert decision.budgets['low'].min_accuracy == 0.0  # clamped, not -0.02
    assert decision.budgets['low'].energy_mj == math.inf  # unbounded stays unbounded
    assert decision.budgets['top'].min_accuracy == pytest.approx(0.97)
    assert decision.budgets['top'].energy_mj == pytest.approx(2.0)
    assert decision.budgets['top'].latency_ms == pytest.approx(15.0)


# --- staleness and fallback ----------------------------------------------------------------


def test_no_readings_yet_means_fallback():
    decision = Governor().decide(0.0, BASE)
    assert decision.fallback and decision.stale_inputs == ('battery', 'temperature')
    assert decision.power_state is None and decision.thermal_state is None
    assert 'battery: no message yet' in decision.reasons
    # Default fallback: the worst case, critical and hot at once.
    nav = decision.budgets['navigation']
    assert (nav.latency_ms, nav.energy_mj) == (pytest.approx(75.0), pytest.approx(4.0))
    assert nav.min_accuracy == pytest.approx(0.77)


def test_stale_input_falls_back_with_a_reason_and_recovers():
    config = GovernorConfig(stale_after_s=2.0, safe_budgets={
        'inspection': {'latency_ms': 500.0, 'min_accuracy': 0.5, 'energy_mj': 5.0}},
        fallback=Adjustment(energy_scale=0.5))
    governor = Governor(config)
    governor.update_battery(0.9, stamp_s=100.0)
    governor.update_temperature(30.0, stamp_s=100.0)
    assert not governor.decide(102.0, BASE).fallback  # exactly stale_after_s: still fresh
    governor.update_temperature(30.0, stamp_s=102.0)
    decision = governor.decide(102.5, BASE)
    assert decision.fallback and decision.changed
    assert decision.stale_inputs == ('battery',)
    assert 'battery stale: last message 2.5 s ago (stale_after_s 2)' in decision.reasons
    assert decision.budgets['inspection'] == Budgets(latency_ms=500.0, min_accuracy=0.5,
                                                     energy_mj=5.0)
    assert decision.budgets['navigation'] == Budgets(latency_ms=50.0, min_accuracy=0.8,
                                                     energy_mj=5.0)
    assert any('safe_budgets for inspection' in r for r in decision.reasons)
    assert decision.power_state is PowerState.NORMAL  # last known, reported as such
    governor.update_battery(0.9, stamp_s=103.0)
    recovered = governor.decide(103.0, BASE)
    assert not recovered.fallback and recovered.budgets == BASE and recovered.changed


def test_optional_temperature_may_be_missing():
    governor = Governor(GovernorConfig(temperature_required=False))
    decision = _fresh(governor, 0.0, soc=0.3)
    assert not decision.fallback
    assert decision.thermal_state is ThermalState.NOMINAL
    assert any('temperature: no message yet; not required' in r for r in decision.reasons)
    assert decision.budgets['navigation'].energy_mj == pytest.approx(7.0)
    # Once it reports heat, it is used; when it goes quiet again it counts as nominal.
    hot = _fresh(governor, 1.0, soc=0.3, celsius=80.0)
    assert hot.thermal_state is ThermalState.HOT
    later = _fresh(governor, 60.0, soc=0.3)
    assert later.thermal_state is ThermalState.NOMINAL and not later.fallback


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
    decision = governor.decide(1.0, BASE)
    assert decision.power_state is PowerState.NORMAL
    assert decision.thermal_state is ThermalState.NOMINAL
    assert decision.budgets == BASE and not decision.changed
    assert decision.ignored == {
        'battery_nan': 1, 'battery_out_of_range': 2, 'battery_bad_stamp': 1,
        'battery_out_of_order': 1, 'temperature_nan': 1, 'temperature_implausible': 3,
        'temperature_bad_stamp': 1}
    assert set(decision.ignored) <= set(IGNORE_REASONS)
    assert any(r.startswith('ignored readings: battery_nan 1') for r in decision.reasons)


def test_nan_readings_alone_leave_the_governor_in_fallback():
    governor = Governor()
    for t in range(5):
        governor.update_battery(float('nan'), stamp_s=float(t))
        governor.update_temperature(float('nan'), stamp_s=float(t))
    decision = governor.decide(5.0, BASE)
    assert decision.fallback and decision.power_state is None


@pytest.mark.parametrize('kwargs,words', [
    ({'critical_below_soc': 0.6}, ['critical_below_soc 0.6 must be below saving_below_soc 0.5']),
    ({'saving_below_soc': 0.0}, ['saving_below_soc must be in (0, 1]', 'got 0']),
    ({'saving_below_soc': 0.98}, ['saving_below_soc 0.98 + soc_hysteresis 0.05 exceeds 1']),
    ({'soc_hysteresis': -0.01}, ['soc_hysteresis must be in [0, 1]']),
    ({'energy_scale_saving': 1.2}, ['must not grow as the battery drains', '1 / 1.2 / 0.4']),
    ({'energy_scale_critical': 0.0}, ['energy_scale_critical must be in (0, inf]']),
    ({'hot_latency_scale': 0.5}, ['hot_latency_scale must be in [1, inf]', 'got 0.5']),
    ({'hot_accuracy_drop': 1.5}, ['hot_accuracy_drop must be in [0, 1]']),
    ({'stale_after_s': 0}, ['stale_after_s must be in (0, inf]']),
    ({'stale_after_s': float('nan')}, ['stale_after_s must be a finite number', 'nan']),
    ({'hot_above_c': 200.0}, ['hot_above_c must be in (-40, 150)']),
    ({'temperature_hysteresis_c': 200.0}, ['temperature_hysteresis_c must be in [0, 110)']),
    ({'plausible_temperature_c': 5}, ['plausible_temperature_c must be (low, high)']),
    ({'battery_required': 'yes'}, ['battery_required must be true or false', "'yes'"]),
    ({'fallback': {'energy': 0.5}}, ['fallback keys must be among', "'energy'"]),
    ({'fallback': {'energy_scale': -1}}, ['Adjustment energy_scale must be positive']),
    ({'safe_budgets': {'nav': {'latency_ms': 10}}},
     ["safe_budgets['nav']", "missing ['energy_mj', 'min_accuracy']"]),
    ({'safe_budgets': {'nav': {'latency_ms': 10, 'min_accuracy': 2, 'energy_mj': 1}}},
     ["safe_budgets['nav']", 'min_accuracy must be in [0, 1], got 2.0']),
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
        'plausible_temperature_c': [-20, 120],
        'fallback': {'energy_scale': 0.5, 'latency_scale': 2.0, 'accuracy_drop': 0.1},
        'safe_budgets': {'nav': {'latency_ms': 80, 'min_accuracy': 0.6, 'energy_mj': 3}}})
    assert config.plausible_temperature_c == (-20.0, 120.0)
    assert config.fallback_adjustment == Adjustment(energy_scale=0.5, latency_scale=2.0,
                                                    accuracy_drop=0.1)
    assert config.safe_budgets['nav'] == Budgets(latency_ms=80.0, min_accuracy=0.6,
                                                 energy_mj=3.0)
    assert GovernorConfig.from_mapping(config.as_dict()) == config
    with pytest.raises(ValueError, match='unknown governor config key.*battery_low'):
        GovernorConfig.from_mapping({'battery_low': 0.2})


@pytest.mark.parametrize('kwargs,words', [
    ({'latency_ms': 0.0}, ['latency_ms must be positive and finite, got 0.0']),
    ({'latency_ms': math.inf}, ['latency_ms must be positive and finite']),
    ({'min_accuracy': 1.2}, ['min_accuracy must be in [0, 1], got 1.2']),
    ({'energy_mj': float('nan')}, ['energy_mj must be positive']),
    ({'energy_mj': '5'}, ['energy_mj must be a number', "'5'"]),
])
def test_invalid_budgets_are_refused(kwargs, words):
    values = {'latency_ms': 10.0, 'min_accuracy': 0.5, 'energy_mj': 1.0}
    values.update(kwargs)
    with pytest.raises(ValueError) as caught:
        Budgets(**values)
    for word in words:
        assert word in str(caught.value)


def test_decide_refuses_bad_arguments_by_name():
    governor = Governor()
    with pytest.raises(ValueError, match='now_s must be a finite time'):
        governor.decide(float('nan'), BASE)
    with pytest.raises(ValueError, match="tenant 'nav'.*min_accuracy"):
        governor.decide(0.0, {'nav': {'latency_ms': 1, 'min_accuracy': -1, 'energy_mj': 1}})
    with pytest.raises(ValueError, match='tenant names must be non-empty strings'):
        governor.decide(0.0, {3: BASE['navigation']})
    with pytest.raises(ValueError, match='base_budgets must map'):
        governor.decide(0.0, [BASE['navigation']])
    with pytest.raises(ValueError, match='config must be a GovernorConfig'):
        Governor({'stale_after_s': 1})
    with pytest.raises(TypeError):
        Budgets(50.0, 0.8, 10.0)  # keyword-only: three floats in a row are easy to swap


# --- change detection and determinism ------------------------------------------------------


def test_changed_only_when_budgets_or_states_move():
    governor = Governor()
    first = _fresh(governor, 0.0, soc=0.9, celsius=30.0)
    assert first.changed and first.changed_tenants == ('inspection', 'navigation')
    same = _fresh(governor, 1.0, soc=0.85, celsius=31.0)
    assert not same.changed and same.changed_tenants == ()
    raised = dict(BASE, navigation=Budgets(latency_ms=40.0, min_accuracy=0.8, energy_mj=10.0))
    moved = governor.decide(1.5, raised)
    assert moved.changed and moved.changed_tenants == ('navigation',)
    mapping = Budgets(latency_ms=30.0, min_accuracy=0.7, energy_mj=8.0)
    added = governor.decide(1.6, dict(raised, mapping=mapping))
    assert added.changed_tenants == ('mapping',)
    assert not governor.decide(1.7, dict(raised, mapping=mapping)).changed


def test_same_trace_gives_the_same_decisions():
    rng = np.random.default_rng(4)
    socs = np.clip(np.linspace(0.9, 0.1, 400) + rng.normal(0, 0.02, 400), 0, 1)
    temps = 60.0 + 15.0 * np.sin(np.linspace(0, 6, 400)) + rng.normal(0, 1, 400)

    def replay():
        governor = Governor()
        decisions = []
        for t, (soc, celsius) in enumerate(zip(socs, temps)):
            if t % 37 != 0:  # a few gaps, to pass through the stale fallback
                governor.update_battery(float(soc), stamp_s=float(t))
                governor.update_temperature(float(celsius), stamp_s=float(t))
            decisions.append(governor.decide(float(t) + (15.0 if t % 97 == 0 else 0.0), BASE))
        return decisions

    first, second = replay(), replay()
    assert first == second
    assert any(d.fallback for d in first)
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
    decision = governor.decide(1.0, BASE)
    assert decision.power_state is PowerState.CRITICAL
    assert decision.thermal_state is ThermalState.HOT
    assert decision.ignored == {'battery_nan': 1}
