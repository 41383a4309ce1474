"""
What the demo prints and plots, from the messages a robot would receive (no ROS import).

Rows come from each tenant's last TenantStatus; the timeline from its InferenceResults.
"""

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

__all__ = ['ResultPoint', 'StatusRow', 'format_bounds', 'format_table', 'plot_timeline']


@dataclass(frozen=True)
class StatusRow:
    """One tenant's totals (fields of delen_ros/msg/TenantStatus)."""

    tenant: str
    goal: str
    frames_received: int
    frames_served: int
    frames_dropped: int
    frames_rejected: int
    deadline_met_ratio: float
    accuracy: float
    labelled_frames: int
    mean_exit: float
    energy_mean_mj: float
    energy_measured: bool
    # (base, effective) bounds in force, 0 = none; effective = base with the governor's
    # adjustment applied.
    latency_bound_ms: Tuple[float, float] = (0.0, 0.0)
    min_accuracy: Tuple[float, float] = (0.0, 0.0)
    energy_bound_mj: Tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class ResultPoint:
    """One final answer: when it came, how late, under which bound, from which exit."""

    t_s: float
    latency_ms: float
    deadline_ms: float
    exit_index: int


def _pct(value: float) -> str:
    return 'n/a' if math.isnan(value) else f'{100 * value:.1f} %'


def format_bounds(row: StatusRow) -> str:
    """Return 'latency 16.7 -> 25 ms, energy 20 -> 8 mJ': base -> effective, bounds in force."""
    parts = []
    for name, (base, effective), unit in (('latency', row.latency_bound_ms, ' ms'),
                                          ('min_accuracy', row.min_accuracy, ''),
                                          ('energy', row.energy_bound_mj, ' mJ')):
        if base > 0 or effective > 0:
            parts.append(f'{name} {base:.3g} \u2192 {effective:.3g}{unit}')
    return ', '.join(parts) or 'none'


def format_table(rows: Sequence[StatusRow]) -> str:
    """Render the per-tenant summary as a Markdown table."""
    lines = ['| tenant | goal | frames | served | dropped | rejected | deadline met | accuracy '
             '| mean exit | energy/frame | bounds (base \u2192 effective) |', '|' + '---|' * 11]
    for row in rows:
        energy = 'n/a' if math.isnan(row.energy_mean_mj) else (
            f'{row.energy_mean_mj:.2f} mJ '
            f'({"measured" if row.energy_measured else "estimated"})')
        mean_exit = 'n/a' if math.isnan(row.mean_exit) else f'{row.mean_exit:.2f}'
        lines.append(
            f'| {row.tenant} | {row.goal} | {row.frames_received} | {row.frames_served} | '
            f'{row.frames_dropped} | {row.frames_rejected} | {_pct(row.deadline_met_ratio)} | '
            f'{_pct(row.accuracy)} ({row.labelled_frames} labelled) | {mean_exit} | {energy} | '
            f'{format_bounds(row)} |')
    return '\n'.join(lines)


def plot_timeline(points: Mapping[str, List[ResultPoint]], path: Path, *,
                  events: Sequence[Dict[str, object]] = ()) -> Path:
    """Plot latency against its bound and the exit chosen over time, one row per tenant."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    tenants = sorted(points)
    figure, axes = pyplot.subplots(len(tenants) or 1, 2, figsize=(12, 3 * max(len(tenants), 1)),
                                   squeeze=False)
    for row, tenant in enumerate(tenants):
        series = points[tenant]
        times = [p.t_s for p in series]
        latency_axis, exit_axis = axes[row]
        latency_axis.plot(times, [p.latency_ms for p in series], '.', markersize=3,
                          label='latency')
        latency_axis.step(times, [p.deadline_ms or float('nan') for p in series], where='post',
                          color='red', label='bound')
        latency_axis.set_ylabel('ms')
        latency_axis.set_title(f'{tenant}: latency vs bound')
        latency_axis.legend(loc='upper right')
        exit_axis.plot(times, [p.exit_index for p in series], '.', markersize=3)
        exit_axis.set_ylabel('exit')
        exit_axis.set_title(f'{tenant}: exit chosen')
        for axis in (latency_axis, exit_axis):
            axis.set_xlabel('time (s)')
            for event in events:
                axis.axvline(float(event['t_s']), color='grey', linestyle=':', linewidth=1)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
