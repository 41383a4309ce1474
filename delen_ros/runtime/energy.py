"""
Energy per request: measured by a power meter when one is readable, else estimated.

Meters read Linux sysfs in its real formats:

- powercap RAPL ``/sys/class/powercap/intel-rapl:N/energy_uj`` (µJ counter that wraps at
  ``max_energy_range_uj``; AMD CPUs expose the same interface);
- hwmon ``/sys/class/hwmon/hwmon*/energy*_input`` (µJ counter) or ``power*_input`` (µW);
- Jetson INA3221 rails: ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/in_power*_input`` (mW,
  L4T 32) and ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_input`` (mV) with
  ``curr*_input`` (mA) (L4T 34 and newer).

Without a readable meter, ``PowerModel`` estimates energy as the platform profile's active power
for the thread count in use times the measured compute time (as ALERT, USENIX ATC 2020,
Sec. 4, models energy as power x time), and every result says so (``measured=False``).
"""

import abc
from dataclasses import dataclass, field
import math
import os
from pathlib import Path
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import yaml

from .busy_time import compute_clock

__all__ = ['EnergyMeter', 'EnergyReading', 'HwmonEnergyMeter', 'HwmonPowerMeter', 'PowerSetting',
           'Ina3221Meter', 'PlatformError', 'PowerModel', 'RaplMeter', 'available_platforms',
           'default_platform', 'detect_meter', 'platform_path']


class PlatformError(ValueError):
    """A platform profile is missing or malformed (one line, naming the file)."""


class EnergyReading(NamedTuple):
    """One sample of a meter: perf_counter time and the raw values of its channels."""

    time_s: float
    values: Tuple[float, ...]


class EnergyMeter(abc.ABC):
    """Source of energy figures; ``energy_mj(start, end, threads)`` between two readings."""

    #: e.g. 'rapl:package-0' or 'model:generic_x86_2core'
    source: str = ''
    #: True when read from hardware, False when estimated from a model
    measured: bool = False
    #: reads of the hardware that failed (each kept the last good value), and the last failure
    read_errors: int = 0
    last_read_error: str = ''

    @abc.abstractmethod
    def read(self) -> EnergyReading:
        """Sample the meter now."""

    @abc.abstractmethod
    def energy_mj(self, start: EnergyReading, end: EnergyReading, *, threads: int) -> float:
        """Energy between two readings, in millijoules."""

    def stage_start(self, threads: int) -> Any:
        """Mark the start of a stage computed on the calling thread (for ``stage_mj``)."""
        return threads, self.read()

    def stage_mj(self, mark: Any) -> float:
        """Energy charged to the stage started at ``mark`` (mJ); call once, on its thread."""
        threads, start = mark
        return self.energy_mj(start, self.read(), threads=threads)

    def close(self) -> None:
        """Release open files (readings are invalid afterwards)."""

    def __repr__(self) -> str:
        kind = 'measured' if self.measured else 'estimated'
        return f'{type(self).__name__}({self.source!r}, {kind})'


class _SysfsFile:
    """A sysfs attribute kept open and re-read with pread (no open() per sample)."""

    def __init__(self, path: Path, scale: float = 1.0) -> None:
        self.path = path
        self.scale = scale
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.last = self.read()  # the value kept when a later read fails
        except (OSError, ValueError):
            os.close(self._fd)
            raise

    def read(self) -> float:
        self.last = float(os.pread(self._fd, 64, 0).split()[0]) * self.scale
        return self.last

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _open(path: Path, scale: float = 1.0) -> Optional[_SysfsFile]:
    try:
        return _SysfsFile(path, scale)
    except (OSError, ValueError, IndexError):
        return None


class _SysfsMeter(EnergyMeter):
    """
    A meter of the whole socket or board: its readings cover every thread.

    Stages computed at once on several serving threads split the energy between readings
    evenly, so that each is not charged all of it: ``_per_stage_mj`` adds, at every stage's
    start and end, the energy since the last such reading over the stages computing.
    """

    measured = True

    def __init__(self, files: Sequence[_SysfsFile], source: str) -> None:
        if not files:
            raise ValueError('a sysfs meter needs at least one readable file')
        self._files = list(files)
        self.source = source
        self._stages_lock = threading.Lock()
        self._computing = 0  # stages computing now, on every thread
        self._last: Optional[EnergyReading] = None
        self._per_stage_mj = 0.0  # energy charged to each stage computing, so far

    def read(self) -> EnergyReading:
        return EnergyReading(time.perf_counter(), tuple(map(self._value, self._files)))

    def _value(self, sysfs_file: _SysfsFile) -> float:
        try:
            return sysfs_file.read()
        except (OSError, ValueError, IndexError) as error:
            # A failed read (a driver's EIO, a garbled value) must not fail the frame: the
            # last good value stands, and a counter's next good read catches up.
            self.read_errors += 1
            self.last_read_error = f'{sysfs_file.path}: {error}'
            return sysfs_file.last

    def stage_start(self, threads: int) -> float:
        with self._stages_lock:
            self._share_out()
            self._computing += 1
            return self._per_stage_mj

    def stage_mj(self, mark: float) -> float:
        with self._stages_lock:
            self._share_out()  # a failed read keeps the last value: it does not raise
            self._computing -= 1
            energy = self._per_stage_mj - mark
            if not self._computing:
                self._per_stage_mj = 0.0  # no mark is outstanding
            return energy

    def _share_out(self) -> None:
        reading = self.read()
        if self._computing:
            self._per_stage_mj += self.energy_mj(self._last, reading,
                                                 threads=1) / self._computing
        self._last = reading

    def close(self) -> None:
        for sysfs_file in self._files:
            sysfs_file.close()


class _CounterMeter(_SysfsMeter):
    """Cumulative energy counters in mJ, each wrapping at its own range (None: no wrap)."""

    def __init__(self, files: Sequence[_SysfsFile], source: str,
                 wrap_mj: Sequence[Optional[float]]) -> None:
        super().__init__(files, source)
        self._wrap_mj = list(wrap_mj)

    def energy_mj(self, start: EnergyReading, end: EnergyReading, *, threads: int) -> float:
        total = 0.0
        for before, after, wrap in zip(start.values, end.values, self._wrap_mj):
            delta = after - before
            if delta < 0.0 and wrap:
                delta += wrap
            total += max(delta, 0.0)
        return total


class _PowerMeter(_SysfsMeter):
    """Instantaneous power in mW, integrated by the trapezoid rule between two readings."""

    def energy_mj(self, start: EnergyReading, end: EnergyReading, *, threads: int) -> float:
        seconds = max(end.time_s - start.time_s, 0.0)
        return 0.5 * (self._power_mw(start) + self._power_mw(end)) * seconds

    def _power_mw(self, reading: EnergyReading) -> float:
        return sum(reading.values)


class RaplMeter(_CounterMeter):
    """Linux powercap RAPL package domains (``intel-rapl:N``), summed over packages."""

    @classmethod
    def detect(cls, root: Union[str, Path] = '/') -> Optional['RaplMeter']:
        """Return a meter over the readable package domains under ``root``, or None."""
        base = Path(root) / 'sys/class/powercap'
        files, names, wraps = [], [], []
        for zone in sorted(base.glob('intel-rapl:*')):
            if zone.name.count(':') != 1:  # sub-zones (core, uncore, dram) are in the package
                continue
            counter = _open(zone / 'energy_uj', 1e-3)
            if counter is None:
                continue
            wrap_text = _read_text(zone / 'max_energy_range_uj')
            try:
                wraps.append(float(wrap_text) * 1e-3 if wrap_text else None)
            except ValueError:
                wraps.append(None)
            files.append(counter)
            names.append(_read_text(zone / 'name') or zone.name)
        if not files:
            return None
        return cls(files, 'rapl:' + '+'.join(names), wraps)


def _hwmon_label(device: Path, channel: str) -> str:
    return _read_text(device / f'{channel}_label') or channel


def _prefer_total(channels: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Whole-package or whole-board channels when labelled so; else the first channel."""
    words = ('socket', 'package', 'pkg', 'total', 'vdd_in', '_in')
    chosen = [c for c in channels if any(w in c[1].lower() for w in words)]
    return chosen or channels[:1]


class HwmonEnergyMeter(_CounterMeter):
    """hwmon ``energy*_input`` counters (µJ), e.g. amd_energy's socket counters."""

    @classmethod
    def detect(cls, root: Union[str, Path] = '/') -> Optional['HwmonEnergyMeter']:
        """Return a meter on the first hwmon energy counter under ``root``, or None."""
        for device in sorted((Path(root) / 'sys/class/hwmon').glob('hwmon*')):
            name = _read_text(device / 'name') or device.name
            channels = [(p.name[:-len('_input')], _hwmon_label(device, p.name[:-len('_input')]))
                        for p in sorted(device.glob('energy*_input'))]
            files, labels = [], []
            for channel, label in _prefer_total(channels):
                counter = _open(device / f'{channel}_input', 1e-3)
                if counter is not None:
                    files.append(counter)
                    labels.append(label)
            if files:
                return cls(files, f'hwmon:{name}/' + '+'.join(labels), [None] * len(files))
        return None


class HwmonPowerMeter(_PowerMeter):
    """hwmon ``power*_input`` (or ``power*_average``) sensors, in µW."""

    @classmethod
    def detect(cls, root: Union[str, Path] = '/') -> Optional['HwmonPowerMeter']:
        """Return a meter on the first hwmon power sensor under ``root``, or None."""
        for device in sorted((Path(root) / 'sys/class/hwmon').glob('hwmon*')):
            name = _read_text(device / 'name') or device.name
            paths = sorted(device.glob('power*_input')) or sorted(device.glob('power*_average'))
            channels = [(p.name, _hwmon_label(device, p.name.rsplit('_', 1)[0]))
                        for p in paths]
            files, labels = [], []
            for file_name, label in _prefer_total(channels):
                sensor = _open(device / file_name, 1e-3)
                if sensor is not None:
                    files.append(sensor)
                    labels.append(label)
            if files:
                return cls(files, f'hwmon:{name}/' + '+'.join(labels))
        return None


class Ina3221Meter(_PowerMeter):
    """Jetson INA3221 power monitor: the board input rail (whole-module power)."""

    def __init__(self, files: Sequence[_SysfsFile], source: str, *, volts_amps: bool) -> None:
        super().__init__(files, source)
        self._volts_amps = volts_amps

    def _power_mw(self, reading: EnergyReading) -> float:
        if self._volts_amps:  # (mV, mA) pairs
            values = reading.values
            return sum(values[i] * values[i + 1] for i in range(0, len(values), 2)) * 1e-3
        return sum(reading.values)

    @classmethod
    def detect(cls, root: Union[str, Path] = '/') -> Optional['Ina3221Meter']:
        """Return a meter on the INA3221 input rail under ``root`` (iio or hwmon), or None."""
        base = Path(root) / 'sys/bus/i2c/drivers'
        for device in sorted(base.glob('ina3221x/*/iio:device*')):
            channels = [(p.name, _read_text(device / f'rail_name_{p.name[len("in_power"):-6]}')
                         or p.name) for p in sorted(device.glob('in_power*_input'))]
            for file_name, label in _prefer_total(channels):
                sensor = _open(device / file_name)
                if sensor is not None:
                    return cls([sensor], f'ina3221:{label}', volts_amps=False)
        for device in sorted(base.glob('ina3221/*/hwmon/hwmon*')):
            channels = [(p.name[len('in'):-len('_input')],
                         _hwmon_label(device, p.name[:-len('_input')]))
                        for p in sorted(device.glob('in*_input'))]
            for number, label in _prefer_total(channels):
                volts = _open(device / f'in{number}_input')
                amps = _open(device / f'curr{number}_input')
                if volts is not None and amps is not None:
                    return cls([volts, amps], f'ina3221:{label}', volts_amps=True)
                for sensor in (volts, amps):
                    if sensor is not None:
                        sensor.close()
        return None


@dataclass(frozen=True)
class PowerSetting:
    """Power drawn while inference runs with ``threads`` intra-op threads (plus details)."""

    threads: int
    active_w: float
    details: Dict[str, Any] = field(default_factory=dict)


def _platform_dirs() -> List[Path]:
    here = Path(__file__).resolve()
    dirs = [parent / 'share' / 'delen_ros' / 'platforms' for parent in here.parents]
    return [here.parents[2] / 'platforms'] + dirs


def platform_path(name: Union[str, Path]) -> Path:
    """Path of a platform profile: a YAML path, or a name looked up in ``platforms/``."""
    candidate = Path(name)
    if candidate.suffix in ('.yaml', '.yml'):
        return candidate
    for directory in _platform_dirs():
        path = directory / f'{name}.yaml'
        if path.is_file():
            return path
    raise PlatformError(
        f'platform profile {name!r} not found; known: {", ".join(available_platforms())}')


def available_platforms() -> List[str]:
    """Names of the shipped platform profiles."""
    names = set()
    for directory in _platform_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob('*.yaml'))
    return sorted(names)


def default_platform(root: Union[str, Path] = '/') -> str:
    """Return the shipped profile that best matches this machine (Jetson or x86)."""
    if (Path(root) / 'etc/nv_tegra_release').is_file():
        return 'jetson_nano_10w'
    return 'generic_x86_2core'


class PowerModel(EnergyMeter):
    """
    Energy estimated from the platform's power per thread count and the compute time used.

    A request is charged ``active_w(threads)`` for every second its serving thread computes:
    its wall time less the time it waited runnable for a CPU (``compute_clock``), so the power
    another process draws while it preempts ours stays out of this request's account. The
    thread's CPU clock is not read: on Linux that read ends a used-up time slice at once, and
    under a CPU load it preempted the serving thread in the middle of a frame
    (docs/serving_path.md, "Reading the thread's CPU clock ended its time slice").
    """

    measured = False

    def __init__(self, *, name: str, idle_w: float, settings: Sequence[PowerSetting],
                 notes: str = '') -> None:
        if not settings:
            raise PlatformError(f'{name}: a power model needs at least one setting')
        if not (math.isfinite(idle_w) and idle_w >= 0.0):
            raise PlatformError(f'{name}: idle_w must be finite and >= 0, got {idle_w}')
        for setting in settings:
            if setting.threads < 1 or not (math.isfinite(setting.active_w)
                                           and setting.active_w > 0.0):
                raise PlatformError(f'{name}: bad setting {setting}')
        self.name = name
        self.source = f'model:{name}'
        self.idle_w = float(idle_w)
        self.notes = notes
        self.settings = tuple(sorted(settings, key=lambda s: s.threads))
        self._watts = {s.threads: s.active_w for s in self.settings}
        lowest = self.settings[0]
        steps = [(b.active_w - a.active_w) / (b.threads - a.threads)
                 for a, b in zip(self.settings, self.settings[1:])]
        self._per_thread_w = (sum(steps) / len(steps) if steps
                              else (lowest.active_w - idle_w) / lowest.threads)

    @classmethod
    def from_platform(cls, name: Union[str, Path]) -> 'PowerModel':
        """Load ``platforms/<name>.yaml`` (or a YAML path)."""
        path = platform_path(name)
        try:
            data = yaml.safe_load(path.read_text())
            settings = [PowerSetting(threads=int(s['threads']), active_w=float(s['active_w']),
                                     details={k: v for k, v in s.items()
                                              if k not in ('threads', 'active_w')})
                        for s in data['settings']]
            return cls(name=str(data.get('name', path.stem)), idle_w=float(data['idle_w']),
                       settings=settings, notes=str(data.get('notes', '')))
        except FileNotFoundError:
            raise PlatformError(f'{path}: platform profile not found') from None
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
            if isinstance(error, PlatformError):
                raise
            raise PlatformError(f'{path}: malformed platform profile: {error}') from None

    @property
    def thread_counts(self) -> Tuple[int, ...]:
        """Thread counts the profile lists."""
        return tuple(self._watts)

    def active_w(self, threads: int) -> float:
        """Power while computing with ``threads`` threads; linear beyond the listed ones."""
        watts = self._watts.get(threads)
        if watts is not None:
            return watts
        nearest = min(self._watts, key=lambda t: abs(t - threads))
        return max(self._watts[nearest] + (threads - nearest) * self._per_thread_w, self.idle_w)

    compute_clock = staticmethod(compute_clock)

    def read(self) -> EnergyReading:
        """Sample wall time and the calling thread's compute time."""
        return EnergyReading(time.perf_counter(), (compute_clock(),))

    def energy_mj(self, start: EnergyReading, end: EnergyReading, *, threads: int) -> float:
        """Charge the compute time between the readings at ``active_w(threads)``."""
        return self.charge_mj(threads, end.values[0] - start.values[0])

    def charge_mj(self, threads: int, compute_s: float) -> float:
        """Return the energy of ``compute_s`` seconds of compute with ``threads`` threads."""
        return self.active_w(threads) * max(compute_s, 0.0) * 1e3  # W x ms = mJ

    def stage_start(self, threads: int) -> Tuple[int, float]:
        return threads, compute_clock()

    def stage_mj(self, mark: Tuple[int, float]) -> float:
        threads, start_s = mark
        return self.charge_mj(threads, compute_clock() - start_s)


def detect_meter(root: Union[str, Path] = '/', *,
                 platform: Union[str, Path, None] = None) -> EnergyMeter:
    """
    First readable meter under ``root`` (RAPL, INA3221, hwmon energy, hwmon power).

    Falls back to ``PowerModel.from_platform(platform or default_platform(root))``.
    """
    for detect in (RaplMeter.detect, Ina3221Meter.detect, HwmonEnergyMeter.detect,
                   HwmonPowerMeter.detect):
        meter = detect(root)
        if meter is not None:
            return meter
    return PowerModel.from_platform(platform or default_platform(root))
