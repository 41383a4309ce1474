"""
Run one policy through one scenario on a fresh InferenceServer, in real time, on real frames.

The driver submits the scenario's trace (real Fashion-MNIST test images, as mono8 frames)
at its scripted times, changes goals when scripted, and switches a real CPU load on and off;
every answer is recorded with what the runtime reports (exit, threads, estimated energy,
correctness) and with its latency as measured here, from the call that gave the frame to the
callback that got its answer: the deadline is judged on that, not on the runtime's own figure.
Frames that get no answer (dropped by the runtime) are recorded too.
"""

from dataclasses import dataclass
import math
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .load import CpuLoad
from .scenarios import Arrival, Scenario
from ..runtime.policies import make_policy, Policy
from ..runtime.server import InferenceResult, InferenceServer

__all__ = ['PolicyRun', 'RequestRecord', 'family_offsets', 'run_policy']


@dataclass(frozen=True)
class RequestRecord:
    """
    What happened to one frame of the trace under one policy (or the oracle).

    ``answered`` is False when the runtime dropped the frame; then ``exit_index`` and
    ``threads`` are -1 and 0, latency and energy NaN, and the frame counts as a violation
    and a wrong answer. ``energy_mj`` is the runtime's figure (estimated from the power
    model unless a hardware meter was found; see ``PolicyRun.energy_source``).
    ``latency_ms`` is measured by the driver, from giving the frame to receiving its answer,
    and ``deadline_met`` compares it with the deadline; ``reported_latency_ms`` is the
    runtime's own ``latency_ms`` (its queue, compute and delivery estimate), kept to check it.
    """

    index: int
    time_s: float
    tenant: str
    frame: int
    label: int
    goal: str
    deadline_ms: Optional[float]
    energy_bound_mj: Optional[float]
    loaded: bool
    answered: bool
    exit_index: int
    threads: int
    latency_ms: float
    queue_ms: float
    compute_ms: float
    energy_mj: float
    deadline_met: bool
    correct: bool
    reported_latency_ms: float = math.nan

    @property
    def energy_ok(self) -> bool:
        """Return True unless an energy bound was exceeded (or nothing was answered)."""
        if not self.answered:
            return False
        return self.energy_bound_mj is None or self.energy_mj <= self.energy_bound_mj

    @property
    def violation(self) -> bool:
        """Return True when the frame missed its deadline or energy bound, or got no answer."""
        return not (self.answered and self.deadline_met and self.energy_ok)

    @property
    def effective_correct(self) -> bool:
        """Return True for a correct answer within every bound (late counts as wrong)."""
        return self.correct and not self.violation


@dataclass
class PolicyRun:
    """Every frame of one scenario under one policy, plus what the runtime counted."""

    scenario: str
    policy: str
    records: List[RequestRecord]
    wall_s: float
    energy_source: str
    energy_measured: bool
    dropped: Dict[str, int]
    probes: int = 0


def _goal_bounds(goal) -> Tuple[Optional[float], Optional[float]]:
    return goal.latency_ms, goal.energy_mj


class _Collector:
    """Final answers by frame id, and when each arrived, filled from the server's callbacks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: Dict[str, InferenceResult] = {}
        self.received_s: Dict[str, float] = {}  # time.perf_counter at the callback

    def __call__(self, result: InferenceResult) -> None:
        if result.is_final:
            received = time.perf_counter()
            with self.lock:
                self.results[result.frame_id] = result
                self.received_s[result.frame_id] = received


def _events(scenario: Scenario, trace: Sequence[Arrival]) -> List[Tuple[float, int, str, object]]:
    # (time, order, kind, payload); load switches go before arrivals at the same time.
    events = []
    for phase in scenario.load:
        events.append((phase.start_s, 0, 'load_on', None))
        events.append((phase.end_s, 0, 'load_off', None))
    for time_s, tenant, goal in scenario.goal_changes():
        events.append((time_s, 1, 'goal', (tenant, goal)))
    for index, arrival in enumerate(trace):
        events.append((arrival.time_s, 2, 'frame', index))
    events.sort(key=lambda event: (event[0], event[1]))
    return events


def family_offsets(server: InferenceServer) -> Dict[str, int]:
    """
    Where each model's exits start in the family's exit numbering (the first model's first).

    With the shipped family, exits 0-3 are the anytime model's and exit 4 the traditional
    model's answer: records, the oracle and the plots count in this one numbering.
    """
    offsets, start = {}, 0
    for info in server.models():
        offsets[info.name] = start
        start += info.num_exits
    return offsets


def run_policy(scenario: Scenario, policy: str, *, server: InferenceServer,
               trace: Sequence[Arrival], images: np.ndarray, labels: np.ndarray,
               progress: Optional[Callable[[float], None]] = None,
               drain_s: float = 5.0) -> PolicyRun:
    """
    Run ``policy`` (a ``make_policy`` string) through ``scenario`` on a fresh ``server``.

    Each tenant gets its own policy instance. The server is started and stopped here; the
    CPU load is always switched off on the way out. ``progress(seconds)`` is called as
    scenario time passes.
    """
    collector = _Collector()
    policies: List[Policy] = []
    for tenant in scenario.tenants:
        instance = make_policy(policy)
        policies.append(instance)
        server.add_tenant(tenant.name, goal=tenant.goal, policy=instance,
                          queue_size=scenario.queue_size, on_infeasible=scenario.on_infeasible,
                          on_result=collector)
    load = CpuLoad(max_seconds=scenario.duration_s + 30.0)
    events = _events(scenario, trace)
    submitted_s: Dict[str, float] = {}  # time.perf_counter as each frame was given
    server.start()  # the first start of a process freezes the loaded objects: ~0.3 s
    started = time.monotonic()
    reported = 0.0
    try:
        for time_s, _, kind, payload in events:
            delay = started + time_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if progress is not None and time_s - reported >= 0.5:
                progress(time_s - reported)
                reported = time_s
            if kind == 'load_on':
                load.start()
            elif kind == 'load_off':
                load.stop()
            elif kind == 'goal':
                server.set_goal(*payload)
            else:
                arrival = trace[payload]
                submitted_s[str(payload)] = time.perf_counter()
                server.submit(arrival.tenant, images[arrival.frame], encoding='mono8',
                              frame_id=str(payload), label=int(labels[arrival.frame]))
        remaining = started + scenario.duration_s - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        load.stop()
        server.wait_idle(timeout=drain_s)
    finally:
        load.stop()
        server.stop(timeout=30.0)
    wall = time.monotonic() - started
    if progress is not None:
        progress(max(scenario.duration_s - reported, 0.0))
    stats = server.stats()
    dropped = {'queue': sum(s.dropped_queue for s in stats.values()),
               'infeasible': sum(s.dropped_infeasible for s in stats.values()),
               'shutdown': sum(s.dropped_shutdown for s in stats.values())}
    records = []
    offsets = family_offsets(server)
    for index, arrival in enumerate(trace):
        result = collector.results.get(str(index))
        deadline, energy_bound = _goal_bounds(arrival.goal)
        label = int(labels[arrival.frame])
        if result is None:
            records.append(RequestRecord(
                index=index, time_s=arrival.time_s, tenant=arrival.tenant,
                frame=arrival.frame, label=label, goal=str(arrival.goal),
                deadline_ms=deadline, energy_bound_mj=energy_bound, loaded=arrival.loaded,
                answered=False, exit_index=-1, threads=0, latency_ms=math.nan,
                queue_ms=math.nan, compute_ms=math.nan, energy_mj=math.nan,
                deadline_met=False, correct=False))
            continue
        latency = (collector.received_s[str(index)] - submitted_s[str(index)]) * 1e3
        records.append(RequestRecord(
            index=index, time_s=arrival.time_s, tenant=arrival.tenant, frame=arrival.frame,
            label=label, goal=str(arrival.goal), deadline_ms=deadline,
            energy_bound_mj=energy_bound, loaded=arrival.loaded, answered=True,
            exit_index=result.exit_index + offsets.get(result.model, 0),
            threads=result.threads, latency_ms=latency, queue_ms=result.queue_ms,
            compute_ms=result.compute_ms, energy_mj=result.energy_mj,
            deadline_met=deadline is None or latency <= deadline,
            correct=result.class_id == label, reported_latency_ms=result.latency_ms))
    return PolicyRun(
        scenario=scenario.name, policy=policies[0].describe(), records=records, wall_s=wall,
        energy_source=server.meter.source, energy_measured=bool(server.meter.measured),
        dropped=dropped, probes=sum(int(getattr(p, 'probes', 0)) for p in policies))
