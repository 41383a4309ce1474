"""
What the demo prints and plots, from the messages a robot would receive (no ROS import).

Rows come from each tenant's last TenantStatus; the timeline from its InferenceResults.
"""

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

__all__ = ['Phase', 'ResultPoint', 'StatusRow', 'format_bounds', 'format_phase_table',
           'format_table', 'plot_timeline', 'traditional_models']


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
    """One final answer: when it came, how late, under which bound, from which model and exit."""

    t_s: float
    latency_ms: float
    deadline_ms: float
    exit_index: int
    threads: int = 1
    energy_mj: float = math.nan
    deadline_met: bool = True
    model: str = ''
    num_exits: int = 4

    @property
    def traditional(self) -> bool:
        """Return True for an answer of a single-exit (traditional) model."""
        return self.num_exits == 1


@dataclass(frozen=True)
class Phase:
    """A named span of the demo (e.g. the CPU contention), in seconds from its start."""

    name: str
    start_s: float
    end_s: float
    contention: bool = False


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


def traditional_models(points: Mapping[str, List[ResultPoint]]) -> List[str]:
    """Return the names of the traditional models that answered, sorted."""
    return sorted({p.model for series in points.values() for p in series if p.traditional})


def format_phase_table(points: Mapping[str, List[ResultPoint]],
                       phases: Sequence[Phase]) -> str:
    """Render each tenant's answers before, during and after the contention (Markdown)."""
    names = traditional_models(points)
    header = f'traditional: {" / ".join(names)}' if len(names) > 1 else 'traditional model'
    lines = [f'| tenant | phase | answers | in bound | anytime exits 0/1/2/3 | {header} '
             '| mean threads | p99 latency | energy/frame (est.) |', '|' + '---|' * 9]
    for tenant in sorted(points):
        for phase in phases:
            chosen = [p for p in points[tenant] if phase.start_s <= p.t_s < phase.end_s]
            if not chosen:
                lines.append(f'| {tenant} | {phase.name} | 0 | n/a | n/a | n/a | n/a | n/a '
                             '| n/a |')
                continue
            count = len(chosen)
            anytime = [p for p in chosen if not p.traditional]
            exits = [sum(p.exit_index == k for p in anytime) for k in range(4)]
            traditional = count - len(anytime)
            per_model = ' / '.join(str(sum(p.traditional and p.model == name for p in chosen))
                                   for name in names)
            latencies = sorted(p.latency_ms for p in chosen)
            p99 = latencies[min(int(math.ceil(0.99 * count)) - 1, count - 1)]
            energies = [p.energy_mj for p in chosen if not math.isnan(p.energy_mj)]
            energy = f'{sum(energies) / len(energies):.1f} mJ' if energies else 'n/a'
            lines.append(
                f'| {tenant} | {phase.name} | {count} | '
                f'{100 * sum(p.deadline_met for p in chosen) / count:.1f} % | '
                f'{"/".join(str(e) for e in exits)} | '
                f'{per_model if len(names) > 1 else traditional} '
                f'({100 * traditional / count:.0f} %) | '
                f'{sum(p.threads for p in chosen) / count:.2f} | {p99:.1f} ms | {energy} |')
    return '\n'.join(lines)


def _short(model: str) -> str:
    return model.removeprefix('fmnist_').removesuffix('_resnet')


def plot_timeline(points: Mapping[str, List[ResultPoint]], path: Path, *,
                  events: Sequence[Dict[str, object]] = (),
                  phases: Sequence[Phase] = ()) -> Path:
    """
    Plot, per tenant, latency against its bound and the model, exit and threads chosen.

    Answers of each traditional (single-exit) model are drawn on a row of their own above the
    anytime model's exits. Phases marked ``contention`` are shaded.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    tenants = sorted(points)
    names = traditional_models(points) or ['']
    model_row = {name: 4 + i for i, name in enumerate(names)}
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
        exit_axis.plot(times, [model_row[p.model] if p.traditional else p.exit_index
                               for p in series], '.', markersize=3, color='tab:blue',
                       label='exit')
        exit_axis.set_ylim(-0.3, 3.3 + len(names))
        exit_axis.set_yticks(range(4 + len(names)))
        exit_axis.set_yticklabels(['0', '1', '2', '3', *(_short(n) or 'trad.' for n in names)])
        exit_axis.set_ylabel('anytime exit / traditional model', color='tab:blue')
        exit_axis.set_title(f'{tenant}: model, exit and threads chosen')
        thread_axis = exit_axis.twinx()
        thread_axis.plot(times, [p.threads + 0.1 for p in series], '.', markersize=2,
                         color='tab:orange', label='threads')
        thread_axis.set_ylim(0.5, 2.8)
        thread_axis.set_yticks([1, 2])
        thread_axis.set_ylabel('threads', color='tab:orange')
        for axis in (latency_axis, exit_axis):
            axis.set_xlabel('time (s)' + ('; shaded: CPU contention' if phases else ''))
            for phase in phases:
                if phase.contention:
                    axis.axvspan(phase.start_s, phase.end_s, color='tab:red', alpha=0.1, lw=0)
            for event in events:
                axis.axvline(float(event['t_s']), color='grey', linestyle=':', linewidth=1)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
