"""
Conditions over the status after each exit: the runtime API policies are written in.

After every exit it evaluates, the executor builds an ``ExitStatus``; a policy decides whether
to stop with small predicates over it, combined with ``&``, ``|``, ``~``, ``any_of`` and
``all_of`` (Dělen, IoTDI 2023, Sec. 3.2: applications state conditions, the runtime checks
them at every exit).
"""

from dataclasses import dataclass
import math
from typing import Callable, Optional

from .goals import Goal

__all__ = ['Condition', 'ExitStatus', 'accuracy_reached', 'all_of', 'always', 'any_of',
           'confidence_at_least', 'exit_reached', 'is_last_exit', 'never',
           'next_stage_fits', 'next_stage_fits_energy', 'next_stage_fits_latency']


@dataclass(slots=True)
class ExitStatus:
    """
    Where a request stands after one exit.

    ``elapsed_ms`` runs from the frame's source stamp (queueing included), ``compute_ms`` from
    the start of its computation. ``expected_accuracy`` is the profile's accuracy of answers
    of this exit at this confidence (AccuracyCurve). ``remaining_*`` are what is left of the
    goal's bounds (inf without a bound, negative once overrun). ``next_*`` are the
    conservative predicted costs of the next stage (0 at the last exit). ``model``: the name
    of the model that ran (a server may hold several).
    """

    exit_index: int
    num_exits: int
    class_id: int
    confidence: float
    exit_accuracy: float
    expected_accuracy: float
    elapsed_ms: float
    compute_ms: float
    remaining_ms: float
    energy_mj: float
    remaining_mj: float
    next_latency_ms: float
    next_energy_mj: float
    threads: int
    goal: Goal
    model: str = ''

    @property
    def is_last(self) -> bool:
        """Return True at the network's final exit."""
        return self.exit_index >= self.num_exits - 1


class Condition:
    """A named predicate over ExitStatus; compose with ``&``, ``|`` and ``~``."""

    __slots__ = ('name', 'test')

    def __init__(self, test: Callable[[ExitStatus], bool], name: str) -> None:
        self.test = test
        self.name = name

    def __call__(self, status: ExitStatus) -> bool:
        return self.test(status)

    def __and__(self, other: 'Condition') -> 'Condition':
        return all_of(self, other)

    def __or__(self, other: 'Condition') -> 'Condition':
        return any_of(self, other)

    def __invert__(self) -> 'Condition':
        test = self.test
        return Condition(lambda status: not test(status), f'not {self.name}')

    def __repr__(self) -> str:
        return f'Condition({self.name})'


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'{name} must be in [0, 1], got {value}')
    return value


def _check_margin(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f'{name} must be finite and >= 0, got {value}')
    return value


def any_of(*conditions: Condition) -> Condition:
    """Hold when one of the conditions holds (short-circuit, in order)."""
    tests = tuple(c.test for c in conditions)
    return Condition(lambda status: any(test(status) for test in tests),
                     '(' + ' or '.join(c.name for c in conditions) + ')')


def all_of(*conditions: Condition) -> Condition:
    """Hold when every condition holds (short-circuit, in order)."""
    tests = tuple(c.test for c in conditions)
    return Condition(lambda status: all(test(status) for test in tests),
                     '(' + ' and '.join(c.name for c in conditions) + ')')


def always() -> Condition:
    """Hold always."""
    return Condition(lambda status: True, 'always')


def never() -> Condition:
    """Hold never."""
    return Condition(lambda status: False, 'never')


def confidence_at_least(threshold: float) -> Condition:
    """Hold when the calibrated confidence reaches ``threshold`` (BranchyNet, SDN)."""
    threshold = _check_fraction('threshold', threshold)
    return Condition(lambda status: status.confidence >= threshold,
                     f'confidence >= {threshold:g}')


def accuracy_reached(min_accuracy: Optional[float] = None) -> Condition:
    """
    Hold when the expected accuracy at this exit and confidence reaches the bound.

    The bound defaults to the goal's ``min_accuracy`` (never reached without one).
    """
    if min_accuracy is not None:
        bound = _check_fraction('min_accuracy', min_accuracy)
        return Condition(lambda status: status.expected_accuracy >= bound,
                         f'expected accuracy >= {bound:g}')

    def test(status: ExitStatus) -> bool:
        goal_bound = status.goal.min_accuracy
        return goal_bound is not None and status.expected_accuracy >= goal_bound
    return Condition(test, 'expected accuracy >= goal')


def exit_reached(exit_index: int) -> Condition:
    """Hold at exit ``exit_index`` or a later one (negative counts from the end)."""
    exit_index = int(exit_index)
    if exit_index >= 0:
        return Condition(lambda status: status.exit_index >= exit_index,
                         f'exit >= {exit_index}')
    return Condition(lambda status: status.exit_index >= status.num_exits + exit_index,
                     f'exit >= {exit_index}')


def is_last_exit() -> Condition:
    """Hold at the network's final exit."""
    return Condition(lambda status: status.exit_index >= status.num_exits - 1, 'last exit')


def next_stage_fits_latency(margin_ms: float = 0.0) -> Condition:
    """Hold when the next stage's predicted latency fits the remaining latency budget."""
    margin_ms = _check_margin('margin_ms', margin_ms)
    return Condition(lambda status: status.next_latency_ms + margin_ms <= status.remaining_ms,
                     'next stage fits latency')


def next_stage_fits_energy(margin_mj: float = 0.0) -> Condition:
    """Hold when the next stage's predicted energy fits the remaining energy budget."""
    margin_mj = _check_margin('margin_mj', margin_mj)
    return Condition(lambda status: status.next_energy_mj + margin_mj <= status.remaining_mj,
                     'next stage fits energy')


def next_stage_fits(*, margin_ms: float = 0.0, margin_mj: float = 0.0) -> Condition:
    """Hold when the next stage fits both the latency and the energy budget."""
    margin_ms = _check_margin('margin_ms', margin_ms)
    margin_mj = _check_margin('margin_mj', margin_mj)

    def test(status: ExitStatus) -> bool:
        return (status.next_latency_ms + margin_ms <= status.remaining_ms
                and status.next_energy_mj + margin_mj <= status.remaining_mj)
    return Condition(test, 'next stage fits')
