"""Stage-by-stage execution of one request, stopping where the policy says (Dělen, Sec. 3)."""

import contextlib
from dataclasses import dataclass
import math
import time
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple

import torch

from .accuracy import AccuracyCurve
from .conditions import ExitStatus
from .cost import CostModel
from .energy import EnergyMeter
from .goals import Goal
from .policies.base import Plan, PolicyError

__all__ = ['ConditionalExecutor', 'Execution', 'Job', 'Row', 'StageSplit', 'apply_threads',
           'calibrated_top1']

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
                 accuracy: Optional[AccuracyCurve] = None, name: str = '') -> None:
        if network.num_exits != profile.num_exits:
            raise ValueError(f'network has {network.num_exits} exits, its profile '
                             f'{profile.num_exits}')
        self.network = network
        self.profile = profile
        self.name = name
        self.cost = cost
        self.meter = meter or cost.meter
        self.num_exits = network.num_exits
        self._temperature: Sequence[float] = tuple(profile.temperature)
        self._exit_accuracy: Sequence[float] = tuple(profile.exit_accuracy)
        self.accuracy = accuracy or AccuracyCurve(profile)
        self._accuracy_at = self.accuracy
        self._splits = {}
        # Time of a batch of b over one frame's, as 1 + (b - 1) * batch_slope (learned).
        self.batch_slope = 0.3

    def split(self, threads: int) -> 'StageSplit':
        """Return the per-stage and per-head nominal costs of a thread count."""
        split = self._splits.get(threads)
        if split is None:
            split = self._splits[threads] = StageSplit(self.profile, threads)
        return split

    def batch_factor(self, size: int) -> float:
        """Return the predicted time of a batch of ``size`` over that of one frame."""
        return 1.0 + (size - 1) * self.batch_slope

    def learn(self, index: int, elapsed_ms: float, energy_mj: float, size: int,
              with_head: bool, threads: int) -> None:
        """Feed one stage's measured time (and energy) to the cost model."""
        split = self.split(threads)
        nominal = split.plain_ms[index] + (split.head_ms[index] if with_head else 0.0)
        costs = self.cost.setting(threads)
        if nominal <= 0:
            return
        if size == 1:
            # Scaled to the profile's unit (stage with its head) the filters are kept in.
            scale = split.with_head_ms[index] / nominal
            costs.observe(index, elapsed_ms * scale, energy_mj * scale)
            return
        ratio = elapsed_ms / (nominal * costs.latency.mean)
        slope = min(max((ratio - 1.0) / (size - 1), 0.05), 1.0)
        self.batch_slope += 0.1 * (slope - self.batch_slope)

    def status(self, row: 'Row', index: int, logits: torch.Tensor,
               compute_ms: float) -> ExitStatus:
        """Build the ExitStatus of one row at exit ``index`` from its logits [1, C]."""
        class_id, confidence = calibrated_top1(logits, self._temperature[index])
        if not math.isfinite(confidence):
            raise ValueError(f'exit {index} gave non-finite scores')
        goal = row.goal
        deadline = goal.latency_ms if goal.latency_ms is not None else _INF
        energy_cap = goal.energy_mj if goal.energy_mj is not None else _INF
        threads = row.plan.threads
        costs = self.cost.setting(threads)
        if index == self.num_exits - 1:
            next_ms = next_mj = 0.0
        else:
            next_ms = costs.median_ms[index + 1] * costs.latency.upper
            next_mj = costs.nominal_mj[index + 1] * costs.energy_factor(index + 1)
        return ExitStatus(
            index, self.num_exits, class_id, confidence, self._exit_accuracy[index],
            self._accuracy_at(index, confidence), row.queue_ms + compute_ms, compute_ms,
            deadline - row.queue_ms - compute_ms - row.reserve_ms, row.energy_mj,
            energy_cap - row.energy_mj, next_ms, next_mj, threads, goal, self.name)

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
            clock = meter.compute_clock
            first_s = last_s = clock()
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
                now_s = clock()
                stage_mj = meter.charge_mj(threads, now_s - last_s)
                energy = meter.charge_mj(threads, now_s - first_s)
                last_s = now_s
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
                next_mj, threads, goal, self.name)
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


class StageSplit:
    """
    Profiled cost of each stage without its head (``plain_ms``) and of each head (``head_ms``).

    The profile times stage k with head k (``stage_latency_ms``) and the plain path to exit k
    with head k only (``exit_latency_ms``); their differences give the heads. The final head
    always runs, so it stays in the last stage's plain cost.
    """

    __slots__ = ('plain_ms', 'head_ms', 'with_head_ms')

    def __init__(self, profile, threads: int) -> None:
        profiled = min(profile.thread_counts, key=lambda t: (abs(t - threads), t))
        count = profile.num_exits
        stage = [profile.stage_latency_ms(k, profiled) for k in range(count)]
        plain_path = [profile.exit_latency_ms(k, profiled) for k in range(count)]
        heads = [0.0] * count
        for k in range(count - 1):
            estimate = stage[k + 1] - (plain_path[k + 1] - plain_path[k])
            heads[k] = min(max(estimate, 0.0), 0.5 * stage[k])
        self.with_head_ms = stage
        self.head_ms = heads
        self.plain_ms = [stage[k] - heads[k] for k in range(count)]

    def path_ms(self, target: int, heads: Sequence[int] = ()) -> float:
        """Nominal time to reach ``target`` evaluating its head and those of ``heads``."""
        total = sum(self.plain_ms[:target + 1]) + self.head_ms[target]
        return total + sum(self.head_ms[k] for k in heads if k < target)


class Row:
    """
    One request inside a Job: its plan, where it stands, its answer or its error.

    ``reserve_ms``: time kept back from the latency bound for building and delivering the
    answer. ``due_s``: its EDF key.
    """

    __slots__ = ('request', 'plan', 'goal', 'should_stop', 'on_exit', 'progressive',
                 'queue_ms', 'reserve_ms', 'due_s', 'exits', 'final', 'error', 'energy_mj',
                 'stop_exits', 'cut_short', 'infeasible', 'late', 'describe', 'tenant',
                 'model', 'started_s')

    def __init__(self, request, plan: Plan, goal: Goal, should_stop, *, queue_ms: float,
                 reserve_ms: float = 0.0, progressive: bool = False, on_exit=None) -> None:
        self.request = request
        self.plan = plan
        self.goal = goal
        self.should_stop = should_stop
        self.on_exit = on_exit
        self.progressive = progressive
        self.queue_ms = queue_ms
        self.reserve_ms = reserve_ms
        self.due_s = getattr(request, 'due_s', _INF)
        self.exits = []
        self.final: Optional[ExitStatus] = None
        self.error: Optional[BaseException] = None
        self.energy_mj = 0.0
        self.stop_exits = frozenset(plan.stop_exits or ())
        self.cut_short = False
        self.infeasible = False
        self.late = False  # its bound cannot be met even at the first exit
        self.describe = ''
        self.tenant = None
        self.model = None
        self.started_s: Optional[float] = None  # when its job began (perf_counter)

    @property
    def done(self) -> bool:
        """Return True once answered or failed."""
        return self.final is not None or self.error is not None


class Job:
    """
    A batch of rows run through the network stage by stage; resumable between stages.

    Every row shares the batch's stages; a row leaves the batch at its exit (its head is run
    on its own features). ``step`` runs one stage; between steps the server may run another
    job (preemption) and come back: the features stay in ``state``. A row whose own code
    fails (its policy, its head) fails alone.
    """

    def __init__(self, executor: 'ConditionalExecutor', rows: Sequence[Row], x: torch.Tensor,
                 threads: int) -> None:
        self.executor = executor
        self.rows = list(rows)
        self.active = list(rows)
        self.threads = threads  # as planned: the setting the policy learns about
        self.run_threads = threads  # what the next stages run with (fewer once cores are taken)
        self.state = executor.network.begin(x)
        self.start = time.perf_counter()
        for row in self.rows:
            row.started_s = self.start
        self.stage_ms = []
        self.threads_changed = False

    @property
    def next_exit(self) -> int:
        """Return the index of the next stage to run."""
        return self.state.next_exit

    @property
    def done(self) -> bool:
        """Return True once every row is answered or failed."""
        return not self.active

    @property
    def due_s(self) -> float:
        """Return the earliest due time of the rows still running."""
        return min((row.due_s for row in self.active), default=_INF)

    def elapsed_ms(self) -> float:
        """Return the wall time since the job started, ms."""
        return (time.perf_counter() - self.start) * 1e3

    def step(self, *, unlocked: Callable[[], ContextManager] = contextlib.nullcontext
             ) -> List[Row]:
        """
        Run the next stage for every active row; return the rows that finished here.

        The stage and its heads compute inside ``unlocked()`` (the server lets its other
        workers go on meanwhile); the rows and the cost model change outside it.
        """
        executor = self.executor
        index = self.state.next_exit
        num_exits = executor.num_exits
        last = index == num_exits - 1
        active = self.active
        if not active:
            return []
        self.threads_changed |= apply_threads(self.run_threads)
        meter = executor.meter
        heads = [row for row in active if last or self._wants_head(row, index)]
        rows_at = [active.index(row) for row in heads]
        logits = None
        with unlocked():
            energy_mark = meter.stage_start(self.run_threads)
            before = time.perf_counter()
            try:
                with torch.inference_mode():  # nothing changes unless stage and heads succeed
                    features = executor.network.stages[index](self.state.features)
                    if heads:
                        picked = features if len(rows_at) == len(active) else features[rows_at]
                        logits = executor.network.heads[index](picked)
            finally:
                after = time.perf_counter()
                stage_mj = meter.stage_mj(energy_mark)  # shared with the stages beside it
        self.state.features = features
        self.state.next_exit = index + 1
        elapsed = (after - before) * 1e3
        self.stage_ms.append(elapsed)
        share = stage_mj / len(active)
        for row in active:
            row.energy_mj += share
        executor.learn(index, elapsed, stage_mj, len(active), bool(heads), self.run_threads)
        finished = []
        for position, row in enumerate(heads):
            try:
                status = executor.status(row, index, logits[position:position + 1],
                                         (after - self.start) * 1e3)
                row.exits.append(status)
                if last or self._stops(row, index, status):
                    row.final = status
                elif row.progressive and row.on_exit is not None:
                    row.on_exit(status)
            except Exception as error:  # noqa: B902 - a row's own failure is its alone
                row.error = error
            if row.done:
                finished.append(row)
        if finished:
            self._drop(finished)
        return finished

    def settle(self) -> List[Row]:
        """Answer, from the exit reached, the rows whose budget no longer fits the next stage."""
        index = self.state.next_exit
        if index == 0 or index >= self.executor.num_exits:
            return []
        finished = [self.answer_now(row) for row in list(self.active)
                    if not self._next_fits(row, index - 1)]
        if finished:
            self._drop(finished)
        return finished

    def answer_now(self, row: Row) -> Row:
        """Answer a row from the exit it has reached (its head runs now if it has not)."""
        index = self.state.next_exit - 1
        if row.exits and row.exits[-1].exit_index == index:
            row.final = row.exits[-1]
            row.cut_short = True
            return row
        try:
            position = self.active.index(row)
            with torch.inference_mode():
                logits = self.executor.network.heads[index](
                    self.state.features[position:position + 1])
            status = self.executor.status(row, index, logits, self.elapsed_ms())
            row.exits.append(status)
            row.final = status
            row.cut_short = True
        except Exception as error:  # noqa: B902
            row.error = error
        return row

    def split_rows(self) -> List['Job']:
        """Split into one job per active row (after a failure of the batch as a whole)."""
        jobs = []
        for position, row in enumerate(self.active):
            job = Job.__new__(Job)
            job.__dict__.update(self.__dict__)
            job.rows = job.active = [row]
            job.stage_ms = list(self.stage_ms)
            job.state = type(self.state)(self.state.features[position:position + 1],
                                         self.state.next_exit, self.state.num_exits)
            jobs.append(job)
        return jobs

    def fail(self, error: BaseException) -> List[Row]:
        """Fail every active row with ``error``; return them."""
        failed = list(self.active)
        for row in failed:
            row.error = error
        self.active = []
        return failed

    def _wants_head(self, row: Row, index: int) -> bool:
        target = row.plan.target_exit
        return target is None or index == target or index in row.stop_exits or (
            row.progressive and index < target)

    @staticmethod
    def _stops(row: Row, index: int, status: ExitStatus) -> bool:
        target = row.plan.target_exit
        if target is not None and index >= target:
            return True
        if target is None or index in row.stop_exits:
            return bool(row.should_stop(status))
        return False

    def _next_fits(self, row: Row, index: int) -> bool:
        """Return False when the row's latency budget is gone before its next stage."""
        bound = row.goal.latency_ms
        if bound is None or row.plan.stop_exits is None:
            return True
        costs = self.executor.cost.setting(self.run_threads)
        split = self.executor.split(self.run_threads)
        nominal = split.plain_ms[index + 1] + split.head_ms[index + 1]
        left = bound - row.queue_ms - row.reserve_ms - self.elapsed_ms()
        return nominal * costs.latency.mean * self.executor.batch_factor(
            len(self.active)) <= left

    def _drop(self, rows: Sequence[Row]) -> None:
        keep = [position for position, row in enumerate(self.active) if not row.done]
        if len(keep) < len(self.active):
            self.state.features = self.state.features[keep] if keep else self.state.features[:0]
            self.active = [self.active[position] for position in keep]
