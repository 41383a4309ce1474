"""Per-tenant budgets and the adjustments the governor applies to them."""

from dataclasses import asdict, dataclass
import math
import numbers
from typing import Any, Dict, Mapping

__all__ = ['Adjustment', 'Budgets']

# Latency bounds never scale down to zero: a 1 microsecond floor keeps them valid.
MIN_LATENCY_MS = 1e-3


def _real(owner: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f'{owner} {name} must be a number, got {value!r}')
    return float(value)


@dataclass(frozen=True, kw_only=True)
class Budgets:
    """What one tenant asks of each request: latency bound, accuracy target, energy."""

    latency_ms: float
    min_accuracy: float
    energy_mj: float

    def __post_init__(self):
        latency = _real('Budgets', 'latency_ms', self.latency_ms)
        accuracy = _real('Budgets', 'min_accuracy', self.min_accuracy)
        energy = _real('Budgets', 'energy_mj', self.energy_mj)
        if not (math.isfinite(latency) and latency > 0):
            raise ValueError(f'Budgets latency_ms must be positive and finite, got {latency}')
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f'Budgets min_accuracy must be in [0, 1], got {accuracy}')
        # inf is allowed: a tenant without an energy bound.
        if math.isnan(energy) or energy <= 0:
            raise ValueError(f'Budgets energy_mj must be positive (inf: unbounded), got {energy}')
        object.__setattr__(self, 'latency_ms', latency)
        object.__setattr__(self, 'min_accuracy', accuracy)
        object.__setattr__(self, 'energy_mj', energy)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> 'Budgets':
        """Build from a mapping with exactly the keys latency_ms, min_accuracy, energy_mj."""
        if isinstance(values, Budgets):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f'budgets must be a mapping, got {type(values).__name__}')
        expected = {'latency_ms', 'min_accuracy', 'energy_mj'}
        if set(values) != expected:
            missing = sorted(expected - set(values))
            unknown = sorted(set(values) - expected)
            raise ValueError(f'budgets need keys latency_ms, min_accuracy, energy_mj; '
                             f'missing {missing}, unknown {unknown}')
        return cls(**values)

    def as_dict(self) -> Dict[str, float]:
        """Return the budgets as a plain dict (parameter values, YAML)."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Adjustment:
    """
    How budgets change: energy and latency are scaled, the accuracy target lowered.

    An energy_scale below 1 tightens the energy budget; a latency_scale above 1 relaxes the
    latency bound; accuracy_drop is subtracted from min_accuracy (clamped to [0, 1]).
    """

    energy_scale: float = 1.0
    latency_scale: float = 1.0
    accuracy_drop: float = 0.0

    def __post_init__(self):
        for name in ('energy_scale', 'latency_scale'):
            value = _real('Adjustment', name, getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'Adjustment {name} must be positive and finite, got {value}')
            object.__setattr__(self, name, value)
        drop = _real('Adjustment', 'accuracy_drop', self.accuracy_drop)
        if not 0.0 <= drop <= 1.0:
            raise ValueError(f'Adjustment accuracy_drop must be in [0, 1], got {drop}')
        object.__setattr__(self, 'accuracy_drop', drop)

    def then(self, other: 'Adjustment') -> 'Adjustment':
        """Return both adjustments in one: scales multiply, accuracy drops add (capped at 1)."""
        return Adjustment(energy_scale=self.energy_scale * other.energy_scale,
                          latency_scale=self.latency_scale * other.latency_scale,
                          accuracy_drop=min(1.0, self.accuracy_drop + other.accuracy_drop))

    def apply(self, budgets: Budgets) -> Budgets:
        """Return adjusted budgets, clamped to valid ranges."""
        return Budgets(
            latency_ms=max(MIN_LATENCY_MS, budgets.latency_ms * self.latency_scale),
            min_accuracy=min(1.0, max(0.0, budgets.min_accuracy - self.accuracy_drop)),
            energy_mj=budgets.energy_mj * self.energy_scale)

    def describe(self) -> str:
        """Return a short text such as 'energy x0.40, latency x1.50, min_accuracy -0.03'."""
        return (f'energy x{self.energy_scale:.2f}, latency x{self.latency_scale:.2f}, '
                f'min_accuracy -{self.accuracy_drop:.2f}')
