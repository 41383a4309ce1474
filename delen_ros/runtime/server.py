"""
Multi-tenant Dělen serving of one multi-exit model, without ROS.

Tenants share one model instance. Frames are submitted from any thread, queued per tenant
(newest N kept), served earliest-deadline-first by one inference worker that runs the network
stage by stage under each tenant's goal and policy, and answered through callbacks and a
results queue. ROS nodes are a thin layer over this class.
"""

import collections
from dataclasses import dataclass, replace
import logging
import math
from pathlib import Path
import threading
import time
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch

from .conditions import ExitStatus
from .cost import CostModel
from .energy import default_platform, detect_meter, EnergyMeter, PowerModel
from .executor import ConditionalExecutor, Execution
from .goals import Goal, GoalError, parse_goal
from .policies import make_policy, Outcome, Plan, Policy, RequestContext
from .scheduler import EdfScheduler, Request
from .stats import StatsSnapshot, TenantStats
from ..engine import load_checkpoint, LoadedModel
from ..engine.profiling import default_profile_path, load_profile, ModelProfile
from ..imaging import ImageFormatError, ModelInputTransform

__all__ = ['InferenceResult', 'InferenceServer', 'InputError', 'TenantConfig']

_LOG = logging.getLogger(__name__)
_INF = math.inf
INFEASIBLE_ACTIONS = ('drop', 'serve_first_exit')
_ENCODINGS = {(2, 'uint8'): 'mono8', (3, 'uint8'): 'rgb8', (2, 'uint16'): 'mono16',
              (3, 'uint16'): 'rgb16'}


class InputError(ValueError):
    """A frame that cannot be turned into the model's input; counted as rejected."""


@dataclass(frozen=True)
class TenantConfig:
    """
    How one tenant is served (behaviour lives in InferenceServer).

    ``queue_size``: newest frames kept waiting; ``on_infeasible``: 'drop' a frame that cannot
    meet its bound even at the first exit (expected cost, after queueing), or
    'serve_first_exit' anyway; ``progressive``:
    deliver every intermediate exit's answer (is_final=False) before the final one;
    ``best_effort_ms``: nominal deadline used only to order frames whose goal has no latency
    bound against the others.
    """

    name: str
    goal: Goal
    policy: str
    queue_size: int = 2
    on_infeasible: str = 'drop'
    progressive: bool = False
    best_effort_ms: float = 1000.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f'tenant name must be a non-empty string, got {self.name!r}')
        if not isinstance(self.goal, Goal):
            raise GoalError(f'goal must be a Goal, got {type(self.goal).__name__}')
        if isinstance(self.queue_size, bool) or int(self.queue_size) != self.queue_size \
                or self.queue_size < 1:
            raise ValueError(f'queue_size must be a positive integer, got {self.queue_size!r}')
        if self.on_infeasible not in INFEASIBLE_ACTIONS:
            raise ValueError(f'on_infeasible must be one of {", ".join(INFEASIBLE_ACTIONS)}, '
                             f'got {self.on_infeasible!r}')
        if not (math.isfinite(self.best_effort_ms) and self.best_effort_ms > 0):
            raise ValueError(f'best_effort_ms must be positive, got {self.best_effort_ms!r}')


@dataclass(frozen=True)
class InferenceResult:
    """
    One answer for one frame of one tenant (the fields of delen_ros/msg/InferenceResult).

    ``latency_ms = queue_ms + compute_ms`` runs from the frame's source stamp to its answer.
    ``deadline_ms`` is None without a latency bound (then ``deadline_met`` is True).
    ``infeasible``: the frame could not meet its bound and was served at the first exit.
    ``correct`` is known when the frame came with a label.
    """

    tenant: str
    stamp_s: float
    frame_id: str
    class_id: int
    label: str
    confidence: float
    expected_accuracy: float
    exit_index: int
    num_exits: int
    is_final: bool
    latency_ms: float
    queue_ms: float
    compute_ms: float
    energy_mj: float
    energy_measured: bool
    energy_source: str
    deadline_ms: Optional[float]
    deadline_met: bool
    goal: str
    goal_kind: str
    policy: str
    threads: int
    infeasible: bool = False
    correct: Optional[bool] = None


ResultCallback = Callable[[InferenceResult], None]


class _Tenant:
    """Mutable state of one tenant: its config, policy instance, statistics."""

    def __init__(self, config: TenantConfig, policy: Policy, stats: TenantStats,
                 on_result: Optional[ResultCallback]) -> None:
        self.config = config
        self.policy = policy
        self.stats = stats
        self.on_result = on_result
        self.lock = threading.Lock()


def _infer_encoding(frame: np.ndarray) -> str:
    channels = 3 if frame.ndim == 3 and frame.shape[2] == 3 else 2
    key = (2 if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1) else channels,
           frame.dtype.name)
    encoding = _ENCODINGS.get(key)
    if encoding is None:
        raise InputError(f'cannot infer the encoding of a {frame.dtype} array of shape '
                         f'{frame.shape}; pass encoding= (e.g. "mono8", "rgb8", "bgr8")')
    return encoding


class InferenceServer:
    """
    Serve one multi-exit model to several tenants under per-tenant goals.

    Example::

        with InferenceServer.from_checkpoint() as server:
            server.add_tenant('obstacle', goal=Goal.latency(15.0))
            server.submit('obstacle', image, stamp_s=time.time())
            result = server.next_result(timeout=1.0)

    ``threads`` is the intra-op thread count policies use unless they choose one; the default
    1 keeps latency steady when other processes compete for the cores (docs/runtime.md).
    ``clock`` gives the time base of source stamps (seconds; ``time.time`` like ROS stamps).
    """

    def __init__(self, model: LoadedModel, profile: ModelProfile, *,
                 meter: Optional[EnergyMeter] = None, platform: Optional[str] = None,
                 threads: int = 1, clock: Callable[[], float] = time.time,
                 transform: Optional[Callable[[np.ndarray, str], torch.Tensor]] = None,
                 on_result: Optional[ResultCallback] = None, results_size: int = 1000,
                 stats_window: int = 1000, cost_sigma: float = 2.0) -> None:
        network = model.network
        if network.num_exits != profile.num_exits:
            raise ValueError(f'the model has {network.num_exits} exits but its profile '
                             f'{profile.num_exits}: profile another model?')
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f'threads must be a positive integer, got {threads!r}')
        if results_size < 1:
            raise ValueError(f'results_size must be positive, got {results_size!r}')
        network.eval()
        self.model = model
        self.profile = profile
        self.spec = model.config.input_spec
        self.num_exits = network.num_exits
        self.threads = int(threads)
        self.meter = meter if meter is not None else detect_meter(platform=platform)
        power = self.meter if isinstance(self.meter, PowerModel) else PowerModel.from_platform(
            platform or default_platform())
        self.cost = CostModel(profile, power=power, meter=self.meter, sigma=cost_sigma)
        self.executor = ConditionalExecutor(network, profile, cost=self.cost, meter=self.meter)
        self.transform = transform or ModelInputTransform.from_spec(self.spec)
        self._clock = clock
        self._on_result = on_result
        self._stats_window = int(stats_window)
        self._tenants: Dict[str, _Tenant] = {}
        self._tenants_lock = threading.Lock()
        self._scheduler = EdfScheduler()
        self._results = collections.deque(maxlen=int(results_size))
        self._activity = threading.Condition()
        self._outstanding = 0
        self._worker: Optional[threading.Thread] = None
        self._stopping = False

    @classmethod
    def from_checkpoint(cls, *, path: Union[str, Path, None] = None,
                        profile: Union[str, Path, ModelProfile, None] = None,
                        **options) -> 'InferenceServer':
        """
        Load a checkpoint (default: the shipped model) and its profile (default: beside it).

        Other keyword arguments go to the constructor.
        """
        model = load_checkpoint(path)
        if not isinstance(profile, ModelProfile):
            profile = load_profile(profile if profile is not None
                                   else default_profile_path(model.path))
        return cls(model, profile, **options)

    # -- tenants -----------------------------------------------------------------------------

    def add_tenant(self, name: str, *, goal: Union[Goal, str],
                   policy: Union[str, Policy] = 'coordinated', queue_size: int = 2,
                   on_infeasible: str = 'drop', progressive: bool = False,
                   best_effort_ms: float = 1000.0,
                   on_result: Optional[ResultCallback] = None) -> TenantConfig:
        """Add a tenant; ``goal`` may be a Goal or text such as 'latency:15'."""
        goal = self._checked_goal(goal)
        policy_object = self._checked_policy(policy)
        config = TenantConfig(name=name, goal=goal, policy=policy_object.describe(),
                              queue_size=queue_size, on_infeasible=on_infeasible,
                              progressive=bool(progressive),
                              best_effort_ms=float(best_effort_ms))
        tenant = _Tenant(config, policy_object,
                         TenantStats(name, num_exits=self.num_exits, window=self._stats_window),
                         on_result)
        with self._tenants_lock:
            if name in self._tenants:
                raise ValueError(f'tenant {name!r} already exists')
            self._scheduler.add_tenant(name, config.queue_size)
            self._tenants[name] = tenant
        return config

    def remove_tenant(self, name: str) -> StatsSnapshot:
        """Remove a tenant (its queued frames are dropped); returns its final statistics."""
        with self._tenants_lock:
            tenant = self._tenant(name)
            del self._tenants[name]
            pending = self._scheduler.remove_tenant(name)
        for _ in pending:
            tenant.stats.dropped('shutdown')
        self._finished(len(pending))
        return self._snapshot(tenant)

    def tenants(self) -> List[TenantConfig]:
        """Return the configurations of the current tenants."""
        with self._tenants_lock:
            return [t.config for t in self._tenants.values()]

    def set_goal(self, name: str, goal: Union[Goal, str]) -> Goal:
        """Change a tenant's goal; frames submitted from now on are served under it."""
        goal = self._checked_goal(goal)
        tenant = self._tenant(name)
        with tenant.lock:
            tenant.config = replace(tenant.config, goal=goal)
        return goal

    def set_policy(self, name: str, policy: Union[str, Policy]) -> Policy:
        """Change a tenant's policy (a parameter string or an instance), from the next frame."""
        policy_object = self._checked_policy(policy)
        tenant = self._tenant(name)
        with tenant.lock:
            tenant.policy = policy_object
            tenant.config = replace(tenant.config, policy=policy_object.describe())
        return policy_object

    def set_queue_size(self, name: str, queue_size: int) -> None:
        """Change how many frames a tenant keeps queued (older ones are dropped now)."""
        tenant = self._tenant(name)
        with tenant.lock:
            tenant.config = replace(tenant.config, queue_size=queue_size)
            dropped = self._scheduler.set_capacity(name, queue_size)
        for _ in dropped:
            tenant.stats.dropped('queue')
        self._finished(len(dropped))

    def _checked_goal(self, goal: Union[Goal, str]) -> Goal:
        if isinstance(goal, str):
            goal = parse_goal(goal)
        if not isinstance(goal, Goal):
            raise GoalError(f'goal must be a Goal or text like "latency:15", got {goal!r}')
        return goal.check_reachable(self.profile.max_accuracy)

    def _checked_policy(self, policy: Union[str, Policy]) -> Policy:
        policy_object = make_policy(policy)
        policy_object.attach(self.profile)
        return policy_object

    def _tenant(self, name: str) -> _Tenant:
        tenant = self._tenants.get(name)
        if tenant is None:
            known = ', '.join(sorted(self._tenants)) or 'none'
            raise KeyError(f'unknown tenant {name!r} (tenants: {known})')
        return tenant

    # -- frames ------------------------------------------------------------------------------

    def to_input(self, frame, encoding: Optional[str] = None) -> torch.Tensor:
        """
        Turn a frame into the model input [1, C, H, W] (InputError when impossible).

        numpy uint8/uint16 images (HxW, HxWxC) go through the input transform (resize,
        channel conversion, normalization); torch float tensors [C, H, W] or [1, C, H, W]
        are taken as already normalized.
        """
        spec = self.spec
        if isinstance(frame, torch.Tensor):
            x = frame.unsqueeze(0) if frame.dim() == 3 else frame
            expected = (1, spec.channels, spec.height, spec.width)
            if tuple(x.shape) != expected or not x.is_floating_point():
                raise InputError(f'tensor frames must be float [C, H, W] or [1, C, H, W] = '
                                 f'{list(expected)}, got {frame.dtype} {list(frame.shape)}')
            x = x.detach().to(torch.float32)
        elif isinstance(frame, np.ndarray):
            try:
                x = self.transform(frame, encoding or _infer_encoding(frame))
            except (ImageFormatError, ValueError) as error:
                raise InputError(str(error)) from None
        else:
            raise InputError(f'frames must be numpy images or torch tensors, got '
                             f'{type(frame).__name__}')
        if not bool(torch.isfinite(x).all()):
            raise InputError('frame holds NaN or infinite values')
        return x.contiguous()

    def submit(self, tenant: str, frame, *, stamp_s: Optional[float] = None,
               frame_id: str = '', encoding: Optional[str] = None,
               label: Optional[int] = None) -> bool:
        """
        Queue a frame of a tenant; thread-safe, never blocks on inference.

        ``stamp_s``: source timestamp in the server clock (default: now); the deadline runs
        from it. ``label``: ground truth, for accuracy statistics. Returns False when the
        server is stopped (the frame is counted dropped). Raises InputError for a bad frame
        (counted rejected) and KeyError for an unknown tenant.
        """
        state = self._tenant(tenant)
        try:
            x = self.to_input(frame, encoding)
        except InputError:
            state.stats.rejected()
            raise
        now = self._clock()
        stamp = now if stamp_s is None else float(stamp_s)
        if not math.isfinite(stamp):
            state.stats.rejected()
            raise InputError(f'stamp_s must be finite, got {stamp_s!r}')
        config = state.config
        goal = config.goal
        deadline = None if goal.latency_ms is None else stamp + goal.latency_ms * 1e-3
        request = Request(
            tenant=tenant, stamp_s=stamp,
            due_s=deadline if deadline is not None else stamp + config.best_effort_ms * 1e-3,
            deadline_s=deadline, tensor=x, frame_id=str(frame_id),
            label=None if label is None else int(label), goal=goal, policy=state.policy)
        state.stats.received()
        with self._activity:
            self._outstanding += 1
        try:
            dropped = self._scheduler.put(request)
        except RuntimeError:
            state.stats.dropped('shutdown')
            self._finished(1)
            return False
        for old in dropped:
            state.stats.dropped('queue')
        self._finished(len(dropped))
        return True

    def record_rejected(self, tenant: str) -> None:
        """Count a frame the caller refused before submitting it (e.g. unsupported encoding)."""
        self._tenant(tenant).stats.rejected()

    def record_label(self, tenant: str, stamp_s: float, label: int) -> Optional[bool]:
        """Ground truth for a frame by its stamp (before or after its answer)."""
        return self._tenant(tenant).stats.label(float(stamp_s), int(label))

    # -- results and statistics --------------------------------------------------------------

    def next_result(self, timeout: Optional[float] = None) -> Optional[InferenceResult]:
        """Oldest undelivered result, waiting up to ``timeout`` s (None: forever)."""
        with self._activity:
            if not self._activity.wait_for(lambda: self._results, timeout):
                return None
            return self._results.popleft()

    def results(self, timeout: float = 0.0) -> List[InferenceResult]:
        """Every undelivered result, waiting up to ``timeout`` s for the first one."""
        with self._activity:
            self._activity.wait_for(lambda: self._results, timeout)
            items = list(self._results)
            self._results.clear()
            return items

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until every submitted frame is answered or dropped; False on timeout."""
        with self._activity:
            return self._activity.wait_for(lambda: self._outstanding == 0, timeout)

    def pending(self, tenant: Optional[str] = None) -> int:
        """Frames waiting in the queues (of one tenant, or of all)."""
        return self._scheduler.pending(tenant)

    def stats(self, tenant: Optional[str] = None):
        """Return the StatsSnapshot of one tenant, or a dict of every tenant's."""
        if tenant is not None:
            return self._snapshot(self._tenant(tenant))
        with self._tenants_lock:
            tenants = list(self._tenants.values())
        return {t.config.name: self._snapshot(t) for t in tenants}

    def _snapshot(self, tenant: _Tenant) -> StatsSnapshot:
        config = tenant.config
        return tenant.stats.snapshot(goal=str(config.goal), policy=config.policy)

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Return True between start and stop."""
        return self._worker is not None

    def start(self) -> 'InferenceServer':
        """Start the inference worker (frames already queued are served first, EDF)."""
        if self._worker is not None:
            raise RuntimeError('server already started')
        self._scheduler.reopen()
        self._worker = threading.Thread(target=self._work, name='delen-inference', daemon=True)
        self._worker.start()
        return self

    def stop(self, *, timeout: Optional[float] = None) -> None:
        """Stop serving: queued frames are dropped, the frame in flight finishes, worker joined."""
        pending = self._scheduler.close()
        for request in pending:
            tenant = self._tenants.get(request.tenant)
            if tenant is not None:
                tenant.stats.dropped('shutdown')
        self._finished(len(pending))
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                raise RuntimeError(f'inference worker did not stop within {timeout} s')

    def __enter__(self) -> 'InferenceServer':
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _finished(self, count: int) -> None:
        if count:
            with self._activity:
                self._outstanding -= count
                self._activity.notify_all()

    def _work(self) -> None:
        scheduler = self._scheduler
        while True:
            request = scheduler.get()
            if request is None:
                return
            try:
                self.serve(request)
            except Exception:  # one bad frame or callback must not stop the server
                _LOG.exception('serving a frame of tenant %r failed', request.tenant)
            finally:
                self._finished(1)

    # -- serving one request -------------------------------------------------------------------

    def serve(self, request: Request) -> Optional[Execution]:
        """Serve one dequeued request on the calling thread (the worker's loop body)."""
        tenant = self._tenants.get(request.tenant)
        if tenant is None:
            return None
        goal, policy = request.goal, request.policy
        queue_ms = max(0.0, (self._clock() - request.stamp_s) * 1e3)
        remaining = _INF if goal.latency_ms is None else goal.latency_ms - queue_ms
        energy_budget = _INF if goal.energy_mj is None else goal.energy_mj
        context = RequestContext(
            tenant=request.tenant, goal=goal, num_exits=self.num_exits, queue_ms=queue_ms,
            remaining_ms=remaining, energy_budget_mj=energy_budget,
            default_threads=self.threads, thread_counts=self.cost.thread_counts,
            cost=self.cost, profile=self.profile)
        with tenant.lock:
            plan = policy.plan(context)
        # Expected, not worst-case, cost: the first exit is the least service a frame can get.
        first = self.cost.expected(0, plan.threads)
        infeasible = first.latency_ms > remaining or first.energy_mj > energy_budget
        if infeasible:
            if tenant.config.on_infeasible == 'drop':
                tenant.stats.dropped('infeasible')
                return None
            tenant.stats.infeasible_served()
            plan = Plan(threads=plan.threads, target_exit=0)
        describe = policy.describe()

        def intermediate(status: ExitStatus) -> None:
            self._deliver(tenant, self._result(request, status, queue_ms, describe,
                                               is_final=False, infeasible=infeasible))

        execution = self.executor.execute(
            request.tensor, plan=plan, goal=goal, should_stop=policy.should_stop,
            queue_ms=queue_ms, progressive=tenant.config.progressive, on_exit=intermediate)
        final = execution.final
        result = self._result(request, final, queue_ms, describe, is_final=True,
                              infeasible=infeasible)
        correct = tenant.stats.served(
            stamp_s=request.stamp_s, latency_ms=result.latency_ms, exit_index=final.exit_index,
            energy_mj=final.energy_mj,
            deadline_met=None if goal.latency_ms is None else result.deadline_met,
            class_id=final.class_id, label=request.label,
            energy_measured=self.meter.measured, energy_source=self.meter.source)
        if correct is not None:
            result = replace(result, correct=correct)
        self._deliver(tenant, result)
        if not policy.learns:
            return execution
        outcome = Outcome(
            tenant=request.tenant, goal=goal, plan=plan, threads=execution.threads,
            exit_index=final.exit_index,
            exits_evaluated=tuple(s.exit_index for s in execution.exits),
            stage_latencies_ms=execution.stage_latencies_ms, queue_ms=queue_ms,
            compute_ms=execution.compute_ms, latency_ms=result.latency_ms,
            energy_mj=execution.energy_mj, deadline_met=result.deadline_met,
            confidence=final.confidence, expected_accuracy=final.expected_accuracy,
            slowdown=execution.slowdown, infeasible=infeasible)
        with tenant.lock:
            policy.observe(outcome)
        return execution

    def _result(self, request: Request, status: ExitStatus, queue_ms: float, policy: str, *,
                is_final: bool, infeasible: bool) -> InferenceResult:
        goal = request.goal
        latency = queue_ms + status.compute_ms
        return InferenceResult(
            tenant=request.tenant, stamp_s=request.stamp_s, frame_id=request.frame_id,
            class_id=status.class_id, label=self.model.config.label(status.class_id),
            confidence=status.confidence, expected_accuracy=status.expected_accuracy,
            exit_index=status.exit_index, num_exits=status.num_exits, is_final=is_final,
            latency_ms=latency, queue_ms=queue_ms, compute_ms=status.compute_ms,
            energy_mj=status.energy_mj, energy_measured=self.meter.measured,
            energy_source=self.meter.source, deadline_ms=goal.latency_ms,
            deadline_met=goal.latency_ms is None or latency <= goal.latency_ms,
            goal=str(goal), goal_kind=goal.kind.value, policy=policy, threads=status.threads,
            infeasible=infeasible)

    def _deliver(self, tenant: _Tenant, result: InferenceResult) -> None:
        for callback in (tenant.on_result, self._on_result):
            if callback is not None:
                try:
                    callback(result)
                except Exception:  # a client's bug must not stop serving the others
                    _LOG.exception('on_result callback of tenant %r failed', result.tenant)
        with self._activity:
            self._results.append(result)
            self._activity.notify_all()
