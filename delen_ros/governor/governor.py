"""
Battery / temperature readings -> per-tenant budgets, with hysteresis and a stale fallback.

The Governor never reads a clock: readings carry their stamps and ``decide`` gets the
current time, so the same inputs always give the same decisions (and tests replay traces).
"""

from collections import Counter
from dataclasses import dataclass
import math
import numbers
from typing import Dict, Mapping, Optional, Tuple

from .budgets import Adjustment, Budgets
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
    Budgets for every tenant at one instant, and why.

    ``changed`` is true when budgets, states or fallback differ from the previous decision
    (always true for the first one), so a node can send parameter updates only on change;
    ``changed_tenants`` names the tenants whose budgets moved.
    """

    now_s: float
    budgets: Mapping[str, Budgets]
    # States the budgets follow; while in fallback, the last known ones (None: never known).
    power_state: Optional[PowerState]
    thermal_state: Optional[ThermalState]
    adjustment: Adjustment  # applied to base budgets (the fallback one while in fallback)
    fallback: bool
    stale_inputs: Tuple[str, ...]  # required inputs that are stale or never seen
    reasons: Tuple[str, ...]
    changed: bool
    changed_tenants: Tuple[str, ...]
    ignored: Mapping[str, int]


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


class Governor:
    """
    Turns battery and temperature readings into per-tenant budgets.

    Feed readings with ``update_battery`` / ``update_temperature`` as messages arrive (bad
    readings are ignored and counted in ``ignored``), then call ``decide`` with the current
    time and the tenants' base budgets. States change only on accepted readings, with the
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

    def _staleness(self, name: str, stamp: Optional[float], now_s: float) -> Optional[str]:
        """Say why an input is stale, or return None when it is fresh."""
        if stamp is None:
            return f'{name}: no message yet'
        age = now_s - stamp
        if age > self.config.stale_after_s:
            return (f'{name} stale: last message {age:.1f} s ago '
                    f'(stale_after_s {self.config.stale_after_s:g})')
        return None

    def _power_reason(self) -> str:
        config = self.config
        state = self.power_state
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

    def decide(self, now_s, base_budgets: Mapping[str, Budgets]) -> GovernorDecision:
        """
        Budgets of every tenant at time ``now_s`` (seconds, same clock as the stamps).

        ``base_budgets`` maps tenant names to their unadjusted Budgets (or mappings with
        latency_ms, min_accuracy, energy_mj). Raises ValueError on a non-finite time or
        malformed budgets; never reads a clock.
        """
        if not _finite(now_s):
            raise ValueError(f'now_s must be a finite time in seconds, got {now_s!r}')
        now_s = float(now_s)
        if not isinstance(base_budgets, Mapping):
            raise ValueError(f'base_budgets must map tenant names to Budgets, got '
                             f'{type(base_budgets).__name__}')
        base = {}
        for tenant, budgets in base_budgets.items():
            if not isinstance(tenant, str) or not tenant:
                raise ValueError(f'tenant names must be non-empty strings, got {tenant!r}')
            try:
                base[tenant] = Budgets.from_mapping(budgets)
            except (TypeError, ValueError) as error:
                raise ValueError(f'base budgets of tenant {tenant!r}: {error}') from None

        config = self.config
        reasons = []
        stale = []
        # Effective states: an optional input that is stale counts as normal / nominal.
        power, thermal = self.power_state, self.thermal_state
        battery_why = self._staleness('battery', self.battery_stamp_s, now_s)
        if battery_why is None:
            reasons.append(self._power_reason())
        elif config.battery_required:
            stale.append('battery')
            reasons.append(battery_why)
        else:
            power = PowerState.NORMAL
            reasons.append(f'{battery_why}; not required: counted as normal')
        temperature_why = self._staleness('temperature', self.temperature_stamp_s, now_s)
        if temperature_why is None:
            reasons.append(self._thermal_reason())
        elif config.temperature_required:
            stale.append('temperature')
            reasons.append(temperature_why)
        else:
            thermal = ThermalState.NOMINAL
            reasons.append(f'{temperature_why}; not required: counted as nominal')

        if stale:
            adjustment = config.fallback_adjustment
            budgets = {tenant: config.safe_budgets[tenant] if tenant in config.safe_budgets
                       else adjustment.apply(tenant_base)
                       for tenant, tenant_base in base.items()}
            text = f'fallback: base budgets adjusted by {adjustment.describe()}'
            safe = sorted(set(base) & set(config.safe_budgets))
            if safe:
                text += f'; safe_budgets for {", ".join(safe)}'
            reasons.append(text)
        else:
            adjustment = config.power_adjustment(power)
            if thermal is ThermalState.HOT:
                adjustment = adjustment.then(config.hot_adjustment)
            budgets = {tenant: adjustment.apply(b) for tenant, b in base.items()}

        ignored = self.ignored
        if ignored:
            reasons.append('ignored readings: ' + ', '.join(
                f'{reason} {count}' for reason, count in ignored.items()))

        last = self._last
        if last is None:
            changed_tenants = tuple(sorted(budgets))
            changed = True
        else:
            changed_tenants = tuple(sorted(
                tenant for tenant in set(budgets) | set(last.budgets)
                if budgets.get(tenant) != last.budgets.get(tenant)))
            changed = bool(changed_tenants) or (
                (power, thermal, bool(stale))
                != (last.power_state, last.thermal_state, last.fallback))
        decision = GovernorDecision(
            now_s=now_s, budgets=budgets, power_state=power, thermal_state=thermal,
            adjustment=adjustment, fallback=bool(stale), stale_inputs=tuple(stale),
            reasons=tuple(reasons), changed=changed, changed_tenants=changed_tenants,
            ignored=ignored)
        self._last = decision
        return decision
