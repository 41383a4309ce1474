"""
The offline oracle: what the best (exit, threads) choice per frame would have achieved.

It is computed from a recorded pass, never run live:

- per-frame, per-exit correctness from one batch forward over the trace's frames;
- latency per (exit, threads) and load phase from stage latencies measured on this machine
  with and without the real CPU load (``measure_latencies``): the plain path to exit k is
  stages 0..k plus head k, the path ``Plan.target_exit`` runs; its energy is charged as the
  runtime's power model charges it (CPU time x power per busy CPU). Frame i of the trace is
  given the latencies of calibration frame ``i mod n`` of its load phase (one recorded pass
  through every exit, so the pairs of one frame are consistent), tails included.

Per frame it knows which pairs answer correctly in time, and picks (a stronger oracle than
ALERT's, Sec. 5, which knows latencies but not correctness; ``latency_oracle_run`` is that
one): under latency and energy goals the least-energy pair that is
correct within the bounds (else the least-energy pair within the bounds, else the fastest);
under accuracy goals the least energy overall while the tenant's mean accuracy over the goal's
span reaches the bound (greedy upgrades by extra energy per corrected frame). Queueing is
ignored: the oracle's latency is the compute latency alone.
"""

from dataclasses import dataclass
import itertools
import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .load import CpuLoad
from .runner import PolicyRun, RequestRecord
from .scenarios import Arrival, Scenario
from ..engine import exit_logits, normalize_images
from ..runtime.energy import PowerModel
from ..runtime.executor import apply_threads
from ..runtime.goals import GoalKind

__all__ = ['LatencyTable', 'exit_correctness', 'latency_oracle_run', 'measure_latencies',
           'merge_tables', 'oracle_run']


@dataclass
class LatencyTable:
    """
    Measured samples per (loaded, threads, exit) of the plain path to that exit.

    ``samples``: wall latency (ms); ``cpu_samples``: compute time (ms) on the clock the
    runtime's power model charges (``PowerModel.compute_clock``), so energies compare with the
    runtime's.
    """

    samples: Dict[Tuple[bool, int, int], List[float]]
    cpu_samples: Dict[Tuple[bool, int, int], List[float]]
    thread_counts: Tuple[int, ...]
    num_exits: int

    def median_ms(self, loaded: bool, threads: int, exit_index: int) -> float:
        """Return the median latency of one pair in one load phase."""
        values = self.samples.get((loaded, threads, exit_index))
        return float(np.median(values)) if values else math.inf

    def percentile_ms(self, loaded: bool, threads: int, exit_index: int, q: float) -> float:
        """Return a percentile of the latency of one pair in one load phase."""
        values = self.samples.get((loaded, threads, exit_index))
        return float(np.percentile(values, q)) if values else math.inf

    def cpu_median_ms(self, loaded: bool, threads: int, exit_index: int) -> float:
        """Return the median CPU time of one pair in one load phase."""
        values = self.cpu_samples.get((loaded, threads, exit_index))
        return float(np.median(values)) if values else math.inf


def _time_frame(network, x: torch.Tensor,
                clock: Callable[[], float]) -> Tuple[List[float], List[float]]:
    """Return wall and compute ms of the plain path to every exit (stages 0..k, then head k)."""
    stage, head, stage_cpu, head_cpu = [], [], [], []
    features = x
    with torch.inference_mode():
        for stage_module, head_module in zip(network.stages, network.heads):
            start, start_cpu = time.perf_counter(), clock()
            features = stage_module(features)
            middle, middle_cpu = time.perf_counter(), clock()
            head_module(features)
            end, end_cpu = time.perf_counter(), clock()
            stage.append((middle - start) * 1e3)
            head.append((end - middle) * 1e3)
            stage_cpu.append((middle_cpu - start_cpu) * 1e3)
            head_cpu.append((end_cpu - middle_cpu) * 1e3)
    exits = range(len(stage))
    return ([sum(stage[:k + 1]) + head[k] for k in exits],
            [sum(stage_cpu[:k + 1]) + head_cpu[k] for k in exits])


def measure_latencies(network, inputs: torch.Tensor, *, thread_counts: Sequence[int],
                      phases: Sequence[bool] = (False, True), frames: int = 20,
                      max_seconds: float = 6.0, warmup_s: float = 0.5,
                      gap_s: float = 0.05) -> LatencyTable:
    """
    Measure plain-path latencies per exit, thread count and load phase (the recorded pass).

    Per (phase, threads): up to ``frames`` frames or ``max_seconds``, ``gap_s`` apart as
    frames arrive when served (idle gaps let caches cool and threads sleep: at 20 frames/s
    the same network takes 30-50 % longer than back to back); the loaded phase runs under
    ``CpuLoad`` (one busy process per core), started ``warmup_s`` before measuring.
    """
    samples: Dict[Tuple[bool, int, int], List[float]] = {}
    cpu_samples: Dict[Tuple[bool, int, int], List[float]] = {}
    clock = PowerModel.compute_clock
    saved = torch.get_num_threads()
    frame_ids = itertools.cycle(range(len(inputs)))
    try:
        for loaded in phases:
            load = CpuLoad(max_seconds=len(thread_counts) * max_seconds + 30.0)
            if loaded:
                load.start()
                time.sleep(warmup_s)
            try:
                for threads in thread_counts:
                    apply_threads(threads)
                    _time_frame(network, inputs[:1], clock)  # warm this thread count
                    deadline = time.monotonic() + max_seconds
                    for _ in range(frames):
                        time.sleep(gap_s)
                        index = next(frame_ids)
                        wall, cpu = _time_frame(network, inputs[index:index + 1], clock)
                        for exit_index in range(network.num_exits):
                            key = (loaded, threads, exit_index)
                            samples.setdefault(key, []).append(wall[exit_index])
                            cpu_samples.setdefault(key, []).append(cpu[exit_index])
                        if time.monotonic() > deadline:
                            break
            finally:
                load.stop()
    finally:
        torch.set_num_threads(saved)
    return LatencyTable(samples=samples, cpu_samples=cpu_samples,
                        thread_counts=tuple(thread_counts), num_exits=network.num_exits)


def merge_tables(tables: Sequence[LatencyTable]) -> LatencyTable:
    """
    Join the tables of a model family into one, numbering exits across the models in order.

    The oracles then choose model x exit x threads as ALERT does (exits of the first model
    first, then the next model's, ...: the numbering of ``runner.family_offsets``).
    """
    samples: Dict[Tuple[bool, int, int], List[float]] = {}
    cpu_samples: Dict[Tuple[bool, int, int], List[float]] = {}
    offset = 0
    for table in tables:
        for (loaded, threads, exit_index), values in table.samples.items():
            samples[(loaded, threads, exit_index + offset)] = values
            cpu_samples[(loaded, threads, exit_index + offset)] = \
                table.cpu_samples[(loaded, threads, exit_index)]
        offset += table.num_exits
    return LatencyTable(samples=samples, cpu_samples=cpu_samples,
                        thread_counts=tables[0].thread_counts, num_exits=offset)


def exit_correctness(network, spec, images: np.ndarray, labels: np.ndarray, *,
                     frames: Optional[Sequence[int]] = None) -> np.ndarray:
    """
    Return bool [num_exits, N]: is exit k right on image i (one batch forward).

    With ``frames``, only those images are run (the others stay False).
    """
    index = np.arange(len(labels)) if frames is None else np.unique(np.asarray(frames))
    logits = exit_logits(network, normalize_images(images[index], spec))
    right = (logits.argmax(dim=2) == torch.from_numpy(labels[index]).unsqueeze(0)).numpy()
    correct = np.zeros((network.num_exits, len(labels)), dtype=bool)
    correct[:, index] = right
    return correct


@dataclass(frozen=True)
class _Option:
    exit_index: int
    threads: int
    latency_ms: float
    energy_mj: float


def _options(table: LatencyTable, power, loaded: bool, draw: int) -> List[_Option]:
    """Every pair as recorded for one calibration frame (``draw``-th, cyclically) of a phase."""
    options = []
    for threads in table.thread_counts:
        for exit_index in range(table.num_exits):
            key = (loaded, threads, exit_index)
            samples, cpu = table.samples.get(key), table.cpu_samples.get(key)
            if not samples:
                options.append(_Option(exit_index, threads, math.inf, math.inf))
                continue
            latency = samples[draw % len(samples)]
            if hasattr(power, 'charge_mj'):  # charged by compute time, as the runtime does
                energy = power.charge_mj(threads, cpu[draw % len(cpu)] * 1e-3)
            else:
                energy = power.active_w(threads) * latency
            options.append(_Option(exit_index, threads, latency, energy))
    return options


def _record(arrival: Arrival, index: int, label: int, option: _Option,
            correct: bool) -> RequestRecord:
    goal = arrival.goal
    met = goal.latency_ms is None or option.latency_ms <= goal.latency_ms
    return RequestRecord(
        index=index, time_s=arrival.time_s, tenant=arrival.tenant, frame=arrival.frame,
        label=label, goal=str(goal), deadline_ms=goal.latency_ms,
        energy_bound_mj=goal.energy_mj, loaded=arrival.loaded, answered=True,
        exit_index=option.exit_index, threads=option.threads, latency_ms=option.latency_ms,
        queue_ms=0.0, compute_ms=option.latency_ms, energy_mj=option.energy_mj,
        deadline_met=met, correct=correct, reported_latency_ms=option.latency_ms)


def _within(option: _Option, goal) -> bool:
    if goal.latency_ms is not None and option.latency_ms > goal.latency_ms:
        return False
    return goal.energy_mj is None or option.energy_mj <= goal.energy_mj


def _best_for_frame(options: Sequence[_Option], correct: np.ndarray, goal) -> _Option:
    within = [o for o in options if _within(o, goal)]
    if not within:
        return min(options, key=lambda o: (o.latency_ms, o.energy_mj))
    right = [o for o in within if correct[o.exit_index]]
    pool = right or within
    return min(pool, key=lambda o: (o.energy_mj, o.latency_ms))


def oracle_run(scenario: Scenario, trace: Sequence[Arrival], *, table: LatencyTable,
               correctness: np.ndarray, labels: np.ndarray, power) -> PolicyRun:
    """Return the oracle's choices for the trace as a PolicyRun (offline, no timing)."""
    options = [_options(table, power, arrival.loaded, index)
               for index, arrival in enumerate(trace)]
    chosen: Dict[int, _Option] = {}
    spans: Dict[Tuple[str, str], List[int]] = {}
    for index, arrival in enumerate(trace):
        correct = correctness[:, arrival.frame]
        if arrival.goal.kind is GoalKind.ACCURACY:
            spans.setdefault((arrival.tenant, str(arrival.goal)), []).append(index)
            continue
        chosen[index] = _best_for_frame(options[index], correct, arrival.goal)
    for indices in spans.values():
        goal = trace[indices[0]].goal
        cheapest, upgrades = {}, []
        for index in indices:
            arrival = trace[index]
            correct = correctness[:, arrival.frame]
            within = [o for o in options[index] if _within(o, goal)]
            if not within:
                cheapest[index] = min(options[index], key=lambda o: (o.latency_ms, o.energy_mj))
                continue
            cheap = min(within, key=lambda o: (o.energy_mj, o.latency_ms))
            cheapest[index] = cheap
            if not correct[cheap.exit_index]:
                right = [o for o in within if correct[o.exit_index]]
                if right:
                    best = min(right, key=lambda o: (o.energy_mj, o.latency_ms))
                    upgrades.append((best.energy_mj - cheap.energy_mj, index, best))
        chosen.update(cheapest)
        needed = math.ceil(goal.min_accuracy * len(indices) - 1e-9)
        have = sum(bool(correctness[chosen[i].exit_index, trace[i].frame]) for i in indices)
        for _, index, best in sorted(upgrades, key=lambda item: (item[0], item[1])):
            if have >= needed:
                break
            chosen[index] = best
            have += 1
    records = [_record(arrival, index, int(labels[arrival.frame]), chosen[index],
                       bool(correctness[chosen[index].exit_index, arrival.frame]))
               for index, arrival in enumerate(trace)]
    return PolicyRun(scenario=scenario.name, policy='oracle', records=records, wall_s=0.0,
                     energy_source=getattr(power, 'source', ''),
                     energy_measured=bool(getattr(power, 'measured', False)), dropped={})


def latency_oracle_run(scenario: Scenario, trace: Sequence[Arrival], *, table: LatencyTable,
                       exit_accuracy: Sequence[float], correctness: np.ndarray,
                       labels: np.ndarray, power, tolerance: float = 0.002) -> PolicyRun:
    """
    Return ALERT's kind of oracle: it knows every frame's latencies, not its correctness.

    Per frame, from the pairs within the frame's bounds: under accuracy goals the least
    energy whose exit's (profiled) accuracy reaches the bound, else the most accurate exit
    (ties within ``tolerance`` to the least energy); nothing within bounds: the fastest.
    """
    records = []
    for index, arrival in enumerate(trace):
        goal = arrival.goal
        options = _options(table, power, arrival.loaded, index)
        within = [o for o in options if _within(o, goal)]
        if not within:
            best = min(options, key=lambda o: (o.latency_ms, o.energy_mj))
        elif goal.kind is GoalKind.ACCURACY:
            enough = [o for o in within if exit_accuracy[o.exit_index] >= goal.min_accuracy]
            pool = enough or [max(within, key=lambda o: exit_accuracy[o.exit_index])]
            best = min(pool, key=lambda o: (o.energy_mj, o.latency_ms))
        else:
            top = max(exit_accuracy[o.exit_index] for o in within)
            near = [o for o in within if exit_accuracy[o.exit_index] >= top - tolerance]
            best = min(near, key=lambda o: (o.energy_mj, o.latency_ms))
        records.append(_record(arrival, index, int(labels[arrival.frame]), best,
                               bool(correctness[best.exit_index, arrival.frame])))
    return PolicyRun(scenario=scenario.name, policy='oracle_latency', records=records,
                     wall_s=0.0, energy_source=getattr(power, 'source', ''),
                     energy_measured=bool(getattr(power, 'measured', False)), dropped={})
