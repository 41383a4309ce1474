"""Energy meters on sysfs trees in the real kernel formats, and the power-model fallback."""

from pathlib import Path
import time

from delen_ros.runtime import (available_platforms, default_platform, detect_meter,
                               EnergyReading, HwmonEnergyMeter, HwmonPowerMeter, Ina3221Meter,
                               PlatformError, PowerModel, RaplMeter)
import pytest


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + '\n')
    return path


def _rapl_tree(root: Path, *, energy_uj: int = 1_000_000,
               max_uj: int = 262_143_328_850) -> Path:
    zone = 'sys/class/powercap/intel-rapl:0'
    _write(root, f'{zone}/name', 'package-0')
    _write(root, f'{zone}/max_energy_range_uj', str(max_uj))
    # A sub-zone is part of its package and must not be added again.
    _write(root, f'{zone}/intel-rapl:0:0/name', 'core')
    _write(root, f'{zone}/intel-rapl:0:0/energy_uj', '5')
    _write(root, 'sys/class/powercap/intel-rapl:0:0/energy_uj', '5')
    return _write(root, f'{zone}/energy_uj', str(energy_uj))


def test_rapl_counter_is_measured_and_handles_wrap(tmp_path):
    counter = _rapl_tree(tmp_path, energy_uj=999_000, max_uj=1_000_000)
    meter = detect_meter(tmp_path)
    assert isinstance(meter, RaplMeter)
    assert meter.measured and meter.source == 'rapl:package-0'
    start = meter.read()
    counter.write_text('1500\n')  # wrapped past max_energy_range_uj
    end = meter.read()
    assert meter.energy_mj(start, end, threads=1) == pytest.approx((1_000_000 - 999_000 + 1500)
                                                                   * 1e-3)
    counter.write_text('4500\n')
    assert meter.energy_mj(end, meter.read(), threads=1) == pytest.approx(3.0)
    meter.close()


def test_rapl_sums_packages(tmp_path):
    _rapl_tree(tmp_path)
    _write(tmp_path, 'sys/class/powercap/intel-rapl:1/name', 'package-1')
    _write(tmp_path, 'sys/class/powercap/intel-rapl:1/energy_uj', '7000')
    meter = detect_meter(tmp_path)
    assert meter.source == 'rapl:package-0+package-1'
    assert meter.read().values == pytest.approx((1000.0, 7.0))


def test_unreadable_rapl_falls_back(tmp_path):
    _write(tmp_path, 'sys/class/powercap/intel-rapl:0/name', 'package-0')
    _write(tmp_path, 'sys/class/powercap/intel-rapl:0/energy_uj', 'permission denied?')
    meter = detect_meter(tmp_path)
    assert isinstance(meter, PowerModel) and not meter.measured


def test_hwmon_energy_prefers_socket_counter(tmp_path):
    device = 'sys/class/hwmon/hwmon2'
    _write(tmp_path, f'{device}/name', 'amd_energy')
    _write(tmp_path, f'{device}/energy1_input', '100')
    _write(tmp_path, f'{device}/energy1_label', 'Ecore000')
    counter = _write(tmp_path, f'{device}/energy17_input', '2000000')
    _write(tmp_path, f'{device}/energy17_label', 'Esocket0')
    meter = detect_meter(tmp_path)
    assert isinstance(meter, HwmonEnergyMeter)
    assert meter.measured and meter.source == 'hwmon:amd_energy/Esocket0'
    start = meter.read()
    counter.write_text('2250000\n')
    assert meter.energy_mj(start, meter.read(), threads=2) == pytest.approx(250.0)


def test_stages_computing_at_once_split_a_shared_meter(tmp_path):
    # Two serving threads' stages overlap: each is charged its share of the socket's energy,
    # and together they are charged what the counter rose by, not more.
    counter = _rapl_tree(tmp_path, energy_uj=0)
    meter = detect_meter(tmp_path)
    first = meter.stage_start(1)
    counter.write_text('1000\n')  # 1 mJ with the first stage alone
    second = meter.stage_start(1)
    counter.write_text('3000\n')  # 2 mJ with both
    assert meter.stage_mj(first) == pytest.approx(1.0 + 1.0)
    counter.write_text('6000\n')  # 3 mJ with the second alone
    assert meter.stage_mj(second) == pytest.approx(1.0 + 3.0)
    counter.write_text('6500\n')  # nothing computes: nobody is charged
    alone = meter.stage_start(1)
    counter.write_text('7000\n')
    assert meter.stage_mj(alone) == pytest.approx(0.5)
    meter.close()


def test_a_failed_read_keeps_the_last_good_value_and_is_counted(tmp_path):
    counter = _rapl_tree(tmp_path, energy_uj=2000)
    meter = detect_meter(tmp_path)
    start = meter.read()
    counter.write_text('EIO?\n')  # a driver's garbled answer
    stale = meter.read()
    assert stale.values == start.values
    assert meter.read_errors == 1 and str(counter) in meter.last_read_error
    mark = meter.stage_start(1)  # a stage across the failure is still charged
    counter.write_text('5000\n')
    assert meter.stage_mj(mark) == pytest.approx(3.0)
    assert meter.read_errors == 2
    meter.close()


def test_power_model_charges_a_stage_its_own_compute_time():
    model = PowerModel.from_platform('generic_x86_2core')
    for threads in (1, 2):
        mark = model.stage_start(threads)
        busy = model.compute_clock() + 0.02
        while model.compute_clock() < busy:
            pass
        energy = model.stage_mj(mark)
        assert model.active_w(threads) * 20 <= energy <= model.active_w(threads) * 1000
    reading = model.read()
    time.sleep(0.05)  # asleep is not waiting for a CPU: a blocked call is charged
    assert model.energy_mj(reading, model.read(), threads=1) >= model.active_w(1) * 25


def test_hwmon_power_sensor_is_integrated(tmp_path):
    _write(tmp_path, 'sys/class/hwmon/hwmon0/name', 'acpitz')  # no power: skipped
    _write(tmp_path, 'sys/class/hwmon/hwmon0/temp1_input', '45000')
    _write(tmp_path, 'sys/class/hwmon/hwmon1/name', 'power_meter')
    _write(tmp_path, 'sys/class/hwmon/hwmon1/power1_input', '5000000')  # µW
    meter = detect_meter(tmp_path)
    assert isinstance(meter, HwmonPowerMeter)
    assert meter.source == 'hwmon:power_meter/power1'
    assert meter.read().values == pytest.approx((5000.0,))  # mW
    start, end = EnergyReading(10.0, (5000.0,)), EnergyReading(10.1, (7000.0,))
    assert meter.energy_mj(start, end, threads=1) == pytest.approx(600.0)


def test_jetson_ina3221_iio_layout_reads_the_input_rail(tmp_path):
    device = 'sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0'
    for channel, (rail, milliwatts) in enumerate(
            [('POM_5V_IN', 3200), ('POM_5V_GPU', 400), ('POM_5V_CPU', 1100)]):
        _write(tmp_path, f'{device}/rail_name_{channel}', rail)
        _write(tmp_path, f'{device}/in_power{channel}_input', str(milliwatts))
    meter = detect_meter(tmp_path)
    assert isinstance(meter, Ina3221Meter)
    assert meter.measured and meter.source == 'ina3221:POM_5V_IN'
    reading = meter.read()
    assert reading.values == pytest.approx((3200.0,))
    later = EnergyReading(reading.time_s + 0.5, reading.values)
    assert meter.energy_mj(reading, later, threads=4) == pytest.approx(1600.0)


def test_jetson_ina3221_hwmon_layout_multiplies_volts_and_amps(tmp_path):
    device = 'sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3'
    _write(tmp_path, f'{device}/name', 'ina3221')
    for channel, (label, millivolts, milliamps) in enumerate(
            [('VDD_IN', 5000, 600), ('VDD_CPU_GPU_CV', 5000, 200), ('VDD_SOC', 5000, 150)],
            start=1):
        _write(tmp_path, f'{device}/in{channel}_label', label)
        _write(tmp_path, f'{device}/in{channel}_input', str(millivolts))
        _write(tmp_path, f'{device}/curr{channel}_input', str(milliamps))
    meter = detect_meter(tmp_path)
    assert isinstance(meter, Ina3221Meter)
    assert meter.source == 'ina3221:VDD_IN'
    start = EnergyReading(0.0, (5000.0, 600.0))
    end = EnergyReading(2.0, (5000.0, 600.0))
    assert meter.energy_mj(start, end, threads=1) == pytest.approx(3000.0 * 2.0)


def test_rapl_wins_over_hwmon(tmp_path):
    _rapl_tree(tmp_path)
    _write(tmp_path, 'sys/class/hwmon/hwmon1/name', 'power_meter')
    _write(tmp_path, 'sys/class/hwmon/hwmon1/power1_input', '5000000')
    assert isinstance(detect_meter(tmp_path), RaplMeter)


def test_fallback_is_the_platform_power_model_labelled_estimated(tmp_path):
    meter = detect_meter(tmp_path)
    assert isinstance(meter, PowerModel)
    assert not meter.measured
    assert meter.source == 'model:generic_x86_2core'
    # Charged by compute time (wall time less the wait for a CPU) at the thread count's power.
    start = EnergyReading(1.0, (0.500,))
    end = EnergyReading(1.5, (0.502,))
    assert meter.energy_mj(start, end, threads=1) == pytest.approx(2.0 * meter.active_w(1))
    assert meter.energy_mj(start, end, threads=2) == pytest.approx(2.0 * meter.active_w(2))
    reading = meter.read()
    assert len(reading.values) == 1 and reading.values[0] > 0
    (tmp_path / 'etc').mkdir()
    (tmp_path / 'etc/nv_tegra_release').write_text('# R32 (release), REVISION: 7.1\n')
    assert default_platform(tmp_path) == 'jetson_nano_10w'
    jetson = detect_meter(tmp_path)
    assert jetson.source == 'model:jetson_nano_10w' and not jetson.measured
    assert detect_meter(tmp_path, platform='jetson_nano_5w').source == 'model:jetson_nano_5w'


def test_shipped_platform_profiles():
    assert {'generic_x86_2core', 'jetson_nano_5w', 'jetson_nano_10w'} <= set(
        available_platforms())
    generic = PowerModel.from_platform('generic_x86_2core')
    assert generic.thread_counts == (1, 2)
    assert generic.idle_w < generic.active_w(1) < generic.active_w(2)
    assert 'ESTIMATED' in Path(__file__).resolve().parents[1].joinpath(
        'platforms/generic_x86_2core.yaml').read_text()
    five = PowerModel.from_platform('jetson_nano_5w')
    ten = PowerModel.from_platform('jetson_nano_10w')
    assert five.thread_counts == (1, 2) and ten.thread_counts == (1, 2, 3, 4)
    assert all(s.details['cores_online'] == 2 and s.details['cpu_max_mhz'] == 918
               for s in five.settings)
    assert all(s.details['cores_online'] == 4 and s.details['cpu_max_mhz'] == 1479
               for s in ten.settings)
    assert five.active_w(2) < ten.active_w(2) <= 10.0
    # Thread counts beyond the listed ones extrapolate linearly.
    assert generic.active_w(3) == pytest.approx(generic.active_w(2) + 3.5)


def test_bad_platform_profiles(tmp_path):
    with pytest.raises(PlatformError, match='not found'):
        PowerModel.from_platform('no_such_board')
    broken = tmp_path / 'broken.yaml'
    broken.write_text('name: broken\nsettings: []\nidle_w: 1\n')
    with pytest.raises(PlatformError, match='at least one setting'):
        PowerModel.from_platform(broken)
    broken.write_text('name: broken\nidle_w: 1\n')
    with pytest.raises(PlatformError, match='malformed'):
        PowerModel.from_platform(broken)
