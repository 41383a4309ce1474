"""Markdown tables and PNG plots (matplotlib, Agg backend) of an evaluation's runs."""

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .runner import PolicyRun  # noqa: E402
from .scenarios import Scenario  # noqa: E402
from .summary import compare, paired_difference, summarize, tenants_of  # noqa: E402

__all__ = ['DEFAULT_POLICY', 'comparison_table', 'default_table', 'latency_report_line',
           'plot_bars', 'plot_choices', 'plot_latency', 'results_table']

_REFERENCES = ('oracle', 'oracle_latency', 'app_only', 'sys_only')
_ORACLES = ('oracle', 'oracle_latency')
DEFAULT_POLICY = 'coordinated'


def _pct(value: float, digits: int = 1) -> str:
    return 'n/a' if not math.isfinite(value) else f'{100.0 * value:.{digits}f}'


def _num(value: float, digits: int = 1) -> str:
    return 'n/a' if not math.isfinite(value) else f'{value:.{digits}f}'


def _interval(low: float, high: float) -> str:
    return f' [{_pct(low)}, {_pct(high)}]' if math.isfinite(low) else ''


def _plus_minus(half: float, digits: int = 1) -> str:
    return f' ± {half:.{digits}f}' if math.isfinite(half) else ''


def _name(run: PolicyRun) -> str:
    return run.policy.split(':', 1)[0]


def results_table(runs: Sequence[PolicyRun], *, loaded: Optional[bool] = None) -> str:
    """Return one Markdown row per policy and tenant (plus 'all' with several tenants)."""
    tenants = tenants_of(runs)
    scopes = tenants + (['all'] if len(tenants) > 1 else [])
    head = ['policy', 'tenant', 'frames', 'violations % [95 % CI]', 'accuracy %',
            'eff. accuracy % [95 % CI]', 'mean latency ms', 'p99 latency ms',
            'energy mJ/frame (est.) ± 95 %', 'mean exit', 'mean threads']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for run in runs:
        for scope in scopes:
            s = summarize(run, tenant=None if scope == 'all' else scope, loaded=loaded)
            if not s.requests:
                continue
            lines.append('| ' + ' | '.join([
                _name(run), scope, str(s.requests),
                _num(s.violation_pct) + _interval(*s.violation_ci), _pct(s.accuracy),
                _pct(s.effective_accuracy) + _interval(*s.effective_accuracy_ci),
                _num(s.latency_mean_ms), _num(s.latency_p99_ms),
                _num(s.energy_mj) + _plus_minus(s.energy_half_mj), _num(s.mean_exit, 2),
                _num(s.mean_threads, 2)]) + ' |')
    return '\n'.join(lines)


def comparison_table(runs: Sequence[PolicyRun]) -> str:
    """Return each policy against the oracle, app_only and sys_only (all tenants)."""
    by_name = {_name(run): run for run in runs}
    references = [name for name in _REFERENCES if name in by_name]
    head = ['policy']
    for name in references:
        if name in _ORACLES:
            head += [f'eff. accuracy gap to {name} pp', f'energy vs {name} %']
        else:
            head += [f'error reduction vs {name} %', f'energy reduction vs {name} %']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for run in runs:
        if _name(run) in _ORACLES:
            continue
        summary = summarize(run)
        cells = [_name(run)]
        for name in references:
            result = compare(summary, summarize(by_name[name]))
            if name in _ORACLES:
                cells += [_num(result.accuracy_gap_pp), _pct(result.energy_excess)]
            else:
                cells += [_pct(result.error_reduction), _pct(result.energy_reduction)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def default_table(runs: Sequence[PolicyRun], default: str = DEFAULT_POLICY) -> str:
    """Return every live policy against the default, paired on the same frames (all tenants)."""
    by_name = {_name(run): run for run in runs}
    if default not in by_name:
        return ''
    head = ['policy', 'eff. accuracy vs default pp ± 95 %', 'energy vs default % ± 95 %',
            'violations vs default pp ± 95 %', 'beats the default?']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for run in runs:
        name = _name(run)
        if name == default:
            continue
        d = paired_difference(run, by_name[default])
        verdict = 'yes' if d.beats_default else 'no'
        if name in _ORACLES:
            verdict += ' (offline bound)'
        lines.append(f'| {name} | {d.accuracy_pp:+.1f} ± {d.accuracy_half_pp:.1f} | '
                     f'{d.energy_pct:+.1f} ± {d.energy_half_pct:.1f} | '
                     f'{d.violation_pp:+.1f} ± {d.violation_half_pp:.1f} | {verdict} |')
    return '\n'.join(lines)


def latency_report_line(runs: Sequence[PolicyRun]) -> str:
    """Return how far each live policy's runtime-reported latency was from the measured one."""
    parts = []
    for run in runs:
        if _name(run) in _ORACLES:
            continue
        errors = [r.reported_latency_ms - r.latency_ms for r in run.records
                  if r.answered and math.isfinite(r.reported_latency_ms)]
        if errors:
            low, mid, high = np.percentile(errors, (1, 50, 99))
            parts.append(f'{_name(run)} {mid:+.2f} ({low:+.2f} / {high:+.2f})')
    if not parts:
        return ''
    return ("The runtime's own `latency_ms` minus the measured latency, ms, median "
            '(1st / 99th percentile): ' + '; '.join(parts) + '.')


def _shade_load(axis, scenario: Scenario) -> None:
    for phase in scenario.load:
        axis.axvspan(phase.start_s, phase.end_s, color='tab:red', alpha=0.08, lw=0)


def _save(figure, title: str, path: Path) -> Path:
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_latency(scenario: Scenario, runs: Sequence[PolicyRun], path: Path) -> Path:
    """Plot each policy's latency per frame against its deadline over time (log scale)."""
    live = [run for run in runs if _name(run) not in _ORACLES]
    figure, axes = plt.subplots(len(live), 1, figsize=(9, 1.6 * len(live) + 0.8),
                                sharex=True, squeeze=False)
    for axis, run in zip(axes[:, 0], live):
        _shade_load(axis, scenario)
        answered = [r for r in run.records if r.answered]
        times = np.array([r.time_s for r in answered])
        latency = np.array([r.latency_ms for r in answered])
        late = np.array([r.violation for r in answered], dtype=bool)
        if len(times):
            axis.scatter(times[~late], latency[~late], s=3, color='tab:blue', label='in bound')
            axis.scatter(times[late], latency[late], s=5, color='tab:red', label='violation')
        missing = [r.time_s for r in run.records if not r.answered]
        if missing:
            axis.scatter(missing, np.full(len(missing), 0.6), marker='x', s=8, color='k',
                         label='no answer')
        deadlines = sorted({(r.time_s, r.deadline_ms) for r in run.records
                            if r.deadline_ms is not None})
        if deadlines:
            axis.step([t for t, _ in deadlines], [d for _, d in deadlines], where='post',
                      color='k', lw=0.8, ls='--', label='deadline')
        axis.set_yscale('log')
        axis.set_ylim(0.5, max(2000.0, float(np.nanmax(latency)) * 1.2 if len(latency)
                               else 2000.0))
        axis.set_ylabel(f'{_name(run)}\nms', fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6, loc='upper left', ncol=4)
    axes[-1, 0].set_xlabel('scenario time (s); red band: CPU load on')
    return _save(figure, f'{scenario.name}: latency per frame vs its bound', path)


def plot_choices(scenario: Scenario, runs: Sequence[PolicyRun], path: Path) -> Path:
    """Plot the exit and thread count each policy chose per frame over time."""
    figure, axes = plt.subplots(len(runs), 1, figsize=(9, 1.4 * len(runs) + 0.8),
                                sharex=True, squeeze=False)
    for axis, run in zip(axes[:, 0], runs):
        _shade_load(axis, scenario)
        answered = [r for r in run.records if r.answered]
        times = [r.time_s for r in answered]
        axis.scatter(times, [r.exit_index for r in answered], s=3, color='tab:blue',
                     label='exit')
        twin = axis.twinx()
        twin.scatter(times, [r.threads + 0.15 for r in answered], s=3, color='tab:orange',
                     label='threads')
        twin.set_ylim(0.5, 2.8)
        twin.set_yticks([1, 2])
        twin.tick_params(labelsize=7, colors='tab:orange')
        top = max([3] + [r.exit_index for r in answered])
        axis.set_ylim(-0.5, top + 0.5)
        axis.set_yticks(range(top + 1))
        axis.set_ylabel(f'{_name(run)}\nexit', fontsize=8)
        axis.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel('scenario time (s); blue: exit (left; with a model family, exits '
                           'count on across models: 4 = the traditional model), orange: '
                           'threads (right)')
    return _save(figure, f'{scenario.name}: exit and thread choice per frame', path)


def plot_bars(scenario: Scenario, runs: Sequence[PolicyRun], path: Path) -> Path:
    """Plot per-policy bars: violations, effective accuracy, energy per frame."""
    names = [_name(run) for run in runs]
    summaries = [summarize(run) for run in runs]
    panels: List[Dict] = [
        {'title': 'goal violations %', 'values': [s.violation_pct for s in summaries]},
        {'title': 'effective accuracy %',
         'values': [100 * s.effective_accuracy for s in summaries]},
        {'title': 'energy mJ/frame (estimated)', 'values': [s.energy_mj for s in summaries]},
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(11, 3.2))
    colors = ['tab:gray' if n in _ORACLES else 'tab:green' if n.startswith('alert')
              else 'tab:blue' for n in names]
    for axis, panel in zip(axes, panels):
        axis.bar(range(len(names)), panel['values'], color=colors)
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names, rotation=45, ha='right', fontsize=7)
        axis.set_title(panel['title'], fontsize=9)
        axis.tick_params(labelsize=7)
    return _save(figure, f'{scenario.name}: per policy (all tenants)', path)
