"""
Per-tenant goals: one primary objective under optional secondary bounds.

A goal states what a tenant wants from each request (Dělen, IoTDI 2023, Sec. 3.2: the runtime
API of conditions; ALERT, USENIX ATC 2020, Sec. 2: a deadline with an accuracy or energy goal).

- ``latency``: maximize accuracy, answering within ``latency_ms`` of the frame's source stamp.
- ``accuracy``: reach ``min_accuracy`` at the least latency and energy.
- ``energy``: maximize accuracy spending at most ``energy_mj`` per request.

The other two fields, when set, are extra bounds (e.g. a deadline with an energy cap).
"""

from dataclasses import dataclass
import enum
import functools
import math
from typing import Optional

__all__ = ['Goal', 'GoalError', 'GoalKind', 'parse_goal']


class GoalError(ValueError):
    """A goal that is malformed or that the model cannot reach; the message says why."""


class GoalKind(str, enum.Enum):
    """Which quantity a goal optimizes or guarantees."""

    LATENCY = 'latency'
    ACCURACY = 'accuracy'
    ENERGY = 'energy'


_UNITS = {GoalKind.LATENCY: 'ms', GoalKind.ACCURACY: '', GoalKind.ENERGY: 'mJ'}
_FIELDS = {GoalKind.LATENCY: 'latency_ms', GoalKind.ACCURACY: 'min_accuracy',
           GoalKind.ENERGY: 'energy_mj'}


def _check_bound(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise GoalError(f'{name} must be a number, got {value!r}')
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise GoalError(f'{name} must be a number, got {value!r}') from None
    if math.isnan(value):
        raise GoalError(f'{name} is NaN')
    if math.isinf(value):
        raise GoalError(f'{name} must be finite, got {value}')
    if value <= 0.0:
        raise GoalError(f'{name} must be positive, got {value}')
    return value


@dataclass(frozen=True)
class Goal:
    """
    What a tenant asks of every request: ``kind`` names the primary field.

    Build one with the keyword-only factories ``Goal.latency``, ``Goal.accuracy`` and
    ``Goal.energy``; every bound is validated on construction (GoalError).
    """

    kind: GoalKind
    latency_ms: Optional[float] = None
    min_accuracy: Optional[float] = None
    energy_mj: Optional[float] = None

    def __post_init__(self):
        try:
            kind = GoalKind(self.kind)
        except ValueError:
            known = ', '.join(k.value for k in GoalKind)
            raise GoalError(f'unknown goal kind {self.kind!r}; expected one of {known}') from None
        object.__setattr__(self, 'kind', kind)
        for name in ('latency_ms', 'min_accuracy', 'energy_mj'):
            object.__setattr__(self, name, _check_bound(name, getattr(self, name)))
        if self.min_accuracy is not None and self.min_accuracy > 1.0:
            raise GoalError(f'min_accuracy is a fraction in (0, 1], got {self.min_accuracy}')
        if getattr(self, _FIELDS[kind]) is None:
            article = 'a' if kind is GoalKind.LATENCY else 'an'
            raise GoalError(f'{article} {kind.value} goal needs {_FIELDS[kind]}')

    @classmethod
    def latency(cls, bound_ms: float, *, energy_mj: Optional[float] = None,
                min_accuracy: Optional[float] = None) -> 'Goal':
        """Maximize accuracy, answering within ``bound_ms`` of the source stamp."""
        return cls(GoalKind.LATENCY, latency_ms=bound_ms, energy_mj=energy_mj,
                   min_accuracy=min_accuracy)

    @classmethod
    def accuracy(cls, min_accuracy: float, *, latency_ms: Optional[float] = None,
                 energy_mj: Optional[float] = None) -> 'Goal':
        """Reach ``min_accuracy`` (0..1) at the least latency and energy."""
        return cls(GoalKind.ACCURACY, min_accuracy=min_accuracy, latency_ms=latency_ms,
                   energy_mj=energy_mj)

    @classmethod
    def energy(cls, bound_mj: float, *, latency_ms: Optional[float] = None,
               min_accuracy: Optional[float] = None) -> 'Goal':
        """Maximize accuracy spending at most ``bound_mj`` millijoules per request."""
        return cls(GoalKind.ENERGY, energy_mj=bound_mj, latency_ms=latency_ms,
                   min_accuracy=min_accuracy)

    @property
    def primary(self) -> float:
        """Value of the field ``kind`` names."""
        return getattr(self, _FIELDS[self.kind])

    @property
    def deadline_ms(self) -> Optional[float]:
        """Latency bound from the source stamp, primary or secondary (None: no deadline)."""
        return self.latency_ms

    def check_reachable(self, max_accuracy: float) -> 'Goal':
        """Return self, or raise GoalError when the accuracy asked exceeds ``max_accuracy``."""
        if self.min_accuracy is not None and self.min_accuracy > max_accuracy:
            raise GoalError(
                f'min_accuracy {self.min_accuracy:.4f} is above what the model reaches '
                f'({max_accuracy:.4f} at its best exit, per its profile)')
        return self

    def __str__(self) -> str:
        return self.text

    @functools.cached_property
    def text(self) -> str:
        """Return the goal as text that parse_goal reads back, e.g. 'latency:15ms'."""
        parts = [f'{self.kind.value}:{_format(self.primary)}{_UNITS[self.kind]}']
        for kind in GoalKind:
            value = getattr(self, _FIELDS[kind])
            if kind is not self.kind and value is not None:
                parts.append(f'{kind.value}:{_format(value)}{_UNITS[kind]}')
        return ','.join(parts)


def _format(value: float) -> str:
    return f'{value:g}'


def parse_goal(text: str) -> Goal:
    """
    Goal from text such as ``'latency:15'``, ``'accuracy:0.9,latency:30ms'``.

    The first item is the primary goal; units ('ms', 'mJ', '%' for accuracy) are optional.
    This is the form ROS parameters use (``goal:=latency:15``).
    """
    if not isinstance(text, str) or not text.strip():
        raise GoalError(f'empty goal {text!r}; expected e.g. "latency:15" or "accuracy:0.9"')
    values = {}
    kind = None
    for item in text.split(','):
        name, sep, raw = item.strip().partition(':')
        if not sep:
            name, sep, raw = item.strip().partition('=')
        try:
            goal_kind = GoalKind(name.strip().lower())
        except ValueError:
            known = ', '.join(k.value for k in GoalKind)
            raise GoalError(
                f'unknown goal kind {name.strip()!r} in {text!r}; expected one of {known}'
            ) from None
        if goal_kind in values:
            raise GoalError(f'{goal_kind.value} given twice in {text!r}')
        raw = raw.strip()
        scale = 1.0
        for suffix, factor in (('ms', 1.0), ('mj', 1.0), ('%', 0.01)):
            if raw.lower().endswith(suffix):
                raw, scale = raw[:-len(suffix)].strip(), factor
                break
        try:
            values[goal_kind] = float(raw) * scale
        except ValueError:
            raise GoalError(f'{goal_kind.value} needs a number in {text!r}, got {raw!r}') from None
        kind = kind or goal_kind
    return Goal(kind, **{_FIELDS[k]: v for k, v in values.items()})
