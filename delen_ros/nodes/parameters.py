"""
Parameters of the serving node, in one table (no ROS import).

The node turns each ``ParameterSpec`` into a ``ParameterDescriptor``; ``check_tenant_names``,
``tenant_goal`` and ``check_tenant`` are the rules its start-up and on-set callback apply, and
``unmeetable_bounds`` names the legal bounds that no exit can meet.

What is refused and what is only warned: a value that is malformed, out of range, names an
exit the model lacks, asks for more threads than the cores this process may use, or asks for
more accuracy than the model reaches is refused with the reason (the old value stays). A
latency or energy bound below what the first exit costs is legal (costs are estimates that
change with load, and ``on_infeasible: serve_first_exit`` still answers such a tenant): it is
accepted, warned once and shown in /diagnostics.
"""

from dataclasses import dataclass
import math
import re
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from ..runtime import available_cores, Goal, GoalError, make_policy, PolicyError

__all__ = ['GOALS', 'ParameterSpec', 'SERVER_PARAMETERS', 'TENANT_PARAMETERS', 'check_tenant',
           'check_tenant_name', 'check_tenant_names', 'tenant_defaults', 'tenant_goal',
           'tenant_parameter', 'unmeetable_bounds']

GOALS = ('latency', 'accuracy', 'energy')
# A tenant name prefixes parameters and topics: one ROS name token.
_TENANT_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its type, default, range and description (what rqt shows)."""

    name: str
    kind: str
    default: Any
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: Optional[float] = None
    read_only: bool = False
    choices: Tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in ('double', 'integer', 'string', 'bool', 'string_array'):
            raise ValueError(f'unknown parameter kind {self.kind!r} for {self.name}')
        if (self.minimum is None) != (self.maximum is None):
            raise ValueError(f'{self.name}: give both minimum and maximum, or neither')


SERVER_PARAMETERS = (
    ParameterSpec('model', 'string', '', 'multi-exit checkpoint (.pt); empty: the shipped model',
                  read_only=True),
    ParameterSpec('profile', 'string', '', 'profile JSON of the model; empty: beside the model',
                  read_only=True),
    ParameterSpec('models', 'string_array', [],
                  'more checkpoints (.pt, each with its .profile.json beside it, or the name '
                  'of a shipped model such as fmnist_small_resnet) for the model family: the '
                  'policy picks model x exit x threads per frame; a model is named by its '
                  'file name without .pt (for <tenant>.model); a YAML list or '
                  'comma-separated text', read_only=True),
    ParameterSpec('platform', 'string', '',
                  'power-model platform when no power meter is readable; empty: detect',
                  read_only=True),
    ParameterSpec('tenants', 'string_array', ['camera'],
                  'tenant names; each has the <tenant>.* parameters', read_only=True),
    ParameterSpec('threads', 'integer', 1,
                  'intra-op threads for policies that do not choose their own (at most the '
                  'cores this process may use; fewer while other jobs or processes want '
                  'them)', 1, available_cores(), 1, read_only=True),
    ParameterSpec('status_period_s', 'double', 1.0,
                  'period of TenantStatus and /diagnostics', 0.1, 10.0, 0.1, read_only=True),
    ParameterSpec('max_image_pixels', 'integer', 4096 * 4096,
                  'images with more pixels are rejected as oversize', 1, 2 ** 28, 1),
    ParameterSpec('max_batch', 'integer', 8,
                  'most frames of different tenants, already waiting, run as one batch when '
                  'every deadline in it is met; 1: no batching', 1, 64, 1, read_only=True),
    ParameterSpec('workers', 'integer', min(2, available_cores()),
                  'serving threads: the first takes the frames; the others serve waiting '
                  'frames beside it only while one thread could not answer them in time '
                  '(default: 2 where this process may use 2 cores)', 1, 16, 1, read_only=True),
    ParameterSpec('warm_up', 'bool', True,
                  'run every model at each batch size up to max_batch and each thread count '
                  'before serving, so the first frames do not pay for building the kernels '
                  '(a few hundred ms at start-up; logged)', read_only=True),
    ParameterSpec('cpu_priority', 'string', 'none',
                  'priority of the serving threads: none, nice:<-20..19>, realtime:<1..99> '
                  '(SCHED_FIFO; needs CAP_SYS_NICE or an rtprio limit) or slice:<100..100000> '
                  '(a time slice in µs: wakes ahead of CPU hogs; no rights needed; Linux 6.12+)',
                  read_only=True),
    ParameterSpec('fallback_latency_ms', 'double', 100.0,
                  'latency bound of a tenant whose latency_ms is 0 while its publishers '
                  'offer no deadline', 1.0, 10000.0, 1.0),
    ParameterSpec('adjustment_timeout_s', 'double', 5.0,
                  "a governor's BudgetAdjustment not renewed for this long lapses: the base "
                  'budgets return', 0.5, 3600.0, 0.1),
)

TENANT_PARAMETERS = (
    ParameterSpec('input_topic', 'string', '',
                  'sensor_msgs/Image topic; empty: <tenant>/image (relative: follows the '
                  'namespace and remaps)', read_only=True),
    ParameterSpec('transport', 'string', 'raw',
                  'image_transport of the input: raw (sensor_msgs/Image on input_topic) or '
                  'compressed (sensor_msgs/CompressedImage, jpeg or png, on '
                  '<input_topic>/compressed); an input_topic ending in /compressed is '
                  'compressed either way', read_only=True, choices=('raw', 'compressed')),
    ParameterSpec('output_topic', 'string', '',
                  'InferenceResult topic; empty: delen/<tenant>/result', read_only=True),
    ParameterSpec('status_topic', 'string', '',
                  'TenantStatus topic; empty: delen/<tenant>/status', read_only=True),
    ParameterSpec('goal', 'string', 'latency', 'primary goal of every request',
                  choices=GOALS),
    ParameterSpec('latency_ms', 'double', 0.0,
                  'latency bound from the image stamp, ms; 0: the deadline QoS offered by '
                  "the input topic's publishers", 0.0, 1000.0, 0.5),
    ParameterSpec('min_accuracy', 'double', 0.0,
                  'expected top-1 accuracy to reach (profile-calibrated); 0: no bound',
                  0.0, 1.0, 0.005),
    ParameterSpec('energy_mj', 'double', 0.0, 'energy bound per request, mJ; 0: no bound',
                  0.0, 10000.0, 0.1),
    ParameterSpec('policy', 'string', 'coordinated',
                  'exit policy, optionally with parameters (e.g. static:exit_index=1)'),
    ParameterSpec('model', 'string', '',
                  'pin this tenant to one model of the family (its file name without .pt); '
                  'empty: the policy chooses among the models that take the same input'),
    ParameterSpec('queue_size', 'integer', 2, 'newest frames kept waiting', 1, 100, 1),
    ParameterSpec('share', 'double', 1.0,
                  'weight of this tenant in the floor of answers each tenant gets under '
                  'overload (equal by default)', 0.01, 100.0, 0.01),
    ParameterSpec('on_infeasible', 'string', 'serve_first_exit',
                  'a frame that cannot meet its bound even at exit 0: serve_first_exit '
                  '(answer late, deadline_met false) or drop (no answer, counted)',
                  read_only=True, choices=('serve_first_exit', 'drop')),
    ParameterSpec('input_deadline_ms', 'double', 0.0,
                  'deadline QoS the image subscription requests; 0 (default): none, so every '
                  'publisher connects; > 0: only publishers offering this or tighter connect',
                  0.0, 10000.0, 1.0, read_only=True),
)

_TENANT_SPECS = {spec.name: spec for spec in TENANT_PARAMETERS}


def tenant_parameter(tenant: str, name: str) -> str:
    """Full parameter name of a tenant's setting, e.g. 'obstacle.latency_ms'."""
    return f'{tenant}.{name}'


def tenant_defaults(tenant: str) -> Dict[str, Any]:
    """Defaults of one tenant's parameters, with the topic names filled in."""
    values = {spec.name: spec.default for spec in TENANT_PARAMETERS}
    values['input_topic'] = f'{tenant}/image'
    values['output_topic'] = f'delen/{tenant}/result'
    values['status_topic'] = f'delen/{tenant}/status'
    return values


def _positive(value: Any) -> Optional[float]:
    value = float(value)
    return value if value > 0.0 and math.isfinite(value) else None


def tenant_goal(values: Mapping[str, Any], *, qos_deadline_ms: Optional[float],
                fallback_latency_ms: float) -> Goal:
    """
    Build a tenant's Goal from its parameters (GoalError says why it cannot).

    The latency bound is ``latency_ms``, else the deadline QoS its publishers offer; a latency
    goal with neither uses ``fallback_latency_ms``. Zero accuracy or energy means no bound.
    """
    kind = values['goal']
    if kind not in GOALS:
        raise GoalError(f'goal must be one of {", ".join(GOALS)}, got {kind!r}')
    latency = _positive(values['latency_ms']) or qos_deadline_ms
    accuracy = _positive(values['min_accuracy'])
    energy = _positive(values['energy_mj'])
    if kind == 'latency':
        return Goal.latency(latency or fallback_latency_ms, min_accuracy=accuracy,
                            energy_mj=energy)
    if kind == 'accuracy':
        if accuracy is None:
            raise GoalError('goal accuracy needs min_accuracy > 0')
        return Goal.accuracy(accuracy, latency_ms=latency, energy_mj=energy)
    if energy is None:
        raise GoalError('goal energy needs energy_mj > 0')
    return Goal.energy(energy, latency_ms=latency, min_accuracy=accuracy)


def check_tenant_name(name: Any, *, existing: Collection[str] = ()) -> str:
    """Return ``name`` if it can name a new tenant (a ROS name token not in use)."""
    if not isinstance(name, str) or not _TENANT_NAME.fullmatch(name):
        raise ValueError(f'tenant name {name!r} is not a ROS name token (a letter, then '
                         'letters, digits or _)')
    if name in existing:
        raise ValueError(f'tenant {name!r} already exists')
    return name


def check_tenant_names(names: Sequence[Any]) -> List[str]:
    """Return the tenant names, or raise ValueError for a bad or repeated one."""
    checked: List[str] = []
    for name in names:
        if name in checked:
            raise ValueError(f'tenant {name!r} is named twice in tenants')
        checked.append(check_tenant_name(name))
    return checked


def check_tenant(values: Mapping[str, Any], *, max_accuracy: float,
                 qos_deadline_ms: Optional[float], fallback_latency_ms: float,
                 policies: Sequence[str] = (), profile: Any = None) -> Goal:
    """
    Validate a tenant's parameters together; return its Goal or raise ValueError.

    With ``profile`` the policy is also checked against the model (``Policy.attach``: an exit
    it lacks, for instance).
    """
    goal = tenant_goal(values, qos_deadline_ms=qos_deadline_ms,
                       fallback_latency_ms=fallback_latency_ms)
    goal.check_reachable(max_accuracy)
    try:
        policy = make_policy(str(values['policy']))
        if profile is not None:
            policy.attach(profile)
    except PolicyError as error:
        known = f' (known: {", ".join(policies)})' if policies else ''
        raise PolicyError(f'{error}{known}') from None
    spec = _TENANT_SPECS['on_infeasible']
    if values['on_infeasible'] not in spec.choices:
        raise ValueError(f'on_infeasible must be one of {", ".join(spec.choices)}')
    return goal


def unmeetable_bounds(goal: Goal, cost: Any) -> Tuple[str, ...]:
    """
    Name the bounds of ``goal`` that even the first exit misses, at its best thread count.

    ``cost`` is the runtime's CostModel (``thread_counts`` and ``expected(exit, threads)``:
    the profiled cost corrected by what was measured so far). Empty when every bound is met.
    """
    first = [cost.expected(0, threads) for threads in cost.thread_counts]
    fastest = min(c.latency_ms for c in first)
    thriftiest = min(c.energy_mj for c in first)
    problems = []
    if goal.latency_ms is not None and goal.latency_ms < fastest:
        problems.append(f'latency bound {goal.latency_ms:g} ms is below the {fastest:.2f} ms '
                        'the first exit takes')
    if goal.energy_mj is not None and goal.energy_mj < thriftiest:
        problems.append(f'energy bound {goal.energy_mj:g} mJ is below the {thriftiest:.3f} mJ '
                        'the first exit uses')
    return tuple(problems)
