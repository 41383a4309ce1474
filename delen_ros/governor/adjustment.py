"""
Budget adjustments: what the governor asks for, and how the server composes it (no ROS import).

The server owns every tenant's base goal (its parameters: config, rqt, ``ros2 param set``).
An ``Adjustment`` scales the latency and energy bounds and relaxes the accuracy target on
top of it; ``AdjustedGoals`` keeps the base goals and the latest adjustments and hands the
effective goals to the runtime. An adjustment that is not renewed within ``timeout_s`` lapses
and the base goals return, so a governor that stops or goes away cannot leave budgets behind.
"""

from dataclasses import dataclass, replace
import math
import numbers
import threading
from typing import Callable, Dict, List, Optional

from ..runtime import Goal, GoalKind

__all__ = ['ALL_TENANTS', 'AdjustedGoals', 'Adjustment', 'adjust_goal']

ALL_TENANTS = ''  # BudgetAdjustment.tenant of an adjustment for every tenant
SCALE_RANGE = (0.01, 100.0)
# Latency bounds never scale to zero; an accuracy goal relaxed to nothing keeps a token target.
MIN_LATENCY_MS = 1e-3
MIN_ACCURACY = 1e-3
# BudgetAdjustment carries float32: 0.7 arrives as 0.699999988.
_SIGNIFICANT_DIGITS = 7


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f'Adjustment {name} must be a finite number, got {value!r}')
    return float(value)


@dataclass(frozen=True, kw_only=True)
class Adjustment:
    """
    How budgets change: latency and energy bounds are scaled, the accuracy target lowered.

    ``energy_scale`` below 1 tightens the energy bound; ``latency_scale`` above 1 relaxes the
    latency bound (both in [0.01, 100]); ``accuracy_drop`` (0..1) is subtracted from the
    minimum accuracy (BudgetAdjustment.accuracy_relaxation).
    """

    energy_scale: float = 1.0
    latency_scale: float = 1.0
    accuracy_drop: float = 0.0

    def __post_init__(self):
        low, high = SCALE_RANGE
        for name in ('energy_scale', 'latency_scale'):
            value = _real(name, getattr(self, name))
            if not low <= value <= high:
                raise ValueError(f'Adjustment {name} must be in [{low:g}, {high:g}], '
                                 f'got {value:g}')
            object.__setattr__(self, name, value)
        drop = _real('accuracy_drop', self.accuracy_drop)
        if not 0.0 <= drop <= 1.0:
            raise ValueError(f'Adjustment accuracy_drop must be in [0, 1], got {drop:g}')
        object.__setattr__(self, 'accuracy_drop', drop)

    @classmethod
    def from_message(cls, *, latency_scale, accuracy_relaxation, energy_scale) -> 'Adjustment':
        """Build from BudgetAdjustment fields, without their float32 noise (ValueError: bad)."""
        def clean(name, value):
            return float(f'{_real(name, value):.{_SIGNIFICANT_DIGITS}g}')
        return cls(latency_scale=clean('latency_scale', latency_scale),
                   accuracy_drop=clean('accuracy_relaxation', accuracy_relaxation),
                   energy_scale=clean('energy_scale', energy_scale))

    @property
    def is_identity(self) -> bool:
        """Return whether this adjustment changes nothing."""
        return self == Adjustment()

    def then(self, other: 'Adjustment') -> 'Adjustment':
        """Return both adjustments in one: scales multiply, accuracy drops add (capped)."""
        low, high = SCALE_RANGE
        return Adjustment(
            energy_scale=min(high, max(low, self.energy_scale * other.energy_scale)),
            latency_scale=min(high, max(low, self.latency_scale * other.latency_scale)),
            accuracy_drop=min(1.0, self.accuracy_drop + other.accuracy_drop))

    def describe(self) -> str:
        """Return a short text such as 'latency x1.50, min_accuracy -0.03, energy x0.40'."""
        if self.is_identity:
            return 'no adjustment'
        parts = []
        if self.latency_scale != 1.0:
            parts.append(f'latency x{self.latency_scale:.2f}')
        if self.accuracy_drop:
            parts.append(f'min_accuracy -{self.accuracy_drop:.3g}')
        if self.energy_scale != 1.0:
            parts.append(f'energy x{self.energy_scale:.2f}')
        return ', '.join(parts)


def adjust_goal(goal: Goal, adjustment: Adjustment) -> Goal:
    """
    Return the effective goal: base bounds with the adjustment applied.

    Bounds the base goal does not have stay absent; a secondary accuracy bound relaxed to
    nothing is dropped, a primary one keeps a token target (the goal needs one).
    """
    latency, accuracy, energy = goal.latency_ms, goal.min_accuracy, goal.energy_mj
    if latency is not None:
        latency = max(MIN_LATENCY_MS, latency * adjustment.latency_scale)
    if energy is not None:
        energy = energy * adjustment.energy_scale
    if accuracy is not None and adjustment.accuracy_drop:
        accuracy -= adjustment.accuracy_drop
        if accuracy < MIN_ACCURACY:
            accuracy = MIN_ACCURACY if goal.kind is GoalKind.ACCURACY else None
    return replace(goal, latency_ms=latency, min_accuracy=accuracy, energy_mj=energy)


@dataclass(frozen=True)
class _Received:
    adjustment: Adjustment
    reason: str
    received_s: float


_NONE = _Received(Adjustment(), '', -math.inf)


class AdjustedGoals:
    """
    Base goals x the latest adjustments -> effective goals, applied through ``apply``.

    ``apply(tenant, goal)`` is called (under this object's lock) whenever a tenant's
    effective goal is set or changes. An adjustment for one tenant takes precedence over
    one for all tenants (``ALL_TENANTS``); each lapses ``timeout_s`` after it was received.
    Thread-safe: parameter, message and timer callbacks may run in parallel.
    """

    def __init__(self, *, timeout_s: float, apply: Callable[[str, Goal], object]) -> None:
        self._lock = threading.RLock()
        self._apply = apply
        self._base: Dict[str, Goal] = {}
        self._effective: Dict[str, Goal] = {}
        self._received: Dict[str, _Received] = {}
        self._lapsed_s: Optional[float] = None
        self.timeout_s = timeout_s

    @property
    def timeout_s(self) -> float:
        """Seconds an adjustment stays in force without being renewed."""
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        value = _real('timeout_s', value)
        if value <= 0:
            raise ValueError(f'adjustment timeout_s must be positive, got {value:g}')
        self._timeout_s = value

    def set_base(self, tenant: str, goal: Goal) -> Goal:
        """Take a tenant's new base goal (from its parameters); apply and return the effective."""
        with self._lock:
            self._base[tenant] = goal
            return self._update(tenant, force=True)

    def remove(self, tenant: str) -> None:
        """Forget a tenant that is no longer served."""
        with self._lock:
            self._base.pop(tenant, None)
            self._effective.pop(tenant, None)

    def receive(self, tenant: str, adjustment: Adjustment, reason: str,
                now_s: float) -> List[str]:
        """Take an adjustment (tenant '' = all); return the tenants whose goal changed."""
        with self._lock:
            self._received[tenant] = _Received(adjustment, reason, float(now_s))
            self._lapsed_s = None
            targets = list(self._base) if tenant == ALL_TENANTS else \
                [tenant] if tenant in self._base else []
            return [name for name in targets if self._update(name)]

    def expire(self, now_s: float) -> List[str]:
        """Drop adjustments older than timeout_s; return the tenants whose goal changed."""
        with self._lock:
            old = [key for key, received in self._received.items()
                   if now_s - received.received_s > self._timeout_s]
            if not old:
                return []
            for key in old:
                del self._received[key]
            if not self._received:
                self._lapsed_s = float(now_s)
            return [name for name in list(self._base) if self._update(name)]

    def next_expiry_s(self) -> Optional[float]:
        """Return when the oldest adjustment in force lapses (None: none is in force)."""
        with self._lock:
            if not self._received:
                return None
            return min(received.received_s for received in self._received.values()) \
                + self._timeout_s

    def _in_force(self, tenant: str) -> _Received:
        return self._received.get(tenant) or self._received.get(ALL_TENANTS) or _NONE

    def _update(self, tenant: str, *, force: bool = False) -> bool:
        effective = adjust_goal(self._base[tenant], self._in_force(tenant).adjustment)
        if not force and effective == self._effective.get(tenant):
            return False
        self._apply(tenant, effective)
        self._effective[tenant] = effective
        return True

    def base(self, tenant: str) -> Goal:
        """Return a tenant's base goal."""
        with self._lock:
            return self._base[tenant]

    def effective(self, tenant: str) -> Goal:
        """Return a tenant's effective goal."""
        with self._lock:
            return self._effective[tenant]

    def adjustment(self, tenant: str) -> Adjustment:
        """Return the adjustment in force for a tenant (identity: none)."""
        with self._lock:
            return self._in_force(tenant).adjustment

    def reason(self, tenant: str) -> str:
        """Return why a tenant's effective bounds differ from its base ones ('' if they do not)."""
        with self._lock:
            received = self._in_force(tenant)
            if received.adjustment.is_identity:
                return ''
            return received.reason or received.adjustment.describe()

    def describe(self, now_s: float) -> str:
        """Return the state of the adjustments for diagnostics."""
        with self._lock:
            if not self._received:
                if self._lapsed_s is None:
                    return 'none received: base budgets'
                return (f'lapsed {now_s - self._lapsed_s:.1f} s ago (none for '
                        f'{self._timeout_s:g} s): base budgets')
            return '; '.join(
                f'{key or "all tenants"}: {received.adjustment.describe()}, '
                f'{now_s - received.received_s:.1f} s old'
                for key, received in sorted(self._received.items()))
