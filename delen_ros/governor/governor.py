"""
Battery / temperature readings -> one budget adjustment, with hysteresis and staleness.

The Governor never reads a clock: readings carry their stamps and ``decide`` gets the
current time, so the same inputs always give the same decisions (and tests replay traces).
It knows no budgets: the server applies the adjustment to its own (see adjustment.py).
"""

from collections import Counter
from dataclasses import dataclass, replace
import math
import numbers
from typing import Dict, Mapping, Optional, Tuple

from .adjustment import Adjustment
from .config import (GovernorConfig, POWER_SUPPLY_STATUS_CHARGING, POWER_SUPPLY_STATUS_FULL,
                     PowerState, ThermalState)

__all__ = ['Governor', 'GovernorDecision', 'IGNORE_REASONS']

# Keys of Governor.ignored: why a reading was dropped.
IGNORE_REASONS = (
    'battery_nan',            # percentage NaN: the driver does not know the charge
    'battery_out_of_range',   # percentage outside [0, 1] (a driver publishing 0..100?)
    'battery_bad_stamp',      # stamp not a finite number
    'battery_out_of_order',   # stamp older than the last accepted battery reading
    'temperature_nan',
    'temperature_implausible',  # outside GovernorConfig.plausible_temperature_c
    'temperature_bad_stamp',
    'temperature_out_of_order',
)


@dataclass(frozen=True, kw_only=True)
class GovernorDecision:
    """
    The adjustment at one instant, and why.

    Per input: never heard, it adjusts nothing (state None); fresh, its state decides; stale
    (heard once, then silent for more than stale_after_s), it gets its safe adjustment
    (battery: critical power, temperature: hot) or, when not required, counts as normal /
    nominal. ``changed`` is true when the adjustment, a state or the stale / unheard inputs
    differ from the previous decision (always true for the first one): log on it.
    """

    now_s: float
    adjustment: Adjustment
    power_state: Optional[PowerState]  # the state the adjustment follows; None: not heard
    thermal_state: Optional[ThermalState]
    stale_inputs: Tuple[str, ...]  # required inputs heard once and now stale: safe adjustment
    unheard_inputs: Tuple[str, ...]  # inputs with no accepted reading yet: no adjustment
    reason: str  # one line for BudgetAdjustment.reason; empty when nothing is adjusted
    reasons: Tuple[str, ...]  # one line per input, and the ignored readings
    changed: bool
    ignored: Mapping[str, int]

    @property
    def key(self) -> tuple:
        """Return what ``changed`` compares: adjustment, states, stale and unheard inputs."""
        return (self.adjustment, self.power_state, self.thermal_state, self.stale_inputs,
                self.unheard_inputs)


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


class Governor:
    """
    Turns battery and temperature readings into one budget adjustment.

    Feed readings with ``update_battery`` / ``update_temperature`` as messages arrive (bad
    readings are ignored and counted in ``ignored``), then call ``decide`` with the current
    time. States change only on accepted readings, with the
    hysteresis of the config; staleness is judged in ``decide``.
    """

    def __init__(self, config: Optional[GovernorConfig] = None):
        if config is None:
            config = GovernorConfig()
        if not isinstance(config, GovernorConfig):
            raise ValueError(f'config must be a GovernorConfig, got {type(config).__name__}')
        self.config = config
        self.power_state: Optional[PowerState] = None
        self.thermal_state: Optional[ThermalState] = None
        self.soc: Optional[float] = None
        self.charging = False
        self.temperature_c: Optional[float] = None
        self.battery_stamp_s: Optional[float] = None
        self.temperature_stamp_s: Optional[float] = None
        self.transitions = 0  # power and thermal state changes since start
        self._ignored: Counter = Counter()
        self._last: Optional[GovernorDecision] = None

    @property
    def ignored(self) -> Dict[str, int]:
        """Return how many readings were dropped, by reason (see IGNORE_REASONS)."""
        return {reason: self._ignored[reason] for reason in IGNORE_REASONS
                if self._ignored[reason]}

    def _accept_stamp(self, source: str, stamp_s, last: Optional[float]) -> bool:
        if not _finite(stamp_s):
            self._ignored[f'{source}_bad_stamp'] += 1
            return False
        if last is not None and stamp_s < last:
            self._ignored[f'{source}_out_of_order'] += 1
            return False
        return True

    def _next_power_state(self, soc: float) -> PowerState:
        config = self.config

        def state_for(saving_below, critical_below):
            if soc < critical_below:
                return PowerState.CRITICAL
            if soc < saving_below:
                return PowerState.SAVING
            return PowerState.NORMAL

        going_down = state_for(config.saving_below_soc, config.critical_below_soc)
        current = self.power_state
        if current is None or going_down.rank > current.rank:
            return going_down
        # Going up needs the threshold plus the hysteresis margin.
        margin = config.soc_hysteresis
        going_up = state_for(config.saving_below_soc + margin,
                             config.critical_below_soc + margin)
        return going_up if going_up.rank < current.rank else current

    def update_battery(self, percentage, *, stamp_s,
                       power_supply_status: Optional[int] = None) -> bool:
        """
        Take a BatteryState reading: percentage is the state of charge in [0, 1].

        NaN (unknown charge), values outside [0, 1], bad or out-of-order stamps are ignored
        and counted. With ``charging_is_normal``, a charging or full battery is normal.
        Return whether the reading was accepted.
        """
        if not _finite(percentage):
            if isinstance(percentage, numbers.Real) and math.isnan(percentage):
                self._ignored['battery_nan'] += 1
            else:
                self._ignored['battery_out_of_range'] += 1
            return False
        if not 0.0 <= percentage <= 1.0:
            self._ignored['battery_out_of_range'] += 1
            return False
        if not self._accept_stamp('battery', stamp_s, self.battery_stamp_s):
            return False
        self.battery_stamp_s = float(stamp_s)
        self.soc = float(percentage)
        self.charging = power_supply_status in (POWER_SUPPLY_STATUS_CHARGING,
                                                POWER_SUPPLY_STATUS_FULL)
        if self.charging and self.config.charging_is_normal:
            state = PowerState.NORMAL
        else:
            state = self._next_power_state(self.soc)
        if self.power_state is not None and state != self.power_state:
            self.transitions += 1
        self.power_state = state
        return True

    def update_temperature(self, celsius, *, stamp_s) -> bool:
        """
        Take a Temperature reading in degrees Celsius.

        NaN, values outside ``plausible_temperature_c``, bad or out-of-order stamps are
        ignored and counted. Return whether the reading was accepted.
        """
        if not _finite(celsius):
            if isinstance(celsius, numbers.Real) and math.isnan(celsius):
                self._ignored['temperature_nan'] += 1
            else:
                self._ignored['temperature_implausible'] += 1
            return False
        low, high = self.config.plausible_temperature_c
        if not low <= celsius <= high:
            self._ignored['temperature_implausible'] += 1
            return False
        if not self._accept_stamp('temperature', stamp_s, self.temperature_stamp_s):
            return False
        self.temperature_stamp_s = float(stamp_s)
        self.temperature_c = float(celsius)
        config = self.config
        if celsius >= config.hot_above_c:
            state = ThermalState.HOT
        elif self.thermal_state is ThermalState.HOT \
                and celsius >= config.hot_above_c - config.temperature_hysteresis_c:
            state = ThermalState.HOT  # cooling, but not yet past the hysteresis margin
        else:
            state = ThermalState.NOMINAL
        if self.thermal_state is not None and state != self.thermal_state:
            self.transitions += 1
        self.thermal_state = state
        return True

    def _stale(self, stamp: float, now_s: float) -> Optional[str]:
        """Say that an input is stale, or return None when it is fresh."""
        if now_s - stamp > self.config.stale_after_s:
            return f'stale (silent for more than {self.config.stale_after_s:g} s)'
        return None

    def _power_reason(self, state: PowerState) -> str:
        config = self.config
        scale = config.energy_scale(state)
        if self.charging and config.charging_is_normal:
            return f'battery charging (soc {self.soc:.2f}): normal power, energy x{scale:.2f}'
        text = f'battery soc {self.soc:.2f}: {state.value} power, energy x{scale:.2f}'
        if state is PowerState.SAVING and self.soc >= config.saving_below_soc:
            text += (f' (hysteresis: normal again at soc >= '
                     f'{config.saving_below_soc + config.soc_hysteresis:.2f})')
        elif state is PowerState.CRITICAL and self.soc >= config.critical_below_soc:
            text += (f' (hysteresis: saving again at soc >= '
                     f'{config.critical_below_soc + config.soc_hysteresis:.2f})')
        return text

    def _thermal_reason(self) -> str:
        config = self.config
        if self.thermal_state is ThermalState.NOMINAL:
            return f'temperature {self.temperature_c:.1f} C: nominal'
        text = (f'temperature {self.temperature_c:.1f} C: hot, latency '
                f'x{config.hot_latency_scale:.2f}, min_accuracy -{config.hot_accuracy_drop:.2f}')
        if self.temperature_c < config.hot_above_c:
            text += (f' (hysteresis: nominal again below '
                     f'{config.hot_above_c - config.temperature_hysteresis_c:.1f} C)')
        return text

    def _battery(self, now_s: float):
        """Return (state, adjustment, reason, stale) of the battery input."""
        config = self.config
        if self.battery_stamp_s is None:
            return None, Adjustment(), 'battery: none heard yet, no adjustment', False
        silent = self._stale(self.battery_stamp_s, now_s)
        if silent is None:
            return (self.power_state, config.power_adjustment(self.power_state),
                    self._power_reason(self.power_state), False)
        if not config.battery_required:
            return (PowerState.NORMAL, Adjustment(),
                    f'battery {silent}; not required: counted as normal', False)
        critical = PowerState.CRITICAL
        return (critical, config.power_adjustment(critical),
                f'battery {silent}: safe adjustment, counted as critical power, energy '
                f'x{config.energy_scale(critical):.2f}', True)

    def _temperature(self, now_s: float):
        """Return (state, adjustment, reason, stale) of the temperature input."""
        config = self.config
        if self.temperature_stamp_s is None:
            return None, Adjustment(), 'temperature: none heard yet, no adjustment', False
        silent = self._stale(self.temperature_stamp_s, now_s)
        if silent is None:
            adjustment = config.hot_adjustment if self.thermal_state is ThermalState.HOT \
                else Adjustment()
            return self.thermal_state, adjustment, self._thermal_reason(), False
        if not config.temperature_required:
            return (ThermalState.NOMINAL, Adjustment(),
                    f'temperature {silent}; not required: counted as nominal', False)
        return (ThermalState.HOT, config.hot_adjustment,
                f'temperature {silent}: safe adjustment, counted as hot, latency '
                f'x{config.hot_latency_scale:.2f}, min_accuracy -{config.hot_accuracy_drop:.2f}',
                True)

    def decide(self, now_s) -> GovernorDecision:
        """
        Return the adjustment at time ``now_s`` (seconds, same clock as the stamps).

        Raises ValueError on a non-finite time; never reads a clock.
        """
        if not _finite(now_s):
            raise ValueError(f'now_s must be a finite time in seconds, got {now_s!r}')
        now_s = float(now_s)
        power, power_adjustment, power_reason, battery_stale = self._battery(now_s)
        thermal, thermal_adjustment, thermal_reason, temperature_stale = \
            self._temperature(now_s)
        adjustment = power_adjustment.then(thermal_adjustment)
        reasons = [power_reason, thermal_reason]
        ignored = self.ignored
        if ignored:
            reasons.append('ignored readings: ' + ', '.join(
                f'{reason} {count}' for reason, count in ignored.items()))
        # The message's reason names only the inputs that adjust something.
        parts = ((power_reason, power_adjustment), (thermal_reason, thermal_adjustment))
        reason = '; '.join(text for text, part in parts if not part.is_identity)
        stale = tuple(name for name, is_stale in (('battery', battery_stale),
                                                  ('temperature', temperature_stale))
                      if is_stale)
        unheard = tuple(name for name, stamp in (('battery', self.battery_stamp_s),
                                                 ('temperature', self.temperature_stamp_s))
                        if stamp is None)
        decision = GovernorDecision(
            now_s=now_s, adjustment=adjustment, power_state=power, thermal_state=thermal,
            stale_inputs=stale, unheard_inputs=unheard, reason=reason, reasons=tuple(reasons),
            changed=True, ignored=ignored)
        if self._last is not None and self._last.key == decision.key:
            decision = replace(decision, changed=False)
        self._last = decision
        return decision
