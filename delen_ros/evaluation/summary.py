"""
Per-policy, per-tenant figures of a run, and comparisons against the oracle and baselines.

Accuracy comes in two forms: ``accuracy`` over the answers given, and ``effective_accuracy``
over every frame, where a late, over-budget or missing answer counts as wrong (ALERT's
convention, USENIX ATC 2020 Sec. 4.3). Errors compared between policies are effective errors.
"""

from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from .runner import PolicyRun, RequestRecord

__all__ = ['Comparison', 'Summary', 'compare', 'summarize']


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
    return Summary(
        policy=run.policy, tenant=tenant or 'all', requests=count, answered=len(answered),
        violation_pct=100.0 * sum(r.violation for r in records) / count if count else math.nan,
        accuracy=_mean([r.correct for r in answered]),
        effective_accuracy=_mean([r.effective_correct for r in records]),
        latency_mean_ms=_mean(latencies),
        latency_p99_ms=float(np.percentile(latencies, 99)) if latencies else math.nan,
        energy_mj=_mean([r.energy_mj for r in answered]),
        mean_exit=_mean([r.exit_index for r in answered]),
        mean_threads=_mean([r.threads for r in answered]))


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
