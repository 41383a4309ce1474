"""Governor configuration: power and thermal states, hysteresis, staleness."""

from dataclasses import dataclass, fields
import enum
import math
import numbers
from typing import Any, Dict, Mapping, Tuple

from .adjustment import Adjustment, SCALE_RANGE

__all__ = [
    'GovernorConfig', 'POWER_SUPPLY_STATUS_CHARGING', 'POWER_SUPPLY_STATUS_FULL', 'PowerState',
    'ThermalState',
]

# sensor_msgs/BatteryState power_supply_status values (kept here: no message import).
POWER_SUPPLY_STATUS_CHARGING = 1
POWER_SUPPLY_STATUS_FULL = 4


class PowerState(str, enum.Enum):
    """Battery-derived power state, from plenty to little energy."""

    NORMAL = 'normal'
    SAVING = 'saving'
    CRITICAL = 'critical'

    @property
    def rank(self) -> int:
        """Return 0 for normal, 1 for saving, 2 for critical (higher: less energy)."""
        return _POWER_ORDER.index(self)


_POWER_ORDER = (PowerState.NORMAL, PowerState.SAVING, PowerState.CRITICAL)


class ThermalState(str, enum.Enum):
    """Temperature-derived state: nominal, or hot enough to relax the bounds."""

    NOMINAL = 'nominal'
    HOT = 'hot'


def _number(name: str, value, *, low=-math.inf, high=math.inf, low_open=False,
            high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f'GovernorConfig {name} must be a finite number, got {value!r}')
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left, right = '(' if low_open else '[', ')' if high_open else ']'
        raise ValueError(f'GovernorConfig {name} must be in {left}{low:g}, {high:g}{right}, '
                         f'got {value:g}')
    return value


@dataclass(frozen=True, kw_only=True)
class GovernorConfig:
    """
    Rules of the governor; every field is checked when the config is built.

    Power states come from the battery state of charge (soc, 0..1): normal at or above
    ``saving_below_soc``, saving below it, critical below ``critical_below_soc``. A lower
    state is entered as soon as soc drops under its threshold; a higher one only once soc is
    at least ``threshold + soc_hysteresis``. Each state scales energy budgets by its
    ``energy_scale_*``. Above ``hot_above_c`` latency bounds are scaled by
    ``hot_latency_scale`` and min_accuracy lowered by ``hot_accuracy_drop``, until the
    temperature is below ``hot_above_c - temperature_hysteresis_c`` again.

    An input silent for more than ``stale_after_s`` is stale. A stale battery counts as
    critical power and a stale temperature as hot (the safe adjustments), unless that input is
    not required (``battery_required`` / ``temperature_required`` false): then it counts as
    normal / nominal. An input never heard adjusts nothing.
    """

    saving_below_soc: float = 0.5
    critical_below_soc: float = 0.2
    soc_hysteresis: float = 0.05
    energy_scale_normal: float = 1.0
    energy_scale_saving: float = 0.7
    energy_scale_critical: float = 0.4
    charging_is_normal: bool = True
    hot_above_c: float = 70.0
    temperature_hysteresis_c: float = 5.0
    hot_latency_scale: float = 1.5
    hot_accuracy_drop: float = 0.03
    plausible_temperature_c: Tuple[float, float] = (-40.0, 150.0)
    stale_after_s: float = 10.0
    battery_required: bool = True
    temperature_required: bool = True

    def __post_init__(self):
        def store(name, value):
            object.__setattr__(self, name, value)

        store('saving_below_soc', _number('saving_below_soc', self.saving_below_soc,
                                          low=0.0, high=1.0, low_open=True))
        store('critical_below_soc', _number('critical_below_soc', self.critical_below_soc,
                                            low=0.0, high=1.0, low_open=True))
        if self.critical_below_soc >= self.saving_below_soc:
            raise ValueError(
                f'GovernorConfig critical_below_soc {self.critical_below_soc:g} must be below '
                f'saving_below_soc {self.saving_below_soc:g}')
        store('soc_hysteresis', _number('soc_hysteresis', self.soc_hysteresis,
                                        low=0.0, high=1.0))
        if self.saving_below_soc + self.soc_hysteresis > 1.0:
            raise ValueError(
                f'GovernorConfig saving_below_soc {self.saving_below_soc:g} + soc_hysteresis '
                f'{self.soc_hysteresis:g} exceeds 1: a full battery could never return to '
                f'normal')
        for state in ('normal', 'saving', 'critical'):
            name = f'energy_scale_{state}'
            store(name, _number(name, getattr(self, name), low=SCALE_RANGE[0],
                                high=SCALE_RANGE[1]))
        if not (self.energy_scale_normal >= self.energy_scale_saving
                >= self.energy_scale_critical):
            raise ValueError(
                f'GovernorConfig energy scales must not grow as the battery drains: need '
                f'normal >= saving >= critical, got {self.energy_scale_normal:g} / '
                f'{self.energy_scale_saving:g} / {self.energy_scale_critical:g}')
        for name in ('charging_is_normal', 'battery_required', 'temperature_required'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f'GovernorConfig {name} must be true or false, got {getattr(self, name)!r}')
        try:
            low, high = self.plausible_temperature_c
        except (TypeError, ValueError):
            raise ValueError(
                f'GovernorConfig plausible_temperature_c must be (low, high) in degrees C, '
                f'got {self.plausible_temperature_c!r}') from None
        low = _number('plausible_temperature_c low', low)
        high = _number('plausible_temperature_c high', high)
        store('plausible_temperature_c', (low, high))
        store('hot_above_c', _number('hot_above_c', self.hot_above_c, low=low, high=high,
                                     low_open=True, high_open=True))
        store('temperature_hysteresis_c', _number(
            'temperature_hysteresis_c', self.temperature_hysteresis_c, low=0.0,
            high=self.hot_above_c - low, high_open=True))
        store('hot_latency_scale', _number('hot_latency_scale', self.hot_latency_scale,
                                           low=1.0, high=SCALE_RANGE[1]))
        store('hot_accuracy_drop', _number('hot_accuracy_drop', self.hot_accuracy_drop,
                                           low=0.0, high=1.0))
        store('stale_after_s', _number('stale_after_s', self.stale_after_s, low=0.0,
                                       low_open=True))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> 'GovernorConfig':
        """Build from a mapping (YAML, parameters); unknown keys are refused by name."""
        if not isinstance(values, Mapping):
            raise ValueError(f'governor config must be a mapping, got {type(values).__name__}')
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ValueError(f'unknown governor config key(s) {", ".join(unknown)}; '
                             f'known: {", ".join(known)}')
        values = dict(values)
        if 'plausible_temperature_c' in values:
            values['plausible_temperature_c'] = tuple(values['plausible_temperature_c'])
        return cls(**values)

    def energy_scale(self, state: PowerState) -> float:
        """Return the energy budget multiplier of a power state."""
        return {PowerState.NORMAL: self.energy_scale_normal,
                PowerState.SAVING: self.energy_scale_saving,
                PowerState.CRITICAL: self.energy_scale_critical}[PowerState(state)]

    def power_adjustment(self, state: PowerState) -> Adjustment:
        """Return the budget adjustment of a power state."""
        return Adjustment(energy_scale=self.energy_scale(state))

    @property
    def hot_adjustment(self) -> Adjustment:
        """Return the budget adjustment while hot."""
        return Adjustment(latency_scale=self.hot_latency_scale,
                          accuracy_drop=self.hot_accuracy_drop)

    def as_dict(self) -> Dict[str, Any]:
        """Return the configuration as plain values (for logs and YAML)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values['plausible_temperature_c'] = list(self.plausible_temperature_c)
        return values
