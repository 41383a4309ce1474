"""
A scripted battery drain and heat-up for demos and tests (no ROS import).

``power_trace`` gives the battery state of charge and the temperature at a time since the
start of the trace: the charge falls linearly from ``soc_start`` to ``soc_end`` and the
temperature rises from ``temperature_start_c`` to ``temperature_end_c`` like a body heating
towards a steady state (fast first, then levelling off), both over ``duration_s``. After
that the trace holds its end values, or starts again with ``loop``.
"""

from dataclasses import dataclass
import math
import numbers

__all__ = ['PowerSample', 'PowerTrace', 'power_trace']

# Shape of the heat-up: 1 - exp(-k x), rescaled to reach the end value at x = 1.
_HEATING_RATE = 3.0
# Battery pack voltage model: 3 Li-ion cells, 3.5 V empty to 4.2 V full.
_CELLS = 3
_CELL_EMPTY_V = 3.5
_CELL_FULL_V = 4.2


@dataclass(frozen=True, kw_only=True)
class PowerSample:
    """Battery and temperature at one instant of a trace."""

    t_s: float
    soc: float            # state of charge, 0..1 (BatteryState.percentage)
    voltage_v: float      # pack voltage (BatteryState.voltage)
    temperature_c: float  # degrees Celsius (Temperature.temperature)


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f'power trace {name} must be a finite number, got {value!r}')
    return float(value)


@dataclass(frozen=True, kw_only=True)
class PowerTrace:
    """The shape of a trace: start and end values over ``duration_s``."""

    duration_s: float = 60.0
    soc_start: float = 0.9
    soc_end: float = 0.1
    temperature_start_c: float = 45.0
    temperature_end_c: float = 80.0
    loop: bool = False

    def __post_init__(self):
        duration = _finite('duration_s', self.duration_s)
        if duration <= 0:
            raise ValueError(f'power trace duration_s must be positive, got {duration:g}')
        object.__setattr__(self, 'duration_s', duration)
        for name in ('soc_start', 'soc_end'):
            value = _finite(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'power trace {name} must be in [0, 1], got {value:g}')
            object.__setattr__(self, name, value)
        for name in ('temperature_start_c', 'temperature_end_c'):
            object.__setattr__(self, name, _finite(name, getattr(self, name)))
        if not isinstance(self.loop, bool):
            raise ValueError(f'power trace loop must be true or false, got {self.loop!r}')

    def progress(self, t_s: float) -> float:
        """Return how far into the trace ``t_s`` is, 0..1 (wrapping with ``loop``)."""
        t_s = _finite('t_s', t_s)
        if t_s <= 0.0:
            return 0.0
        if self.loop:
            return (t_s % self.duration_s) / self.duration_s
        return min(1.0, t_s / self.duration_s)

    def sample(self, t_s: float) -> PowerSample:
        """Return the battery and temperature ``t_s`` seconds after the start."""
        x = self.progress(t_s)
        soc = self.soc_start + (self.soc_end - self.soc_start) * x
        heating = (1.0 - math.exp(-_HEATING_RATE * x)) / (1.0 - math.exp(-_HEATING_RATE))
        temperature = self.temperature_start_c + (
            self.temperature_end_c - self.temperature_start_c) * heating
        voltage = _CELLS * (_CELL_EMPTY_V + (_CELL_FULL_V - _CELL_EMPTY_V) * soc)
        return PowerSample(t_s=float(t_s), soc=soc, voltage_v=voltage,
                           temperature_c=temperature)


def power_trace(t_s: float, **shape) -> PowerSample:
    """Return the sample at ``t_s`` of ``PowerTrace(**shape)`` (default: 90->10 %, 45->80 C)."""
    return PowerTrace(**shape).sample(t_s)
