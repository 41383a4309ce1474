"""
Per-policy, per-tenant figures of a run, and comparisons against the oracle and baselines.

Accuracy comes in two forms: ``accuracy`` over the answers given, and ``effective_accuracy``
over every frame, where a late, over-budget or missing answer counts as wrong (ALERT's
convention, USENIX ATC 2020 Sec. 4.3). Errors compared between policies are effective errors.
"""

from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .runner import PolicyRun, RequestRecord

__all__ = ['Comparison', 'Difference', 'Summary', 'compare', 'mean_interval',
           'paired_difference', 'summarize', 'wilson_interval']


@dataclass(frozen=True)
class Summary:
    """Figures of one policy over a set of frames (one tenant, or all; one phase, or all)."""

    policy: str
    tenant: str
    requests: int
    answered: int
    violation_pct: float
    accuracy: float
    effective_accuracy: float
    latency_mean_ms: float
    latency_p99_ms: float
    energy_mj: float
    mean_exit: float
    mean_threads: float
    effective_accuracy_ci: Tuple[float, float] = (math.nan, math.nan)
    violation_ci: Tuple[float, float] = (math.nan, math.nan)
    energy_half_mj: float = math.nan

    @property
    def effective_error(self) -> float:
        """Return 1 - effective accuracy."""
        return 1.0 - self.effective_accuracy


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def summarize(run: PolicyRun, *, tenant: Optional[str] = None,
              loaded: Optional[bool] = None) -> Summary:
    """Summarize a run over one tenant (None: all) and one load phase (None: both)."""
    records: List[RequestRecord] = [
        r for r in run.records if (tenant is None or r.tenant == tenant)
        and (loaded is None or r.loaded == loaded)]
    answered = [r for r in records if r.answered]
    latencies = [r.latency_ms for r in answered]
    count = len(records)
    violations = sum(r.violation for r in records)
    return Summary(
        policy=run.policy, tenant=tenant or 'all', requests=count, answered=len(answered),
        violation_pct=100.0 * violations / count if count else math.nan,
        accuracy=_mean([r.correct for r in answered]),
        effective_accuracy=_mean([r.effective_correct for r in records]),
        latency_mean_ms=_mean(latencies),
        latency_p99_ms=float(np.percentile(latencies, 99)) if latencies else math.nan,
        energy_mj=_mean([r.energy_mj for r in answered]),
        mean_exit=_mean([r.exit_index for r in answered]),
        mean_threads=_mean([r.threads for r in answered]),
        effective_accuracy_ci=wilson_interval(sum(r.effective_correct for r in records), count),
        violation_ci=wilson_interval(violations, count),
        energy_half_mj=mean_interval([r.energy_mj for r in answered])[1])


@dataclass(frozen=True)
class Comparison:
    """
    One policy against a reference policy on the same frames.

    ``error_reduction``: 1 - error / reference error (ALERT reports this vs app-only and
    sys-only); ``energy_reduction``: 1 - energy / reference energy; ``accuracy_gap_pp``:
    reference effective accuracy minus this one, in percentage points.
    """

    policy: str
    reference: str
    error_reduction: float
    energy_reduction: float
    accuracy_gap_pp: float
    energy_excess: float


def _ratio(value: float, reference: float) -> float:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0.0:
        return math.nan
    return value / reference


def compare(summary: Summary, reference: Summary) -> Comparison:
    """Compare two summaries of the same frames."""
    error = _ratio(summary.effective_error, reference.effective_error)
    energy = _ratio(summary.energy_mj, reference.energy_mj)
    return Comparison(
        policy=summary.policy, reference=reference.policy,
        error_reduction=1.0 - error if math.isfinite(error) else math.nan,
        energy_reduction=1.0 - energy if math.isfinite(energy) else math.nan,
        accuracy_gap_pp=100.0 * (reference.effective_accuracy - summary.effective_accuracy),
        energy_excess=energy - 1.0 if math.isfinite(energy) else math.nan)


def tenants_of(runs: Sequence[PolicyRun]) -> List[str]:
    """Return the tenant names of a scenario's runs, in order of first appearance."""
    names: Dict[str, None] = {}
    for run in runs:
        for record in run.records:
            names.setdefault(record.tenant, None)
    return list(names)


Z95 = 1.959963984540054


def wilson_interval(successes: float, count: int, z: float = Z95) -> Tuple[float, float]:
    """Return the Wilson score interval of a proportion (both ends in [0, 1])."""
    if count <= 0:
        return math.nan, math.nan
    p = successes / count
    denominator = 1.0 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    return max(centre - half, 0.0), min(centre + half, 1.0)


def mean_interval(values: Sequence[float], z: float = Z95) -> Tuple[float, float]:
    """Return the mean and the half-width of its normal-approximation 95 % interval."""
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not len(data):
        return math.nan, math.nan
    if len(data) < 2:
        return float(data.mean()), math.nan
    return float(data.mean()), float(z * data.std(ddof=1) / math.sqrt(len(data)))


@dataclass(frozen=True)
class Difference:
    """
    A policy against the default on the same frames (paired), with 95 % intervals.

    ``accuracy_pp``: effective accuracy of ``policy`` minus the default's (points), with the
    half-width of its interval; ``energy_pct``: energy per answered frame relative to the
    default's (%), with its half-width (delta method); ``violation_pp``: violation rate
    difference (points). ``beats_default``: higher effective accuracy by more than the
    interval, less energy and no more violations (the issue's test).
    """

    policy: str
    default: str
    accuracy_pp: float
    accuracy_half_pp: float
    energy_pct: float
    energy_half_pct: float
    violation_pp: float
    violation_half_pp: float

    @property
    def beats_default(self) -> bool:
        """Return True when the policy dominates the default beyond the intervals."""
        return (self.accuracy_pp - self.accuracy_half_pp > 0.0 and self.energy_pct < 0.0
                and self.violation_pp <= 0.0)


def paired_difference(run: PolicyRun, default: PolicyRun, *,
                      tenant: Optional[str] = None) -> Difference:
    """Compare two runs of the same trace frame by frame (records in the same order)."""
    pairs = [(a, b) for a, b in zip(run.records, default.records)
             if tenant is None or a.tenant == tenant]
    accuracy = mean_interval([float(a.effective_correct) - float(b.effective_correct)
                              for a, b in pairs])
    violation = mean_interval([float(a.violation) - float(b.violation) for a, b in pairs])
    energy_a = [a.energy_mj for a, _ in pairs if a.answered]
    energy_b = [b.energy_mj for _, b in pairs if b.answered]
    mean_a, half_a = mean_interval(energy_a)
    mean_b, half_b = mean_interval(energy_b)
    if mean_b > 0 and math.isfinite(mean_a):
        ratio = mean_a / mean_b
        half = ratio * math.sqrt((half_a / mean_a) ** 2 + (half_b / mean_b) ** 2) \
            if mean_a > 0 else math.nan
    else:
        ratio = half = math.nan
    return Difference(
        policy=run.policy, default=default.policy, accuracy_pp=100 * accuracy[0],
        accuracy_half_pp=100 * accuracy[1], energy_pct=100 * (ratio - 1.0),
        energy_half_pct=100 * half, violation_pp=100 * violation[0],
        violation_half_pp=100 * violation[1])
