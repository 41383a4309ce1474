"""
The whole evaluation from one command: every scenario, every policy, the oracle, the report.

    delen_eval --output docs/eval            # ros2 run delen_ros delen_eval ...

Policies run one after another, each on a fresh InferenceServer over the same trace (same
frames, same times, same load schedule). The oracle is computed offline from a recorded pass.
Results: ``results.md`` (tables) and PNG plots in the output folder, with ``--records`` also
``records.csv`` (one row per frame and policy).
"""

import argparse
import csv
from dataclasses import asdict, dataclass, field, replace
import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from . import report
from .oracle import (exit_correctness, latency_oracle_run, LatencyTable, measure_latencies,
                     merge_tables, oracle_run)
from .runner import PolicyRun, run_policy
from .scenarios import builtin_scenarios, Scenario, SCENARIOS
from ..engine import fashion_mnist, load_checkpoint, normalize_images, resolve_model_path
from ..engine.profiling import default_profile_path, load_profile, machine_description
from ..runtime.energy import default_platform, PowerModel
from ..runtime.server import InferenceServer

__all__ = ['EvaluationConfig', 'ScenarioResult', 'evaluate', 'main']


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and where to write it."""

    output: Path
    scenarios: Sequence[str] = tuple(SCENARIOS)
    scale: float = 1.0
    model: Optional[Path] = None
    profile: Optional[Path] = None
    platform: Optional[str] = None
    data_root: Path = fashion_mnist.DEFAULT_ROOT
    policies: Optional[Sequence[str]] = None
    calibration_frames: int = 20
    plots: bool = True
    records: bool = False
    seeds: int = 1
    models: Sequence[str] = ()

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f'scale must be positive, got {self.scale}')
        if self.seeds < 1:
            raise ValueError(f'seeds must be positive, got {self.seeds}')
        if self.calibration_frames < 1:
            raise ValueError('calibration_frames must be positive')


@dataclass
class ScenarioResult:
    """
    The runs of one scenario (the oracle last) and the files written for it.

    With several seeds, ``runs`` pools every seed's frames per policy (records in the same
    order for every policy, so they pair frame by frame); ``first`` holds the first seed's
    runs alone (plotted over time).
    """

    scenario: Scenario
    runs: List[PolicyRun]
    files: List[Path] = field(default_factory=list)
    first: List[PolicyRun] = field(default_factory=list)


def pool_runs(seeded: Sequence[Sequence[PolicyRun]]) -> List[PolicyRun]:
    """Pool the runs of several seeds policy by policy (same policy order in each seed)."""
    pooled = []
    for runs in zip(*seeded):
        records = []
        for run in runs:
            offset = len(records)
            records.extend(replace(r, index=r.index + offset) for r in run.records)
        dropped: Dict[str, int] = {}
        for run in runs:
            for key, value in run.dropped.items():
                dropped[key] = dropped.get(key, 0) + value
        pooled.append(replace(runs[0], records=records, wall_s=sum(r.wall_s for r in runs),
                              dropped=dropped, probes=sum(r.probes for r in runs)))
    return pooled


def _machine() -> Dict[str, str]:
    machine = machine_description()
    keep = ('cpu', 'cpus', 'torch', 'python', 'date')
    described = {key: str(machine[key]) for key in keep}
    described['loadavg'] = ' '.join(f'{value:.2f}' for value in os.getloadavg())
    return described


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True, check=False,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def evaluate(config: EvaluationConfig) -> List[ScenarioResult]:
    """Run every scenario and policy, compute the oracle, write tables and plots."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(config.model)
    profile = load_profile(config.profile or default_profile_path(model.path))
    family = [model] + [load_checkpoint(resolve_model_path(entry)) for entry in config.models]
    accuracies = list(profile.exit_accuracy)
    for extra in family[1:]:
        accuracies += load_profile(default_profile_path(extra.path)).exit_accuracy
    platform = config.platform or default_platform()
    power = PowerModel.from_platform(platform)
    images, labels = fashion_mnist.load('test', root=config.data_root)
    scenarios = builtin_scenarios(config.scenarios, scale=config.scale)
    if config.policies:
        scenarios = [replace(s, policies=tuple(config.policies)) for s in scenarios]
    seeded = {s.name: [replace(s, seed=s.seed + k) for k in range(config.seeds)]
              for s in scenarios}
    traces = {(v.name, v.seed): v.trace(len(labels)) for variants in seeded.values()
              for v in variants}
    started = time.monotonic()
    uptime_before = _uptime()

    # Recorded pass for the oracle: per-exit correctness and per-phase latencies.
    frames = sorted({a.frame for trace in traces.values() for a in trace})
    correctness = np.concatenate([
        exit_correctness(member.network, member.config.input_spec, images, labels,
                         frames=frames) for member in family])
    phases = (False, True) if any(s.load for s in scenarios) else (False,)
    print(f'recording latencies per model, exit, thread count and load phase {phases} ...',
          file=sys.stderr)
    table: LatencyTable = merge_tables([measure_latencies(
        member.network, normalize_images(images[:64], member.config.input_spec),
        thread_counts=profile.thread_counts, phases=phases,
        frames=config.calibration_frames) for member in family])

    total = sum(s.duration_s * len(s.policies) * config.seeds for s in scenarios)
    results = []
    with tqdm(total=round(total), unit='s', desc='evaluation', mininterval=1.0,
              bar_format='{l_bar}{bar}| {n:.0f}/{total:.0f} s scenario time '
                         '[{elapsed}<{remaining}]') as bar:
        for scenario in scenarios:
            by_seed = []
            for variant in seeded[scenario.name]:
                trace = traces[(variant.name, variant.seed)]
                runs = []
                for policy in variant.policies:
                    bar.set_postfix_str(f'{variant.name}/{policy}/seed {variant.seed}')
                    server = InferenceServer(model, profile, platform=platform, threads=1,
                                             clock=time.monotonic)
                    for entry in config.models:
                        server.add_model(entry)
                    runs.append(run_policy(variant, policy, server=server, trace=trace,
                                           images=images, labels=labels,
                                           progress=bar.update))
                runs.append(oracle_run(variant, trace, table=table, correctness=correctness,
                                       labels=labels, power=power))
                runs.append(latency_oracle_run(
                    variant, trace, table=table, exit_accuracy=accuracies,
                    correctness=correctness, labels=labels, power=power))
                by_seed.append(runs)
            results.append(ScenarioResult(scenario=scenario, runs=pool_runs(by_seed),
                                          first=by_seed[0]))
    wall = time.monotonic() - started
    _write(output, results, table=table, wall_s=wall, platform=platform, power=power,
           uptime_before=uptime_before, plots=config.plots, records=config.records,
           seeds=config.seeds, scale=config.scale)
    return results


def _write(output: Path, results: Sequence[ScenarioResult], *, table: LatencyTable,
           wall_s: float, platform: str, power: PowerModel, uptime_before: str,
           plots: bool, records: bool, seeds: int = 1, scale: float = 1.0) -> None:
    lines = ['# delen_eval results', '',
             f'- wall time: {wall_s:.0f} s; machine: ' + ', '.join(
                 f'{k} {v}' for k, v in _machine().items()),
             f'- uptime before: `{uptime_before}`; after: `{_uptime()}`',
             f'- scale {scale:g}; {seeds} seed(s) per scenario, frames pooled per policy; '
             '95 % intervals: Wilson for violation and effective-accuracy rates, normal '
             'approximation for mean energy and for differences paired frame by frame '
             '(frames of one run share its load phases, so these intervals are somewhat '
             'optimistic); plots show the first seed',
             '- latency: measured by the driver, from giving each frame to the callback with '
             "its answer; deadlines are judged on it (the runtime's own figure is compared "
             'below each scenario)',
             f'- energy: ESTIMATED from the power model `{platform}` (active W x compute '
             f'time; {", ".join(f"{s.threads} thr {s.active_w:g} W" for s in power.settings)}'
             f', idle {power.idle_w:g} W), not measured', '',
             '## Recorded latencies (oracle input), median ms of the plain path per exit', '',
             '| load | threads | ' + ' | '.join(f'exit {k}' for k in range(table.num_exits))
             + ' |', '|---|---|' + '---|' * table.num_exits]
    for loaded in sorted({key[0] for key in table.samples}):
        for threads in table.thread_counts:
            lines.append(f'| {"on" if loaded else "off"} | {threads} | ' + ' | '.join(
                f'{table.median_ms(loaded, threads, k):.1f}' for k in range(table.num_exits))
                + ' |')
    rows = []
    for result in results:
        scenario = result.scenario
        lines += ['', f'## {scenario.name}', '', scenario.description, '',
                  'Policies: ' + ', '.join(run.policy for run in result.runs) + '.', '',
                  report.results_table(result.runs), '', report.comparison_table(result.runs),
                  '', 'Against the default policy, paired frame by frame:', '',
                  report.default_table(result.runs)]
        if scenario.load:
            lines += ['', 'While the CPU load is on:', '',
                      report.results_table(result.runs, loaded=True)]
        reported = report.latency_report_line(result.runs)
        if reported:
            lines += ['', reported]
        probes = [f'{run.policy}: {run.probes}' for run in result.runs if run.probes]
        if probes:
            lines += ['', 'alert_plus probes of stale settings: ' + ', '.join(probes)]
        drops = [f'{run.policy}: ' + ', '.join(f'{k} {v}' for k, v in run.dropped.items() if v)
                 for run in result.runs if any(run.dropped.values())]
        if drops:
            lines += ['', 'Frames the runtime dropped: ' + '; '.join(drops)]
        if plots:
            for kind, plot in (('latency', report.plot_latency),
                               ('choices', report.plot_choices), ('bars', report.plot_bars)):
                path = plot(scenario, result.first or result.runs,
                            output / f'{scenario.name}_{kind}.png')
                result.files.append(path)
                lines += ['', f'![{scenario.name} {kind}]({path.name})']
        for run in result.runs:
            for record in run.records:
                rows.append({'scenario': scenario.name, 'policy': run.policy,
                             **asdict(record)})
    (output / 'results.md').write_text('\n'.join(lines) + '\n')
    if records and rows:
        with open(output / 'records.csv', 'w', newline='') as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point of delen_eval."""
    parser = argparse.ArgumentParser(
        prog='delen_eval', description='Trace-driven evaluation of the exit/thread policies '
        'on the real model, real frames and a real CPU load.')
    parser.add_argument('--output', type=Path, default=Path('eval_out'),
                        help='folder for results.md, plots and records.csv')
    parser.add_argument('--scenarios', nargs='+', default=list(SCENARIOS),
                        choices=list(SCENARIOS), help='scenarios to run (default: all)')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='multiply every scenario duration (e.g. 0.3 for a smoke run)')
    parser.add_argument('--policies', nargs='+', help="override every scenario's policies")
    parser.add_argument('--seeds', type=int, default=1,
                        help='runs per scenario with different frames (pooled, with 95 %% '
                        'intervals); plots show the first')
    parser.add_argument('--model', type=Path, help='checkpoint (default: shipped)')
    parser.add_argument('--profile', type=Path, help='profile (default: beside the model)')
    parser.add_argument('--models', nargs='+', default=[],
                        help='more checkpoints (or shipped names, e.g. fmnist_small_resnet) '
                        'in the model family: every policy runs on a server holding them '
                        '(those that choose models use them), and the oracles choose model x '
                        'exit x threads')
    parser.add_argument('--platform', help='power model (default: detected)')
    parser.add_argument('--data-root', type=Path, default=fashion_mnist.DEFAULT_ROOT)
    parser.add_argument('--no-plots', action='store_true', help='tables only')
    parser.add_argument('--records', action='store_true',
                        help='also write records.csv (one row per frame and policy)')
    args = parser.parse_args(argv)
    config = EvaluationConfig(
        output=args.output, scenarios=tuple(args.scenarios), scale=args.scale,
        model=args.model, profile=args.profile, platform=args.platform,
        data_root=args.data_root, policies=args.policies, plots=not args.no_plots,
        records=args.records, seeds=args.seeds, models=tuple(args.models))
    started = time.monotonic()
    evaluate(config)
    print(f'wrote {config.output / "results.md"} in {time.monotonic() - started:.0f} s',
          file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
