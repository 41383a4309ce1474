"""
Policy interface: plan a request (thread count, optional fixed exit), stop, learn.

A policy sees a request three times: ``plan`` before it starts (choose the resource setting,
i.e. the intra-op thread count, and optionally a fixed exit, as ALERT, USENIX ATC 2020, picks
model and power setting together), ``should_stop`` after every exit it evaluates (Dělen's
conditions, IoTDI 2023), and ``observe`` once it is done (measured latencies, to learn).
"""

import abc
from dataclasses import dataclass
import inspect
import math
import os
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple, Type, Union

from ..conditions import ExitStatus
from ..goals import Goal

__all__ = ['Outcome', 'Plan', 'Policy', 'PolicyError', 'RequestContext', 'available_cores',
           'available_policies', 'make_policy', 'parse_policy_spec', 'register_policy',
           'thread_counts_left']


def available_cores() -> int:
    """Return the number of cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def thread_counts_left(counts: Sequence[int], *, cores: int, busy: int) -> Tuple[int, ...]:
    """
    Return the thread counts that fit the cores left by ``busy`` threads computing elsewhere.

    A job must not count on cores another job or process computes on (ALERT chooses the
    resource setting with the model, for the conditions): at least the smallest count stays.
    """
    if busy <= 0:
        return tuple(counts)
    left = tuple(count for count in counts if count <= cores - busy)
    return left or (min(counts),)


class PolicyError(ValueError):
    """Unknown policy or bad policy parameters; the message says which and why."""


@dataclass(frozen=True)
class Plan:
    """
    Decision taken before a request starts.

    ``threads``: intra-op threads to run it with. ``target_exit``: run straight to this exit
    (only its head evaluated unless progressive) and stop there; None lets ``should_stop``
    decide after every exit. ``stop_exits``: with a target, the earlier exits whose heads run
    and where ``should_stop`` is asked (where an answer could end the request early); a
    tuple (even empty) also lets the runtime answer from the exit reached when the latency
    budget runs out on the way. ``model``: the name of the model to run, one of the request's
    candidates (None: the first, the tenant's pinned or the server's first model).
    """

    threads: int
    target_exit: Optional[int] = None
    stop_exits: Optional[Tuple[int, ...]] = None
    model: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.threads, bool) or int(self.threads) != self.threads \
                or self.threads < 1:
            raise PolicyError(f'plan threads must be a positive integer, got {self.threads!r}')
        if self.target_exit is not None and (isinstance(self.target_exit, bool)
                                             or int(self.target_exit) != self.target_exit):
            raise PolicyError(f'plan target_exit must be an integer, got {self.target_exit!r}')


@dataclass(slots=True)
class RequestContext:
    """
    What a policy knows when it plans a request (policies read it and must not change it).

    ``remaining_ms``: latency budget left after queueing (inf without a deadline);
    ``energy_budget_mj``: the goal's energy bound (inf without one); ``cost``: the shared
    CostModel (profile corrected by measured latencies); ``thread_counts``: the profiled ones
    that fit the cores other jobs and processes leave free now (at least the smallest).
    ``profile``, ``cost`` and ``stages`` are those of the first candidate model; ``models``
    holds every model the request may run on (``runtime.models.ServedModel``: name, profile,
    cost, executor), the first one first (ALERT's family of DNNs).
    """

    tenant: str
    goal: Goal
    num_exits: int
    queue_ms: float
    remaining_ms: float
    energy_budget_mj: float
    default_threads: int
    thread_counts: Tuple[int, ...]
    cost: Any
    profile: Any
    reserve_ms: float = 0.0
    stages: Any = None
    models: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """
    What happened to a served request, for ``Policy.observe``.

    ``stage_latencies_ms[k]`` is the measured time of stage k (with its head when it was
    evaluated, see ``exits_evaluated``); ``slowdown`` is measured / profiled median latency
    over the stages whose heads ran.
    """

    tenant: str
    goal: Goal
    plan: Plan
    threads: int
    exit_index: int
    exits_evaluated: Tuple[int, ...]
    stage_latencies_ms: Tuple[float, ...]
    queue_ms: float
    compute_ms: float
    latency_ms: float
    energy_mj: float
    deadline_met: bool
    confidence: float
    expected_accuracy: float
    slowdown: float
    infeasible: bool = False
    model: str = ''


class Policy(abc.ABC):
    """
    Base of exit policies; subclasses set ``name`` and register with ``register_policy``.

    Subclass constructors take keyword-only, validated parameters (they come from parameter
    strings such as ``'confidence:threshold=0.9'``). Policies are called from the inference
    worker only; ``plan`` and ``observe`` of one tenant's policy never run concurrently.
    """

    name: ClassVar[str] = ''

    def __init__(self, *, threads: Optional[int] = None) -> None:
        if threads is not None and (isinstance(threads, bool) or int(threads) != threads
                                    or threads < 1):
            raise PolicyError(f'{self.name}: threads must be a positive integer, got {threads!r}')
        if threads is not None and threads > available_cores():
            # More intra-op threads than cores only adds contention, for every tenant.
            raise PolicyError(f'{self.name}: threads {threads} exceeds the {available_cores()} '
                              'cores this process may use')
        self.threads = None if threads is None else int(threads)

    def _check_fraction(self, label: str, value: Any, high: float = 1.0) -> float:
        """Return ``value`` as a float in [0, high], else raise PolicyError naming it."""
        if not (math.isfinite(float(value)) and 0.0 <= float(value) <= high):
            raise PolicyError(f'{self.name}: {label} must be in [0, {high:g}], got {value!r}')
        return float(value)

    def _check_count(self, label: str, value: Any, low: int) -> int:
        """Return ``value`` as an integer >= low, else raise PolicyError naming it."""
        if isinstance(value, bool) or int(value) != value or value < low:
            raise PolicyError(f'{self.name}: {label} must be an integer >= {low}, got {value!r}')
        return int(value)

    def attach(self, profile: Any) -> None:
        """Check the policy against the model's profile when given to a tenant (PolicyError)."""

    def plan(self, context: RequestContext) -> Plan:
        """Choose the thread count (and optionally a fixed exit) before the request starts."""
        return Plan(threads=self.threads or context.default_threads)

    @abc.abstractmethod
    def should_stop(self, status: ExitStatus) -> bool:
        """Stop at this exit (True) or run the next stage (False)."""

    def observe(self, outcome: Outcome) -> None:
        """Learn from a finished request (default: nothing)."""

    def params(self) -> Dict[str, Any]:
        """Parameters that rebuild this policy with make_policy (default: threads if set)."""
        return {} if self.threads is None else {'threads': self.threads}

    def describe(self) -> str:
        """Return the parameter string of this policy, e.g. 'confidence:threshold=0.9'."""
        # Computed once: parameters are fixed at construction (learned state is not one).
        description = self.__dict__.get('_description')
        if description is None:
            params = self.params()
            description = self.name + (':' + ','.join(
                f'{k}={_format(v)}' for k, v in params.items()) if params else '')
            self._description = description
        return description

    @property
    def learns(self) -> bool:
        """Return True when the policy overrides ``observe`` (the server skips it otherwise)."""
        return type(self).observe is not Policy.observe

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.describe()!r})'


def _format(value: Any) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


_REGISTRY: Dict[str, Type[Policy]] = {}


def register_policy(cls: Type[Policy]) -> Type[Policy]:
    """Class decorator: make a Policy subclass available by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)) or not cls.name:
        raise PolicyError(f'{cls!r} is not a Policy subclass with a name')
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise PolicyError(f'policy name {cls.name!r} is already taken by {existing.__name__}')
    _REGISTRY[cls.name] = cls
    return cls


def available_policies() -> Tuple[str, ...]:
    """Names of the registered policies."""
    return tuple(sorted(_REGISTRY))


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ('true', 'false'):
        return lowered == 'true'
    if lowered in ('none', 'null'):
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            raise PolicyError(f'policy parameter value must be finite, got {text!r}')
        return value
    return text


def parse_policy_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
    """Split ``'name:key=value,key=value'`` into the name and typed parameters."""
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyError(f'empty policy {spec!r}; known: {", ".join(available_policies())}')
    name, _, rest = spec.strip().partition(':')
    params: Dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(','))):
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise PolicyError(f'policy parameter {item!r} in {spec!r} is not key=value')
        if key.strip() in params:
            raise PolicyError(f'policy parameter {key.strip()!r} given twice in {spec!r}')
        params[key.strip()] = _parse_value(value.strip())
    return name.strip().lower(), params


def make_policy(spec: Union[str, Policy], **params: Any) -> Policy:
    """
    Build a policy from a string (``'static:exit_index=1'``) or return an instance as is.

    Keyword arguments override those of the string.
    """
    if isinstance(spec, Policy):
        if params:
            raise PolicyError('parameters given with a policy instance; pass a string instead')
        return spec
    name, parsed = parse_policy_spec(spec)
    cls = _REGISTRY.get(name)
    if cls is None:
        raise PolicyError(f'unknown policy {name!r}; known: {", ".join(available_policies())}')
    parsed.update(params)
    accepted = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(parsed) - set(accepted))
    if unknown:
        raise PolicyError(f'policy {name!r} has no parameter {", ".join(unknown)}; '
                          f'it takes {", ".join(accepted) or "none"}')
    try:
        return cls(**parsed)
    except PolicyError:
        raise
    except (TypeError, ValueError) as error:
        raise PolicyError(f'policy {name!r}: {error}') from None
