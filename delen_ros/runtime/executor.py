"""Stage-by-stage execution of one request, stopping where the policy says (Dělen, Sec. 3)."""

from dataclasses import dataclass
import math
import time
from typing import Callable, Optional, Sequence, Tuple

import torch

from .accuracy import AccuracyCurve
from .conditions import ExitStatus
from .cost import CostModel
from .energy import EnergyMeter
from .goals import Goal
from .policies.base import Plan, PolicyError

__all__ = ['ConditionalExecutor', 'Execution', 'apply_threads', 'calibrated_top1']

_INF = math.inf
_exp = math.exp


@dataclass(frozen=True)
class Execution:
    """
    A finished request: its final exit, every exit evaluated and what it cost.

    ``compute_ms`` and ``energy_mj`` run up to the final answer; ``model_ms`` is the time
    spent inside the network's stages, the rest of ``compute_ms`` is the runtime's own.
    """

    final: ExitStatus
    exits: Tuple[ExitStatus, ...]
    stage_latencies_ms: Tuple[float, ...]
    threads: int
    threads_changed: bool
    compute_ms: float
    model_ms: float
    energy_mj: float
    slowdown: float


def apply_threads(threads: int) -> bool:
    """Set torch's intra-op thread count only when it differs (setting it is not free)."""
    if torch.get_num_threads() == threads:
        return False
    torch.set_num_threads(threads)
    return True


def calibrated_top1(logits: torch.Tensor, temperature: float) -> Tuple[int, float]:
    """Class and temperature-scaled softmax probability of one row of logits [1, C]."""
    if logits.shape[-1] > 64:
        flat = logits.reshape(-1).float()
        confidence, class_id = torch.softmax(flat / temperature, dim=0).max(dim=0)
        return int(class_id), float(confidence)
    row = logits.tolist()[0]
    top = max(row)
    scale = 1.0 / temperature
    # The top class contributes exp(0) = 1: its probability is 1 / sum.
    return row.index(top), 1.0 / sum(map(_exp, [(value - top) * scale for value in row]))


class ConditionalExecutor:
    """
    Runs a multi-exit network one stage at a time for one request.

    ``should_stop(status)`` is consulted after every exit whose head runs, unless the plan
    fixes a target exit. ``on_exit(status)`` receives every intermediate exit when
    progressive (their heads then run even on the way to a fixed target).
    """

    def __init__(self, network, profile, *, cost: CostModel,
                 meter: Optional[EnergyMeter] = None,
                 accuracy: Optional[AccuracyCurve] = None) -> None:
        if network.num_exits != profile.num_exits:
            raise ValueError(f'network has {network.num_exits} exits, its profile '
                             f'{profile.num_exits}')
        self.network = network
        self.profile = profile
        self.cost = cost
        self.meter = meter or cost.meter
        self.num_exits = network.num_exits
        self._temperature: Sequence[float] = tuple(profile.temperature)
        self._exit_accuracy: Sequence[float] = tuple(profile.exit_accuracy)
        self.accuracy = accuracy or AccuracyCurve(profile)
        self._accuracy_at = self.accuracy

    def execute(self, x: torch.Tensor, *, plan: Plan, goal: Goal,
                should_stop: Callable[[ExitStatus], bool], queue_ms: float = 0.0,
                progressive: bool = False,
                on_exit: Optional[Callable[[ExitStatus], None]] = None) -> Execution:
        """Run ``x`` [1, C, H, W] (normalized) under ``plan`` until told to stop."""
        num_exits = self.num_exits
        target = plan.target_exit
        if target is not None and not 0 <= target < num_exits:
            raise PolicyError(f'plan target_exit {target} out of range 0..{num_exits - 1}')
        threads = plan.threads
        changed = apply_threads(threads)
        deadline = goal.latency_ms if goal.latency_ms is not None else _INF
        energy_cap = goal.energy_mj if goal.energy_mj is not None else _INF
        meter = self.meter
        measured = meter.measured
        network = self.network
        costs = self.cost.setting(threads)
        median, nominal = costs.median_ms, costs.nominal_mj
        latency_filter = costs.latency
        temperature, exit_accuracy = self._temperature, self._exit_accuracy
        accuracy_at = self._accuracy_at
        perf_counter = time.perf_counter
        stage_ms = []
        exits = []
        model_s = 0.0
        profiled_ms = observed_ms = 0.0
        previous_evaluated = True

        state = network.begin(x)
        if measured:
            first_reading = last_reading = meter.read()
        else:
            cpu_clock = meter.cpu_clock(threads)
            cpu_watts = meter.cpu_watts(threads) * 1e3  # mJ per CPU second
            first_cpu = last_cpu = cpu_clock()
        start = perf_counter()
        status = None
        for index in range(num_exits):
            last = index == num_exits - 1
            evaluate = last or target is None or index == target or (
                progressive and index < target)
            before = perf_counter()
            logits = network.step(state, evaluate_head=evaluate)
            after = perf_counter()
            elapsed = (after - before) * 1e3
            model_s += after - before
            stage_ms.append(elapsed)
            if not evaluate:
                previous_evaluated = False
                continue
            if measured:
                reading = meter.read()
                stage_mj = meter.energy_mj(last_reading, reading, threads=threads)
                energy = meter.energy_mj(first_reading, reading, threads=threads)
                last_reading = reading
            else:
                cpu = cpu_clock()
                stage_mj = cpu_watts * (cpu - last_cpu)
                energy = cpu_watts * (cpu - first_cpu)
                last_cpu = cpu
            if previous_evaluated:  # the measurement covers this stage alone
                costs.observe(index, elapsed, stage_mj)
                profiled_ms += median[index]
                observed_ms += elapsed
            previous_evaluated = True
            class_id, confidence = calibrated_top1(logits, temperature[index])
            compute_ms = (after - start) * 1e3
            if last:
                next_ms = next_mj = 0.0
            else:
                next_ms = median[index + 1] * latency_filter.upper
                next_mj = nominal[index + 1] * costs.energy_factor(index + 1)
            status = ExitStatus(
                index, num_exits, class_id, confidence, exit_accuracy[index],
                accuracy_at(index, confidence), queue_ms + compute_ms, compute_ms,
                deadline - queue_ms - compute_ms, energy, energy_cap - energy, next_ms,
                next_mj, threads, goal)
            exits.append(status)
            if last or (target is not None and index >= target) or (
                    target is None and should_stop(status)):
                break
            if progressive and on_exit is not None:
                on_exit(status)

        return Execution(
            final=status, exits=tuple(exits), stage_latencies_ms=tuple(stage_ms),
            threads=threads, threads_changed=changed, compute_ms=status.compute_ms,
            model_ms=model_s * 1e3, energy_mj=status.energy_mj,
            slowdown=observed_ms / profiled_ms if profiled_ms > 0 else 1.0)
