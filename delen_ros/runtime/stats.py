"""Per-tenant serving statistics: counts, deadline-met ratio, latency, exits, energy, accuracy."""

import collections
from dataclasses import dataclass
import math
import threading
from typing import Dict, Optional, Tuple


__all__ = ['StatsSnapshot', 'TenantStats', 'sorted_percentile']


@dataclass(frozen=True)
class StatsSnapshot:
    """
    Statistics of one tenant at one moment.

    Counts are since the tenant was added. Latency, exit and energy figures cover the last
    ``window`` served frames (final answers only); NaN before the first one. ``accuracy`` is
    over the frames that came with a ground-truth label (NaN without any).
    ``dropped = dropped_queue + dropped_infeasible + dropped_shutdown``; ``failed``: frames
    whose serving raised (received = served + dropped + rejected + failed, once idle).
    ``model_counts``: final answers per model name, since the tenant was added.
    """

    tenant: str
    goal: str
    policy: str
    received: int
    served: int
    dropped: int
    dropped_queue: int
    dropped_infeasible: int
    dropped_shutdown: int
    rejected: int
    infeasible: int
    deadline_misses: int
    deadline_met_ratio: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    mean_exit: float
    exit_counts: Tuple[int, ...]
    energy_mean_mj: float
    energy_measured: bool
    energy_source: str
    accuracy: float
    labelled: int
    window: int
    failed: int = 0
    model_counts: Tuple[Tuple[str, int], ...] = ()


def sorted_percentile(values, q: float) -> float:
    """
    Return the linear percentile (numpy's default) of an already sorted list; NaN when empty.

    The status period reads a 1000-sample window per tenant while the worker serves: a sort
    holds the GIL about 10x shorter than ``np.percentile``.
    """
    if not values:
        return math.nan
    position = (len(values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _stamp_key(stamp_s: float) -> int:
    return int(round(stamp_s * 1e9))


class TenantStats:
    """Thread-safe accumulator behind StatsSnapshot."""

    def __init__(self, tenant: str, *, num_exits: int, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f'stats window must be positive, got {window}')
        self.tenant = tenant
        self.window = int(window)
        self._lock = threading.Lock()
        self._received = self._served = self._rejected = self._infeasible = 0
        self._failed = 0
        self._dropped: Dict[str, int] = {'queue': 0, 'infeasible': 0, 'shutdown': 0}
        self._with_deadline = self._deadline_met = 0
        self._latency = collections.deque(maxlen=window)
        self._exit = collections.deque(maxlen=window)
        self._energy = collections.deque(maxlen=window)
        self._exit_counts = [0] * num_exits
        self._model_counts: Dict[str, int] = {}
        self._energy_measured = False
        self._energy_source = ''
        self._labelled = self._correct = 0
        self._predictions: 'collections.OrderedDict[int, int]' = collections.OrderedDict()
        self._early_labels: 'collections.OrderedDict[int, int]' = collections.OrderedDict()

    def received(self) -> None:
        """Count a frame that arrived."""
        with self._lock:
            self._received += 1

    def rejected(self) -> None:
        """Count a frame refused as bad input (it also counts as received)."""
        with self._lock:
            self._received += 1
            self._rejected += 1

    def dropped(self, reason: str) -> None:
        """Count a frame dropped unanswered: 'queue' (overflow), 'infeasible' or 'shutdown'."""
        with self._lock:
            self._dropped[reason] += 1
            if reason == 'infeasible':
                self._infeasible += 1

    def failed(self) -> None:
        """Count a frame whose serving raised (its policy, the network, its answer)."""
        with self._lock:
            self._failed += 1

    def infeasible_served(self) -> None:
        """Count an infeasible frame served at the first exit anyway."""
        with self._lock:
            self._infeasible += 1

    def served(self, *, stamp_s: float, latency_ms: float, exit_index: int, energy_mj: float,
               deadline_met: Optional[bool], class_id: int, label: Optional[int],
               energy_measured: bool, energy_source: str,
               model: str = '') -> Optional[bool]:
        """Record a final answer; returns whether it was correct when the label is known."""
        key = _stamp_key(stamp_s)
        with self._lock:
            self._served += 1
            self._model_counts[model] = self._model_counts.get(model, 0) + 1
            self._latency.append(latency_ms)
            self._exit.append(exit_index)
            self._energy.append(energy_mj)
            if exit_index >= len(self._exit_counts):  # a deeper model added since
                self._exit_counts.extend([0] * (exit_index + 1 - len(self._exit_counts)))
            self._exit_counts[exit_index] += 1
            self._energy_measured = energy_measured
            self._energy_source = energy_source
            if deadline_met is not None:
                self._with_deadline += 1
                self._deadline_met += bool(deadline_met)
            if label is None:
                label = self._early_labels.pop(key, None)
            if label is None:
                self._remember(self._predictions, key, class_id)
                return None
            return self._score(class_id, label)

    def label(self, stamp_s: float, label: int) -> Optional[bool]:
        """Ground truth for a frame, before or after its answer; returns correctness if known."""
        key = _stamp_key(stamp_s)
        with self._lock:
            class_id = self._predictions.pop(key, None)
            if class_id is None:
                self._remember(self._early_labels, key, int(label))
                return None
            return self._score(class_id, int(label))

    def _remember(self, table: 'collections.OrderedDict[int, int]', key: int,
                  value: int) -> None:
        table[key] = value
        while len(table) > self.window:
            table.popitem(last=False)

    def _score(self, class_id: int, label: int) -> bool:
        correct = class_id == label
        self._labelled += 1
        self._correct += correct
        return correct

    def snapshot(self, *, goal: str = '', policy: str = '') -> StatsSnapshot:
        """Consistent copy of the statistics."""
        with self._lock:
            latency = sorted(self._latency)
            exits = list(self._exit)
            energy = list(self._energy)
            dropped = dict(self._dropped)
            counts = (self._received, self._served, self._rejected, self._infeasible,
                      self._with_deadline, self._deadline_met, self._labelled, self._correct)
            exit_counts = tuple(self._exit_counts)
            model_counts = tuple(self._model_counts.items())
            measured, source = self._energy_measured, self._energy_source
            failed = self._failed
        (received, served, rejected, infeasible, with_deadline, met, labelled,
         correct) = counts
        nan = math.nan
        return StatsSnapshot(
            tenant=self.tenant, goal=goal, policy=policy, received=received, served=served,
            dropped=sum(dropped.values()), dropped_queue=dropped['queue'],
            dropped_infeasible=dropped['infeasible'], dropped_shutdown=dropped['shutdown'],
            rejected=rejected, infeasible=infeasible, deadline_misses=with_deadline - met,
            deadline_met_ratio=met / with_deadline if with_deadline else 1.0,
            latency_mean_ms=math.fsum(latency) / len(latency) if latency else nan,
            latency_p50_ms=sorted_percentile(latency, 50),
            latency_p99_ms=sorted_percentile(latency, 99),
            mean_exit=sum(exits) / len(exits) if exits else nan, exit_counts=exit_counts,
            energy_mean_mj=sum(energy) / len(energy) if energy else nan,
            energy_measured=measured, energy_source=source,
            accuracy=correct / labelled if labelled else nan, labelled=labelled,
            window=self.window, failed=failed, model_counts=model_counts)
