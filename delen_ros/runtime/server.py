"""
Multi-tenant Dělen serving of a family of multi-exit (and traditional) models, without ROS.

Tenants share the models (runtime/models.py); a policy picks model x exit x threads per frame,
or a tenant pins one model. Frames are submitted from any thread (or taken by the
worker itself from a FrameSource, with no hand-over), queued per tenant (newest N kept), and
served by an inference worker (or several) that runs the network stage by stage: earliest
deadline first at every stage boundary (a deeper request is put aside for an urgent one and
resumed from its features), with a floor per tenant under overload, and frames of different
tenants waiting at once run as one batch when every deadline in it is still met. Answers go
out through callbacks and a results queue. ROS nodes are a thin layer over this class.
"""

import collections
import contextlib
from dataclasses import dataclass, field, replace
import functools
import heapq
import itertools
import logging
import math
from pathlib import Path
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple, Union

import numpy as np
import torch

from .busy_time import BusyTime
from .collector import freeze_loaded_objects, IdleCollector
from .conditions import ExitStatus
from .cost import CostModel
from .energy import default_platform, detect_meter, EnergyMeter, PowerModel
from .executor import Execution, Job, Row
from .goals import Goal, GoalError, parse_goal
from .models import load_served_model, ModelInfo, ServedModel
from .models import model_name as _model_name
from .policies import (available_cores, make_policy, Outcome, Plan, Policy, PolicyError,
                       RequestContext)
from .priority import apply_priority, parse_priority
from .run_queue import FreeCores
from .scheduler import EdfScheduler, Request, ShareLedger
from .stats import StatsSnapshot, TenantStats
from ..engine import load_checkpoint, LoadedModel
from ..engine.profiling import default_profile_path, load_profile, ModelProfile
from ..imaging import ImageFormatError

__all__ = ['FrameSource', 'InferenceResult', 'InferenceServer', 'InputError', 'TenantConfig']

_LOG = logging.getLogger(__name__)
_INF = math.inf
_BEHIND_WINDOW_S = 1.0  # fell behind this recently: plans keep up with arrivals
_IDLE_WAIT_S = 0.1  # longest wait for frames before the loop looks at its state again
_HELPER_LOOKAHEAD = 32  # jobs and frames, earliest due first, a second worker's test weighs
INFEASIBLE_ACTIONS = ('drop', 'serve_first_exit')
_ENCODINGS = {(2, 'uint8'): 'mono8', (3, 'uint8'): 'rgb8', (2, 'uint16'): 'mono16',
              (3, 'uint16'): 'rgb16'}


class InputError(ValueError):
    """A frame that cannot be turned into the model's input; counted as rejected."""


class FrameSource(Protocol):
    """
    Where the worker takes frames itself (e.g. the node's image subscriptions), no hand-over.

    ``poll()`` takes every frame ready now and submits it (on the worker's thread; returns
    how many); ``wait(timeout)`` blocks until a frame may be ready, ``wake()`` is called or
    the timeout passes; ``wake()`` is thread-safe.
    """

    def poll(self) -> int:
        """Take and submit the frames ready now."""

    def wait(self, timeout: float) -> None:
        """Block until a frame may be ready, a wake-up or the timeout."""

    def wake(self) -> None:
        """Make a pending ``wait`` return."""


class _Average:
    """
    Exponentially weighted mean of recent samples (ms), clipped to a sane range.

    ``initial`` None: 0 until the first sample, which is taken as it is (a part of the path
    that may not exist, such as a transport hop for frames given through the API).
    """

    __slots__ = ('value', '_weight', '_high', '_seeded')

    def __init__(self, initial: Optional[float], *, weight: float = 0.05,
                 high: float = 20.0) -> None:
        self.value = 0.0 if initial is None else initial
        self._weight = weight
        self._high = high
        self._seeded = initial is not None

    def update(self, sample: float) -> None:
        sample = min(max(sample, 0.0), self._high)
        if not self._seeded:
            self.value, self._seeded = sample, True
            return
        self.value += self._weight * (sample - self.value)


@dataclass(frozen=True)
class TenantConfig:
    """
    How one tenant is served (behaviour lives in InferenceServer).

    ``queue_size``: newest frames kept waiting; ``on_infeasible``: 'drop' a frame that cannot
    meet its bound even at the first exit (expected cost, after queueing), or
    'serve_first_exit' anyway; ``progressive``:
    deliver every intermediate exit's answer (is_final=False) before the final one;
    ``best_effort_ms``: nominal deadline used only to order frames whose goal has no latency
    bound against the others; ``share``: the tenant's weight in the floor of answers each
    tenant gets under overload (equal by default); ``model``: the one model the tenant is
    served with ('' lets the policy choose among the models interchangeable with the first).
    """

    name: str
    goal: Goal
    policy: str
    queue_size: int = 2
    on_infeasible: str = 'drop'
    progressive: bool = False
    best_effort_ms: float = 1000.0
    share: float = 1.0
    model: str = ''

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
        if not (math.isfinite(self.share) and self.share > 0):
            raise ValueError(f'share must be positive, got {self.share!r}')


@dataclass(frozen=True)
class InferenceResult:
    """
    One answer for one frame of one tenant (the fields of delen_ros/msg/InferenceResult).

    ``latency_ms = queue_ms + compute_ms + delivery_ms`` runs from the frame's source stamp to
    the answer's receipt; ``delivery_ms`` is the part after the last stage: the wait for the
    answers of its batch before it (measured), then building and publishing the answer, one
    transport hop and the subscriber's wake-up (estimated, learned online; no hop or wake-up for
    frames never measured through a middleware). ``token``: what the caller passed with the
    frame to ``submit`` (e.g. its header).
    ``deadline_ms`` is None without a latency bound (then ``deadline_met`` is True).
    ``infeasible``: the frame could not meet its bound and was served at the first exit.
    ``correct`` is known when the frame came with a label. ``model``: the model that answered.
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
    delivery_ms: float = 0.0
    model: str = ''
    token: Any = field(default=None, compare=False, repr=False)


ResultCallback = Callable[[InferenceResult], None]


class _Tenant:
    """Mutable state of one tenant: its config, policy, candidate models, statistics."""

    def __init__(self, config: TenantConfig, policy: Policy, stats: TenantStats,
                 on_result: Optional[ResultCallback],
                 models: Tuple[ServedModel, ...]) -> None:
        self.config = config
        self.policy = policy
        self.stats = stats
        self.on_result = on_result
        self.models = models
        self.lock = threading.Lock()
        self.last_arrival_s: Optional[float] = None
        self.interval_s = math.inf  # between frames submitted, exponentially weighted

    def arrived(self, now: float) -> None:
        """Note a frame's arrival (server clock) for the stream's rate."""
        if self.last_arrival_s is not None:
            gap = max(now - self.last_arrival_s, 0.0)
            self.interval_s = gap if math.isinf(self.interval_s) else \
                self.interval_s + 0.2 * (gap - self.interval_s)
        self.last_arrival_s = now

    def rate_hz(self, now: float) -> float:
        """Frames per second lately; 0 once the stream has paused for four intervals (1 s)."""
        if self.last_arrival_s is None or now - self.last_arrival_s > max(
                1.0, 4.0 * self.interval_s):
            return 0.0
        return 1.0 / self.interval_s if self.interval_s > 0 else math.inf


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
    ``max_batch``: most frames (of different tenants, already waiting) run as one batch; 1
    turns batching off. ``cpu_priority``: 'none', 'nice:<n>', 'realtime:<priority>' or
    'slice:<µs>' for the worker threads (runtime/priority.py). ``on_event(kind, text)``: told
    about errors in the serving loop ('error') and how the priority was applied ('priority').
    ``workers``: serving threads. The first takes frames from the source and runs the idle
    task; each runs one job at a time, and they share the queues, EDF and the cost model under
    one lock that is let go while a stage computes (torch lets go of the GIL inside its
    operators). A second worker serves a waiting frame while the first computes: more of the
    CPU under contention, where one thread gets a fair share only (docs/serving_path.md).
    ``model`` is the first model of the family; ``add_model`` adds others (ALERT's choice of
    model x exit x threads); ``model_name`` names the first (default: its file's stem).
    ``warm_up``: ``start`` first runs every model not yet warmed at each batch size and thread
    count serving may use (``warm_up()``), so no frame pays for building the kernels.
    """

    def __init__(self, model: LoadedModel, profile: ModelProfile, *,
                 meter: Optional[EnergyMeter] = None, platform: Optional[str] = None,
                 threads: int = 1, clock: Callable[[], float] = time.time,
                 transform: Optional[Callable[[np.ndarray, str], torch.Tensor]] = None,
                 on_result: Optional[ResultCallback] = None, results_size: int = 1000,
                 stats_window: int = 1000, cost_sigma: float = 2.0, max_batch: int = 8,
                 cpu_priority: str = 'none', workers: int = 1,
                 on_event: Optional[Callable[[str, str], None]] = None,
                 model_name: Optional[str] = None, load_s: float = 0.0,
                 warm_up: bool = True) -> None:
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f'threads must be a positive integer, got {threads!r}')
        if results_size < 1:
            raise ValueError(f'results_size must be positive, got {results_size!r}')
        if isinstance(max_batch, bool) or int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f'max_batch must be a positive integer, got {max_batch!r}')
        if isinstance(workers, bool) or int(workers) != workers or not 1 <= workers <= 16:
            raise ValueError(f'workers must be an integer in 1..16, got {workers!r}')
        parse_priority(cpu_priority)
        self.threads = int(threads)
        self.meter = meter if meter is not None else detect_meter(platform=platform)
        self._power = self.meter if isinstance(self.meter, PowerModel) else \
            PowerModel.from_platform(platform or default_platform())
        self._cost_sigma = cost_sigma
        first = ServedModel(model_name or _model_name(model.path), model, profile,
                            power=self._power, meter=self.meter, cost_sigma=cost_sigma,
                            transform=transform, load_s=load_s)
        self._models: Dict[str, ServedModel] = {first.name: first}
        self._first = first
        # The first model's parts, as before several models (the network as served: folded).
        self.model = first.model
        self.profile = profile
        self.spec = first.spec
        self.num_exits = first.num_exits
        self.cost: CostModel = first.cost
        self.executor = first.executor
        self.transform = first.transform
        self._clock = clock
        self._on_result = on_result
        self._stats_window = int(stats_window)
        self._tenants: Dict[str, _Tenant] = {}
        self._tenants_lock = threading.Lock()
        self._scheduler = EdfScheduler()
        self._results = collections.deque(maxlen=int(results_size))
        self._activity = threading.Condition()
        self._outstanding = 0
        self._worker: Optional[threading.Thread] = None  # the first worker: it takes frames
        self._worker_id: Optional[int] = None
        self._helpers: List[threading.Thread] = []
        # Held by a worker except while it waits or a stage computes (one stage at a time per
        # worker; the queues, suspended jobs, EDF and the cost model change under it).
        self._serving = threading.RLock()
        self._work_posted = threading.Condition(self._serving)
        self._running: List[Job] = []  # the jobs the workers run now
        self._idle_helpers = 0  # workers besides the first waiting for work
        self._source: Optional[FrameSource] = None
        self._suspended: List[Job] = []
        self._shares = ShareLedger()
        self._publish_ms = _Average(0.3)
        # One answer on the worker: built, counted, delivered, learned from. The frames of a
        # batch that finish together are answered one after another: each waits for those
        # before it.
        self._answer_ms = _Average(0.3)
        # Measured on frames that came through a middleware; none for frames given in-process.
        self._hop_ms = _Average(None)
        self._wake_ms = _Average(None)  # a waiting thread's wake-up, received to taken
        # The worker's time per answered frame outside the network (take, decode, plan, answer).
        self._frame_overhead_ms = _Average(1.0)
        self._overhead_acc_ms = 0.0
        self._last_overflow_s = -math.inf  # when any tenant's queue last pushed a frame out
        self._last_late_s = -math.inf  # when a frame's turn last came too late for its bound
        self._on_event = on_event
        self._fatal: Optional[str] = None
        self.max_batch = int(max_batch)
        self.workers = int(workers)
        self.free_cores = FreeCores(available_cores())
        self.helper_jobs = 0  # jobs run by workers other than the first
        self.cpu_priority = cpu_priority
        self.priority_report: Optional[str] = None
        self.collector = IdleCollector()
        self.busy_time = BusyTime()  # the first worker's turns: on a CPU, runnable, asleep
        self._helpers_busy_time: List[BusyTime] = []  # one per worker besides the first
        self.frames_failed = 0
        self.preemptions = 0
        self.batches = 0
        self.batched_frames = 0
        self.last_error = ''
        self._loop_errors = 0
        self._idle_task: Optional[Callable[[], Optional[float]]] = None
        self.idle_task_errors = 0
        self._warm_up_at_start = bool(warm_up)
        self._warmed: Set[str] = set()  # the models warm_up has run
        self.warm_up_ms = 0.0  # the time warm_up took, all calls together

    @classmethod
    def from_checkpoint(cls, *, path: Union[str, Path, None] = None,
                        profile: Union[str, Path, ModelProfile, None] = None,
                        models: Sequence[Union[str, Path]] = (),
                        **options) -> 'InferenceServer':
        """
        Load a checkpoint (default: the shipped model) and its profile (default: beside it).

        ``models``: more checkpoints for the family, each with the profile beside it.
        Other keyword arguments go to the constructor. CheckpointError or ProfileError name
        the file that does not load or match.
        """
        started = time.perf_counter()
        model = load_checkpoint(path)
        if not isinstance(profile, ModelProfile):
            profile = load_profile(profile if profile is not None
                                   else default_profile_path(model.path))
        server = cls(model, profile, load_s=time.perf_counter() - started, **options)
        for extra in models:
            server.add_model(extra)
        return server

    # -- models ------------------------------------------------------------------------------

    def add_model(self, model: Union[str, Path, ServedModel], *,
                  profile: Union[str, Path, None] = None,
                  name: Optional[str] = None) -> ModelInfo:
        """
        Add a model to the family: a checkpoint path (its profile beside it) or a ServedModel.

        Tenants that pin no model may be served with it from their next frame when it takes
        the same input and classes as the first model; others serve only tenants that pin it.
        """
        if not isinstance(model, ServedModel):
            model = load_served_model(model, profile, name=name, power=self._power,
                                      meter=self.meter, cost_sigma=self._cost_sigma)
        if model.name in self._models:
            raise ValueError(f'a model named {model.name!r} is already held')
        with self._tenants_lock:
            self._models = {**self._models, model.name: model}
            for tenant in self._tenants.values():
                tenant.models = self._models_for(tenant.config.model)
        return model.info

    def models(self) -> List[ModelInfo]:
        """Return what is held of every model, the first one first."""
        return [served.info for served in self._models.values()]

    def served_model(self, name: str = '') -> ServedModel:
        """Return a held model by name ('' : the first one); KeyError names the known ones."""
        if not name:
            return self._first
        found = self._models.get(name)
        if found is None:
            raise KeyError(f'unknown model {name!r} (models: {", ".join(self._models)})')
        return found

    def _models_for(self, pinned: str) -> Tuple[ServedModel, ...]:
        if pinned:
            return (self.served_model(pinned),)
        first = self._first
        return tuple(m for m in self._models.values()
                     if m is first or m.interchangeable_with(first))

    def set_model(self, name: str, model: str,
                  policy: Union[str, Policy, None] = None) -> None:
        """
        Pin a tenant to one model ('' lets its policy choose again), from the next frame.

        ``policy``: its new policy, checked against the new model and set with it (default:
        the current one, which must suit the new model).
        """
        models = self._models_for(model)
        tenant = self._tenant(name)
        policy_object = self._checked_policy(
            tenant.policy if policy is None else policy, models[0])
        with tenant.lock:
            tenant.config = replace(tenant.config, model=model,
                                    policy=policy_object.describe())
            tenant.models = models
            tenant.policy = policy_object

    # -- tenants -----------------------------------------------------------------------------

    def add_tenant(self, name: str, *, goal: Union[Goal, str],
                   policy: Union[str, Policy] = 'coordinated', queue_size: int = 2,
                   on_infeasible: str = 'drop', progressive: bool = False,
                   best_effort_ms: float = 1000.0, share: float = 1.0,
                   on_result: Optional[ResultCallback] = None, model: str = '') -> TenantConfig:
        """
        Add a tenant; ``goal`` may be a Goal or text such as 'latency:15'.

        ``model``: pin the tenant to one held model ('' lets its policy choose).
        """
        models = self._models_for(model)
        goal = self._checked_goal(goal)
        policy_object = self._checked_policy(policy, models[0])
        config = TenantConfig(name=name, goal=goal, policy=policy_object.describe(),
                              queue_size=queue_size, on_infeasible=on_infeasible,
                              progressive=bool(progressive),
                              best_effort_ms=float(best_effort_ms), share=float(share),
                              model=model)
        exits = max(m.num_exits for m in self._models.values())
        tenant = _Tenant(config, policy_object,
                         TenantStats(name, num_exits=exits, window=self._stats_window),
                         on_result, models)
        with self._tenants_lock:
            if name in self._tenants:
                raise ValueError(f'tenant {name!r} already exists')
            self._scheduler.add_tenant(name, config.queue_size)
            self._shares.set_weight(name, config.share)
            self._tenants[name] = tenant
        return config

    def remove_tenant(self, name: str) -> StatsSnapshot:
        """Remove a tenant (its queued frames are dropped); returns its final statistics."""
        with self._tenants_lock:
            tenant = self._tenant(name)
            del self._tenants[name]
            pending = self._scheduler.remove_tenant(name)
            self._shares.remove(name)
        for _ in pending:
            tenant.stats.dropped('shutdown')
        self._finished(len(pending))
        return self._snapshot(tenant)

    def tenants(self) -> List[TenantConfig]:
        """Return the configurations of the current tenants."""
        with self._tenants_lock:
            return [t.config for t in self._tenants.values()]

    def goal(self, name: str) -> Goal:
        """Return the goal in force for a tenant (KeyError for an unknown one)."""
        return self._tenant(name).config.goal

    def set_goal(self, name: str, goal: Union[Goal, str]) -> Goal:
        """Change a tenant's goal; frames submitted from now on are served under it."""
        goal = self._checked_goal(goal)
        tenant = self._tenant(name)
        with tenant.lock:
            tenant.config = replace(tenant.config, goal=goal)
        return goal

    def set_policy(self, name: str, policy: Union[str, Policy]) -> Policy:
        """Change a tenant's policy (a parameter string or an instance), from the next frame."""
        tenant = self._tenant(name)
        policy_object = self._checked_policy(policy, tenant.models[0])
        with tenant.lock:
            tenant.policy = policy_object
            tenant.config = replace(tenant.config, policy=policy_object.describe())
        return policy_object

    def set_share(self, name: str, share: float) -> None:
        """Change a tenant's weight in the floor of answers under overload."""
        tenant = self._tenant(name)
        with tenant.lock:
            tenant.config = replace(tenant.config, share=float(share))
            self._shares.set_weight(name, float(share))

    def set_idle_task(self, task: Optional[Callable[[], Optional[float]]]) -> None:
        """
        Run ``task`` on the worker whenever no frame waits (None: no task).

        It returns the seconds until it wants to run again (None: no wish, 0: at once, after
        a look for new frames). A frame arriving meanwhile waits for it to return, so each
        call should be short: one step of its work. Work done here never takes the GIL from
        a frame, as another thread's would (the node's status reports run here).
        """
        self._idle_task = task

    def attach_source(self, source: Optional[FrameSource]) -> None:
        """Let the worker take frames from ``source`` itself (before start)."""
        if self._worker is not None:
            raise RuntimeError('attach a frame source before start')
        self._source = source

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
        return goal.check_reachable(max(m.profile.max_accuracy for m in self._models.values()))

    def _checked_policy(self, policy: Union[str, Policy],
                        model: Optional[ServedModel] = None) -> Policy:
        policy_object = make_policy(policy)
        policy_object.attach((model or self._first).profile)
        return policy_object

    def _tenant(self, name: str) -> _Tenant:
        tenant = self._tenants.get(name)
        if tenant is None:
            known = ', '.join(sorted(self._tenants)) or 'none'
            raise KeyError(f'unknown tenant {name!r} (tenants: {known})')
        return tenant

    # -- frames ------------------------------------------------------------------------------

    def to_input(self, frame, encoding: Optional[str] = None,
                 model: Optional[ServedModel] = None) -> torch.Tensor:
        """
        Turn a frame into the input [1, C, H, W] of a model (default: the first; InputError).

        numpy uint8/uint16 images (HxW, HxWxC) go through the input transform (resize,
        channel conversion, normalization); torch float tensors [C, H, W] or [1, C, H, W]
        are taken as already normalized.
        """
        model = model or self._first
        spec = model.spec
        if isinstance(frame, torch.Tensor):
            x = frame.unsqueeze(0) if frame.dim() == 3 else frame
            expected = (1, spec.channels, spec.height, spec.width)
            if tuple(x.shape) != expected or not x.is_floating_point():
                raise InputError(f'tensor frames must be float [C, H, W] or [1, C, H, W] = '
                                 f'{list(expected)}, got {frame.dtype} {list(frame.shape)}')
            x = x.detach().to(torch.float32)
            if not bool(torch.isfinite(x).all()):
                raise InputError('frame holds NaN or infinite values')
        elif isinstance(frame, np.ndarray):
            # Finite by construction (the transform refuses a mean/std that overflows), so
            # no per-frame check: after an idle gap, every torch call costs ~0.1-0.3 ms here.
            try:
                x = model.transform(frame, encoding or _infer_encoding(frame))
            except (ImageFormatError, ValueError) as error:
                raise InputError(str(error)) from None
        else:
            raise InputError(f'frames must be numpy images or torch tensors, got '
                             f'{type(frame).__name__}')
        return x.contiguous()

    def submit(self, tenant: str, frame, *, stamp_s: Optional[float] = None,
               frame_id: str = '', encoding: Optional[str] = None,
               label: Optional[int] = None, token: Any = None,
               transport_ms: Optional[float] = None, wake_ms: Optional[float] = None,
               goal: Union[Goal, str, None] = None) -> bool:
        """
        Queue a frame of a tenant; thread-safe, never blocks on inference.

        ``stamp_s``: source timestamp in the server clock (default: now); the deadline runs
        from it. ``label``: ground truth, for accuracy statistics. ``goal``: this frame's own
        goal instead of the tenant's (a request with its own bound). Returns False when the
        server is stopped (the frame is counted dropped). Raises InputError for a bad frame
        (counted rejected) and KeyError for an unknown tenant. ``token``: anything, handed
        back in the answer's ``token`` (two frames with one stamp keep their own).
        ``transport_ms``: the frame's measured trip from its publisher to this process; the
        answer's own trip back is estimated from it. ``wake_ms``: how long a waiting worker took
        to take the frame once it reached this process; the subscriber's wake-up for the
        answer is estimated from it (same machine, same load).
        """
        state = self._tenant(tenant)
        request_goal = None if goal is None else self._checked_goal(goal)
        try:
            x = self.to_input(frame, encoding, state.models[0])
        except InputError:
            state.stats.rejected()
            raise
        now = self._clock()
        state.arrived(now)
        stamp = now if stamp_s is None else float(stamp_s)
        if not math.isfinite(stamp):
            state.stats.rejected()
            raise InputError(f'stamp_s must be finite, got {stamp_s!r}')
        if transport_ms is not None:
            self._hop_ms.update(transport_ms)
        if wake_ms is not None:
            self._wake_ms.update(wake_ms)
        config = state.config
        goal = request_goal or config.goal
        deadline = None if goal.latency_ms is None else stamp + goal.latency_ms * 1e-3
        request = Request(
            tenant=tenant, stamp_s=stamp,
            due_s=deadline if deadline is not None else stamp + config.best_effort_ms * 1e-3,
            deadline_s=deadline, tensor=x, frame_id=str(frame_id),
            label=None if label is None else int(label), goal=goal, policy=state.policy,
            token=token)
        state.stats.received()
        with self._activity:
            self._outstanding += 1
        # While queues overflow, a waiting frame whose time left is shorter than its stream's
        # frame period gives way to the newer frame: it would be answered late, or make the
        # frames behind it late.
        expire = None
        if self._overflowing(now) and math.isfinite(state.interval_s):
            expire = now + state.interval_s
        try:
            dropped = self._scheduler.put(request, expire_before=expire)
        except RuntimeError:
            state.stats.dropped('shutdown')
            self._finished(1)
            return False
        if dropped:
            self._last_overflow_s = now
        for old in dropped:
            state.stats.dropped('queue')
        self._finished(len(dropped))
        source = self._source
        if source is not None and threading.get_ident() != self._worker_id:
            source.wake()  # the first worker waits for frames; another submitted this one
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

    @property
    def serving(self) -> bool:
        """Return True while the inference workers run (False once one died or stopped)."""
        worker = self._worker
        return worker is not None and worker.is_alive() and self._fatal is None and all(
            helper.is_alive() for helper in self._helpers)

    @property
    def fatal_error(self) -> Optional[str]:
        """Why the worker stopped serving, if it did so unasked (else None)."""
        return self._fatal

    def warm_up(self) -> Optional[str]:
        """
        Run each model not yet warmed at every batch size and thread count serving may use.

        The batch sizes go up to ``max_batch``. Returns one line saying what it did (None:
        nothing to do). RuntimeError while serving: it sets torch's thread count, which the
        workers use.
        """
        if self._worker is not None:
            raise RuntimeError('warm_up runs before start, not while serving')
        cold = [served for served in self._models.values() if served.name not in self._warmed]
        if not cold:
            return None
        cores = available_cores()
        started = time.perf_counter()
        calls, counts = 0, set()
        for served in cold:
            threads = {t for t in served.cost.thread_counts if t <= cores}
            threads.add(min(self.threads, cores))
            calls += served.warm_up(batch_sizes=range(1, self.max_batch + 1),
                                    thread_counts=threads)
            counts |= threads
            self._warmed.add(served.name)
        took_ms = (time.perf_counter() - started) * 1e3
        self.warm_up_ms += took_ms
        return (f'warmed up {", ".join(served.name for served in cold)}: {calls} stage and head '
                f'calls at batch 1-{self.max_batch} and {sorted(counts)} threads in '
                f'{took_ms:.0f} ms')

    def start(self) -> 'InferenceServer':
        """Start the inference workers (frames already queued are served first, EDF)."""
        if self._worker is not None:
            raise RuntimeError('server already started')
        if self._warm_up_at_start:
            report = self.warm_up()
            if report and self._on_event is not None:
                self._on_event('warm_up', report)
        self._scheduler.reopen()
        self._fatal = None
        frozen = freeze_loaded_objects()
        if frozen and self._on_event is not None:
            self._on_event('collector', f'froze {frozen} objects loaded before serving: full '
                                        'garbage collections skip them')
        self._worker = threading.Thread(target=self._work, name='delen-inference', daemon=True)
        self._helpers = [threading.Thread(target=self._help, name=f'delen-inference-{number}',
                                          daemon=True) for number in range(2, self.workers + 1)]
        for thread in [self._worker] + self._helpers:
            thread.start()
        return self

    def stop(self, *, timeout: Optional[float] = None) -> None:
        """Stop serving: queued frames are dropped, the jobs in flight finish, workers joined."""
        pending = self._scheduler.close()
        for request in pending:
            tenant = self._tenants.get(request.tenant)
            if tenant is not None:
                tenant.stats.dropped('shutdown')
        self._finished(len(pending))
        if self._source is not None:
            self._source.wake()
        with self._work_posted:
            self._work_posted.notify_all()
        worker, self._worker = self._worker, None
        workers = [thread for thread in [worker] + self._helpers if thread is not None]
        self._helpers = []
        if threading.current_thread() in workers:
            return  # stopped from a worker (an answer's callback): the workers end on their own
        end = None if timeout is None else time.monotonic() + timeout
        for thread in workers:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
            if thread.is_alive():
                raise RuntimeError(f'inference worker {thread.name} did not stop within '
                                   f'{timeout} s')

    def __enter__(self) -> 'InferenceServer':
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _finished(self, count: int) -> None:
        if count:
            with self._activity:
                self._outstanding -= count
                self._activity.notify_all()

    # -- the serving loop ------------------------------------------------------------------------

    def _work(self) -> None:
        self._worker_id = threading.get_ident()
        self.priority_report = apply_priority(self.cpu_priority)
        if self.priority_report and self._on_event is not None:
            self._on_event('priority', self.priority_report)
        IdleCollector.hold()
        self.busy_time.bind()
        try:
            self._loop(self._serve_once)
        finally:
            IdleCollector.release()
            self.busy_time.unbind()

    def _help(self) -> None:
        """Serve as a worker besides the first: run jobs; only the first takes frames."""
        apply_priority(self.cpu_priority)
        busy_time = BusyTime()
        busy_time.bind()
        self._helpers_busy_time.append(busy_time)
        try:
            self._loop(lambda: self._help_once(busy_time))
        finally:
            busy_time.unbind()

    def _loop(self, turn: Callable[[], None]) -> None:
        try:
            with self._serving:
                while not self._scheduler.closed:
                    try:
                        turn()
                    except Exception as error:  # noqa: B902 - the loop must outlive one bad turn
                        self._loop_errors += 1
                        self._report('serving loop failed', error)
        except BaseException as error:  # noqa: B902 - record why serving stopped
            self._fatal = f'{type(error).__name__}: {error}'
            self._report('serving stopped', error)
            raise
        finally:
            with self._serving:
                self._drop_suspended()

    @contextlib.contextmanager
    def _unlocked(self):
        """Let the other workers take the lock while this one waits or computes a stage."""
        self._serving.release()
        try:
            yield
        finally:
            self._serving.acquire()

    def _computing(self):
        """Wake an idle worker for waiting work that needs one, then compute a stage unlocked."""
        if self._idle_helpers and (self._suspended or self._scheduler.pending()) \
                and self._needs_helper():
            self._work_posted.notify()
        return self._unlocked()

    def _needs_helper(self) -> bool:
        """
        Return True when one worker cannot finish the work running and waiting by its deadlines.

        Run beside another job, a job's stages and the other's share the cores and the GIL,
        and both take longer: a second worker takes work only while one would fall behind, or
        while no job runs (a job it put aside for an urgent frame is not left waiting).
        The test is EDF's on one worker, at each job's worst-case time, over the earliest
        ``_HELPER_LOOKAHEAD`` (a later frame that turns late makes the workers fall behind,
        which the test heeds).
        """
        now = self._clock()
        if not self._running or self._falling_behind(now):
            return True  # nothing runs (the first worker waits for frames), or it falls behind
        jobs = sorted(self._running + self._suspended, key=lambda job: job.due_s)
        done_s = now + self.delivery_ms * 1e-3
        queued = heapq.merge(jobs, self._scheduler.waiting(_HELPER_LOOKAHEAD),
                             key=lambda work: work.due_s)
        for work in itertools.islice(queued, _HELPER_LOOKAHEAD):
            done_s += self._work_ms(work) * 1e-3
            if done_s > work.due_s:
                return True
        return False

    def _serve_once(self) -> None:
        turn = self.busy_time.mark()
        source = self._source
        if source is not None:
            source.poll()
        job = self._next_job()
        # Garbage is collected while no frame waits (and no other worker computes), or at a
        # job boundary when long overdue.
        self.collector.collect(idle=job is None and not self._running)
        if job is None:
            wait_s = self._run_idle_task()
            if wait_s <= 0.0:
                return  # more idle work is due: it runs after a look for new frames
            with self._unlocked():
                if source is not None:
                    source.wait(wait_s)
                else:
                    self._scheduler.wait(wait_s)
            return
        steps = len(job.stage_ms)
        answered = self._run(job, takes_frames=True)
        wall_ms = self.busy_time.add(turn)
        self._learn_overhead(wall_ms - sum(job.stage_ms[steps:]), answered)

    def _help_once(self, busy_time: BusyTime) -> None:
        turn = busy_time.mark()
        job = self._next_job(only_if_needed=True)
        if job is None:
            self._idle_helpers += 1
            try:
                self._work_posted.wait(_IDLE_WAIT_S)
            finally:
                self._idle_helpers -= 1
            return
        self.helper_jobs += 1
        self._run(job, takes_frames=False)
        busy_time.add(turn)

    @property
    def helpers_busy_time(self) -> BusyTime:
        """Return the busy turns of the workers besides the first, summed."""
        return BusyTime.total(self._helpers_busy_time)

    def _run_idle_task(self) -> float:
        """Run the idle task once; return how long to wait for frames (s, at most 0.1)."""
        task = self._idle_task
        if task is None:
            return _IDLE_WAIT_S
        try:
            again = task()
        except Exception as error:  # noqa: B902 - a failing task must not stop serving
            self.idle_task_errors += 1
            self._report('idle task failed', error)
            return _IDLE_WAIT_S
        return _IDLE_WAIT_S if again is None else min(_IDLE_WAIT_S, max(0.0, float(again)))

    def _learn_overhead(self, outside_ms: float, answered: int) -> None:
        self._overhead_acc_ms += outside_ms
        if answered:
            self._frame_overhead_ms.update(self._overhead_acc_ms / answered)
            self._overhead_acc_ms = 0.0

    @property
    def falling_behind(self) -> bool:
        """Return True while plans keep up with the arrivals (overflow or a late turn, < 1 s)."""
        return self._falling_behind(self._clock())

    @property
    def frame_overhead_ms(self) -> float:
        """Return the worker's recent time per answered frame outside the network's stages (ms)."""
        return self._frame_overhead_ms.value

    def _run(self, job: Job, *, takes_frames: bool) -> int:
        """
        Run a job stage by stage; put it aside when a more urgent frame arrives.

        ``takes_frames``: take new frames from the source between stages (the first worker).
        Return how many frames were answered.
        """
        self._running.append(job)
        try:
            return self._run_stages(job, self._source if takes_frames else None)
        finally:
            self._running.remove(job)

    def _run_stages(self, job: Job, source: Optional[FrameSource]) -> int:
        answered = 0
        while True:
            for row in job.settle():
                answered += self._complete(row, job)
            if job.done:
                return answered
            self._keep_to_free_cores(job)
            try:
                finished = job.step(unlocked=self._computing)
            except Exception as error:  # noqa: B902 - the batch failed as a whole
                if len(job.active) > 1:  # retry each frame alone: a bad one fails alone
                    self._suspended.extend(job.split_rows())
                    return answered
                for row in job.fail(error):
                    self._fail_row(row, error)
                return answered
            for row in finished:
                answered += self._complete(row, job)
            if job.done:
                return answered
            if source is not None:
                source.poll()
            if self._scheduler.closed:
                continue  # the frame in flight finishes
            if self._pick(current=job) is not job:
                self.preemptions += 1
                self._suspended.append(job)
                return answered

    def _candidates(self, now: float) -> Dict[str, list]:
        """Earliest waiting work of each tenant: a suspended job or a queued frame."""
        found: Dict[str, list] = {}
        for job in self._suspended:
            for row in job.active:
                entry = found.get(row.request.tenant)
                if entry is None or job.due_s < entry[0]:
                    found[row.request.tenant] = [job.due_s, job]
        for request in self._scheduler.heads():
            entry = found.get(request.tenant)
            if entry is None or request.due_s < entry[0]:
                found[request.tenant] = [request.due_s, request]
        return found

    def _pick(self, current: Optional[Job] = None):
        """
        Choose the next work: EDF, with each tenant's floor.

        A tenant owed its share goes first when the most urgent frame can wait for it.
        """
        now = self._clock()
        found = self._candidates(now)
        if current is not None:
            for row in current.active:
                entry = found.get(row.request.tenant)
                if entry is None or current.due_s <= entry[0]:
                    found[row.request.tenant] = [current.due_s, current]
        if not found:
            return None
        urgent = self._most_urgent(found, current)
        owed = self._shares.owed(found)
        if owed is not None and found[owed][1] is not urgent[1]:
            chosen = found[owed][1]
            if chosen is current or self._can_wait(urgent[1], self._work_ms(chosen), now):
                return chosen
            # Starving: it goes first at the next job boundary, never by preempting; the
            # urgent frame then answers in time or, if it no longer can, is dropped unserved.
            if current is None and self._shares.credit(owed) >= ShareLedger.STARVING:
                return chosen
        return urgent[1]

    def _most_urgent(self, found: Dict[str, list], current: Optional[Job]) -> list:
        """
        EDF entry of ``found``; deadlines closer than one first exit are a tie.

        The running job wins a tie (no preemption for it); otherwise the tenant owed the most
        answers does. By deadline alone, cameras triggered together are served in the same
        order every period, and under overload the same tenants lose their frames.
        """
        if len(found) == 1:  # one tenant: nothing to break a tie with
            return next(iter(found.values()))
        earliest = min(entry[0] for entry in found.values())
        tie_s = self._first_exit_ms() * 1e-3
        ties = [(name, entry) for name, entry in found.items() if entry[0] <= earliest + tie_s]
        for _, entry in ties:
            if entry[1] is current:
                return entry
        credit = self._shares.credit
        return max(ties, key=lambda item: (round(credit(item[0]), 6), -item[1][0]))[1]

    def _first_exit_ms(self) -> float:
        """Predicted time of one frame's first exit, at the current slowdown (upper bound)."""
        return self.executor.split(self.threads).path_ms(0) * self.cost.setting(
            self.threads).latency.upper

    def _work_ms(self, work) -> float:
        """Predicted time to finish a job or a queued frame (its whole network, worst case)."""
        threads = work.run_threads if isinstance(work, Job) else self.threads
        executor = work.executor if isinstance(work, Job) else self.executor
        split = executor.split(threads)
        start = work.next_exit if isinstance(work, Job) else 0
        upper = executor.cost.setting(threads).latency.upper
        return sum(split.plain_ms[start:]) * upper

    def _slack_ms(self, request: Request, now: float) -> float:
        """How long a waiting frame can still wait and get its first exit in time."""
        if request.deadline_s is None:
            return _INF
        return (request.deadline_s - now) * 1e3 - self.delivery_ms - self._first_exit_ms()

    def _can_wait(self, work, wait_ms: float, now: float) -> bool:
        rows = work.active if isinstance(work, Job) else [work]
        return all(self._slack_ms(row.request if isinstance(work, Job) else row, now) >= wait_ms
                   for row in rows)

    def _overflowing(self, now: float) -> bool:
        """Return True within a second of a queue pushing a frame out."""
        return now - self._last_overflow_s <= _BEHIND_WINDOW_S

    def _falling_behind(self, now: float) -> bool:
        """
        Return True within a second of a queue overflowing or of a frame's turn coming too late.

        A standing queue (every tenant's frames wait about a period, are served just before
        they would be pushed out, and answer late) overflows nothing: its late frames tell.
        """
        return now - max(self._last_overflow_s, self._last_late_s) <= _BEHIND_WINDOW_S

    def _backlog_ms(self, now: float, size: int = 1) -> float:
        """
        Return what a frame planned now may take while others wait (inf: none wait).

        It delays them all: its plan must leave the most urgent one that can still be answered
        in time its first exit, and keep up with the arrivals (``_keep_up_ms``).
        """
        heads = self._scheduler.heads()
        if not heads:
            return _INF
        slacks = (self._slack_ms(request, now) for request in heads)
        cap = min((slack for slack in slacks if slack > 0.0), default=_INF)
        return min(cap, self._keep_up_ms(now, size))

    def _keep_up_ms(self, now: float, size: int = 1) -> float:
        """
        Return the batch-1 time a frame's plan may take in a batch of ``size`` (inf: any).

        While the worker falls behind (a queue pushed a frame out, or a frame's turn came too
        late for its bound, within the last second), a batch must take no longer than the
        time its frames' arrivals give the worker: the time between arrivals of all streams
        together, less the worker's own time per frame outside the network, for each frame.
        """
        if not self._falling_behind(now):
            return _INF
        tenants = tuple(self._tenants.values())  # one snapshot: tenants may come and go
        rate = sum(tenant.rate_hz(now) for tenant in tenants)
        if rate <= 0:
            return _INF
        per_frame = max(0.0, 1e3 / rate - self._frame_overhead_ms.value)
        return per_frame * size / self.executor.batch_factor(size)

    def _next_job(self, *, only_if_needed: bool = False) -> Optional[Job]:
        """
        Take the next job: resume a suspended one, or start one from the queues.

        ``only_if_needed``: take none while one worker keeps up (a worker besides the first).
        """
        while True:
            work = self._pick()
            if work is None or (only_if_needed and not self._needs_helper()):
                return None
            if isinstance(work, Job):
                self._suspended.remove(work)
                return work
            if not self._scheduler.take(work):
                continue
            job = self._start([work] + self._batch_mates(work))
            if job is not None:
                return job

    def _batch_mates(self, first: Request) -> List[Request]:
        """Frames of other tenants waiting now that can share the first frame's stages."""
        if self.max_batch < 2:
            return []
        mates = [r for r in self._scheduler.heads() if r.tenant != first.tenant]
        mates.sort(key=lambda r: r.due_s)
        return mates[:self.max_batch - 1]

    def _start(self, requests: List[Request]) -> Optional[Job]:
        """Plan each frame; keep those that meet their deadlines in one batch; start it."""
        now = self._clock()
        rows: List[Row] = []
        keep_up_ms = self._keep_up_ms(now, len(requests))
        for position, request in enumerate(requests):
            if position and not self._scheduler.contains(request):
                continue
            # The frames left waiting cap the first frame's plan (a batch mate runs with it);
            # every frame's plan keeps up with the arrivals.
            cap = keep_up_ms if position else self._backlog_ms(now, len(requests))
            row = self._plan(request, now, cap)
            if row is None:
                if position:
                    self._scheduler.take(request)
                continue
            if rows and row.goal.latency_ms is not None:  # it waits for the answers before its own
                row.reserve_ms += len(rows) * self._answer_ms.value
            if rows and not self._fits_batch(rows + [row]):
                break
            if position:
                self._scheduler.take(request)
            rows.append(row)
        if not rows:
            return None
        threads = rows[0].plan.threads
        try:
            x = torch.cat([row.request.tensor for row in rows]) if len(rows) > 1 \
                else rows[0].request.tensor
            job = Job(rows[0].model.executor, rows, x, threads)
        except Exception as error:  # noqa: B902
            for row in rows:
                self._fail_row(row, error)
            return None
        if len(rows) > 1:
            self.batches += 1
            self.batched_frames += len(rows)
        return job

    def _fits_batch(self, rows: List[Row]) -> bool:
        threads = rows[0].plan.threads
        model = rows[0].model
        if any(row.plan.threads != threads or row.plan.target_exit is None
               or row.progressive or row.model is not model for row in rows):
            return False
        executor = model.executor
        split = executor.split(threads)
        factor = executor.batch_factor(len(rows)) * model.cost.setting(
            threads).latency.upper
        for row in rows:
            bound = row.goal.latency_ms
            if bound is None or row.late:  # late whatever it rides with
                continue
            need = split.path_ms(row.plan.target_exit, sorted(row.stop_exits)) * factor
            if row.queue_ms + row.reserve_ms + need > bound:
                return False
        return True

    def _threads_running(self, besides: Optional[Job] = None) -> int:
        """Return the threads our running jobs compute on, ``besides``'s left out."""
        return sum(job.run_threads for job in self._running if job is not besides)

    def _keep_to_free_cores(self, job: Job) -> None:
        """
        Run a job's next stages with the cores left now, if it runs on more than one thread.

        The job keeps its planned ``threads`` for what the policy learns (run_queue.py).
        """
        if job.run_threads > 1:
            job.run_threads = self.free_cores.for_next_stage(
                job.executor.cost.thread_counts, job.run_threads,
                ours=self._threads_running(besides=job))

    def _plan(self, request: Request, now: float, backlog_ms: float = _INF) -> Optional[Row]:
        """
        Plan a frame (policy, feasibility); None when it is dropped or fails.

        The policy plans within the frame's own budget and ``backlog_ms``, the slack of the
        frames that will wait for it; feasibility is judged on its own budget alone.
        """
        tenant = self._tenants.get(request.tenant)
        if tenant is None:
            self._finished(1)
            return None
        goal, policy = request.goal, request.policy
        queue_ms = max(0.0, (now - request.stamp_s) * 1e3)
        reserve = self.delivery_ms if goal.latency_ms is not None else 0.0
        remaining = _INF if goal.latency_ms is None else goal.latency_ms - queue_ms - reserve
        energy_budget = _INF if goal.energy_mj is None else goal.energy_mj
        models = tenant.models
        first = models[0]
        counts = self.free_cores.for_plan(first.cost.thread_counts,
                                          ours=self._threads_running())
        narrowed = len(counts) < len(first.cost.thread_counts)
        context = RequestContext(
            tenant=request.tenant, goal=goal, num_exits=first.num_exits, queue_ms=queue_ms,
            remaining_ms=min(remaining, backlog_ms), energy_budget_mj=energy_budget,
            default_threads=min(self.threads, max(counts)) if narrowed else self.threads,
            thread_counts=counts,
            cost=first.cost, profile=first.profile, reserve_ms=reserve,
            stages=first.executor, models=models)
        row = Row(request, Plan(threads=self.threads), goal, policy.should_stop,
                  queue_ms=queue_ms, reserve_ms=reserve, progressive=tenant.config.progressive)
        try:
            with tenant.lock:
                plan = policy.plan(context)
            served = first if plan.model is None else _chosen(models, plan.model)
            target = plan.target_exit
            if target is not None and not 0 <= target < served.num_exits:
                raise PolicyError(f'plan target_exit {target} out of range 0..'
                                  f'{served.num_exits - 1} of model {served.name!r}')
        except Exception as error:  # noqa: B902 - a policy's bug fails its frame alone
            self._fail_row(row, error)
            return None
        row.model = served
        # Expected, not worst-case, cost: the first exit is the least service a frame can get.
        least = served.cost.expected(0, plan.threads)
        late = least.latency_ms > remaining
        if late:
            self._last_late_s = now
        infeasible = late or least.energy_mj > energy_budget
        if infeasible:
            if tenant.config.on_infeasible == 'drop':
                tenant.stats.dropped('infeasible')
                self._finished(1)
                return None
            tenant.stats.infeasible_served()
            plan = Plan(threads=plan.threads, target_exit=0, model=plan.model)
        row.plan = plan
        row.stop_exits = frozenset(plan.stop_exits or ())
        row.infeasible = infeasible
        row.late = late
        row.describe = policy.describe()
        row.tenant = tenant
        if tenant.config.progressive:
            row.on_exit = functools.partial(self._intermediate, row)
        return row

    def _intermediate(self, row: Row, status: ExitStatus) -> None:
        self._deliver(row.tenant, self._result(row, status, is_final=False))

    def _complete(self, row: Row, job: Job) -> bool:
        """Answer one finished row (or count its failure), then learn from it; True: answered."""
        start = time.perf_counter()
        try:
            if row.error is not None:
                self._fail_row(row, row.error)
                return False
            self._answer(row, job)
        except Exception as error:  # noqa: B902
            self._fail_row(row, error, counted=False)
            self._finished(1)
            return False
        self._finished(1)
        self._answer_ms.update((time.perf_counter() - start) * 1e3)
        return True

    def _answer(self, row: Row, job: Job) -> None:
        tenant, request, final = row.tenant, row.request, row.final
        goal, policy = row.goal, request.policy
        result = self._result(row, final, is_final=True)
        correct = tenant.stats.served(
            stamp_s=request.stamp_s, latency_ms=result.latency_ms, exit_index=final.exit_index,
            energy_mj=final.energy_mj,
            deadline_met=None if goal.latency_ms is None else result.deadline_met,
            class_id=final.class_id, label=request.label,
            energy_measured=self.meter.measured, energy_source=self.meter.source,
            model=row.model.name)
        if correct is not None:
            result = replace(result, correct=correct)
        self._shares.answered(request.tenant, self._backlogged())
        self._deliver(tenant, result)
        if not policy.learns:
            return
        outcome = Outcome(
            tenant=request.tenant, goal=goal, plan=row.plan, threads=job.threads,
            exit_index=final.exit_index,
            exits_evaluated=tuple(s.exit_index for s in row.exits),
            stage_latencies_ms=tuple(job.stage_ms), queue_ms=row.queue_ms,
            compute_ms=final.compute_ms, latency_ms=result.latency_ms,
            energy_mj=final.energy_mj, deadline_met=result.deadline_met,
            confidence=final.confidence, expected_accuracy=final.expected_accuracy,
            slowdown=row.model.cost.setting(job.threads).latency.mean, infeasible=row.infeasible,
            model=row.model.name)
        with tenant.lock:
            policy.observe(outcome)

    def _backlogged(self) -> set:
        tenants = {r.tenant for r in self._scheduler.heads()}
        for job in self._suspended:
            tenants.update(row.request.tenant for row in job.active)
        return tenants

    def _fail_row(self, row: Row, error: BaseException, *, counted: bool = True) -> None:
        """Count a frame that failed while served; serving goes on with the next one."""
        tenant = self._tenants.get(row.request.tenant)
        if tenant is not None:
            tenant.stats.failed()
        self.frames_failed += 1
        self._report(f'serving a frame of tenant {row.request.tenant!r} failed', error)
        if counted:
            self._finished(1)

    def _report(self, what: str, error: BaseException) -> None:
        self.last_error = f'{what}: {type(error).__name__}: {error}'
        _LOG.error('%s', self.last_error, exc_info=error)
        if self._on_event is not None:
            try:
                self._on_event('error', self.last_error)
            except Exception:  # noqa: B902
                _LOG.exception('the error callback failed')

    def _drop_suspended(self) -> None:
        suspended, self._suspended = self._suspended, []
        for job in suspended:
            for row in job.active:
                tenant = self._tenants.get(row.request.tenant)
                if tenant is not None:
                    tenant.stats.dropped('shutdown')
                self._finished(1)

    # -- serving one request on the calling thread -------------------------------------------

    def serve(self, request: Request) -> Optional[Execution]:
        """Serve one dequeued request on the calling thread, to the end (no preemption)."""
        with self._activity:
            self._outstanding += 1
        now = self._clock()
        row = self._plan(request, now, self._backlog_ms(now))
        if row is None:
            return None
        job = Job(row.model.executor, [row], request.tensor, row.plan.threads)
        while not job.done:
            for finished in job.settle():
                self._complete(finished, job)
            if not job.done:
                self._keep_to_free_cores(job)
            for finished in job.step() if not job.done else ():
                self._complete(finished, job)
        if row.final is None:
            return None
        final = row.final
        return Execution(
            final=final, exits=tuple(row.exits), stage_latencies_ms=tuple(job.stage_ms),
            threads=job.threads, threads_changed=job.threads_changed,
            compute_ms=final.compute_ms, model_ms=sum(job.stage_ms),
            energy_mj=final.energy_mj,
            slowdown=row.model.cost.setting(job.threads).latency.mean)

    def _result(self, row: Row, status: ExitStatus, *, is_final: bool) -> InferenceResult:
        request, goal = row.request, row.goal
        # Measured from its exit to now (the answers of its batch before it), then estimated.
        waited_ms = 0.0 if row.started_s is None else max(
            0.0, (time.perf_counter() - row.started_s) * 1e3 - status.compute_ms)
        delivery = waited_ms + self.delivery_ms
        latency = row.queue_ms + status.compute_ms + delivery
        return InferenceResult(
            tenant=request.tenant, stamp_s=request.stamp_s, frame_id=request.frame_id,
            class_id=status.class_id, label=row.model.config.label(status.class_id),
            confidence=status.confidence, expected_accuracy=status.expected_accuracy,
            exit_index=status.exit_index, num_exits=status.num_exits, is_final=is_final,
            latency_ms=latency, queue_ms=row.queue_ms, compute_ms=status.compute_ms,
            energy_mj=status.energy_mj, energy_measured=self.meter.measured,
            energy_source=self.meter.source, deadline_ms=goal.latency_ms,
            deadline_met=goal.latency_ms is None or latency <= goal.latency_ms,
            goal=str(goal), goal_kind=goal.kind.value, policy=row.describe,
            threads=status.threads, infeasible=row.infeasible, delivery_ms=delivery,
            model=row.model.name, token=request.token)

    def _deliver(self, tenant: _Tenant, result: InferenceResult) -> None:
        start = time.perf_counter()
        for callback in (tenant.on_result, self._on_result):
            if callback is not None:
                try:
                    callback(result)
                except Exception:  # a client's bug must not stop serving the others
                    _LOG.exception('on_result callback of tenant %r failed', result.tenant)
        self._publish_ms.update((time.perf_counter() - start) * 1e3)
        with self._activity:
            self._results.append(result)
            self._activity.notify_all()

    @property
    def delivery_ms(self) -> float:
        """
        Estimate the time from an answer to its receipt (ms).

        Building and publishing it, one hop, and the subscriber's wake-up (as this process's
        worker wakes for a frame, under the load of the moment).
        """
        return self._publish_ms.value + self._hop_ms.value + self._wake_ms.value


def _chosen(models: Tuple[ServedModel, ...], name: str) -> ServedModel:
    for served in models:
        if served.name == name:
            return served
    raise PolicyError(f"plan model {name!r} is not one of this request's models "
                      f'({", ".join(m.name for m in models)})')
