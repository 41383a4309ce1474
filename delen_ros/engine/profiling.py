"""Per-exit profiles (latency per thread count, FLOPs, accuracy, calibration) the runtime reads."""

import argparse
from dataclasses import dataclass
import datetime
import hashlib
import json
import math
import os
from pathlib import Path
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import fashion_mnist
from .calibration import (calibrated_confidence, fit_temperature, reliability_bins,
                          threshold_curve)
from .checkpoint import CheckpointError, default_model_path, load_checkpoint
from .folding import serving_network
from .metrics import exit_accuracy, exit_flops, exit_logits, normalize_images, stage_flops
from .network import MultiExitNetwork
from .training import split_train_validation

__all__ = ['PROFILE_FORMAT', 'ModelProfile', 'ProfileError', 'default_profile_path',
           'format_profile_table', 'load_profile', 'machine_description', 'main',
           'profile_model']

PROFILE_FORMAT = 'delen_ros.profile/1'
THRESHOLDS = [round(0.05 * i, 2) for i in range(20)] + [0.99]


class ProfileError(ValueError):
    """A profile file is missing or malformed (one line, naming the file)."""


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary of one measurement, in milliseconds."""

    median: float
    p95: float
    p99: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> 'LatencyStats':
        """Summarize raw samples."""
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(*(float(np.percentile(values, q)) for q in (50, 95, 99)))


class ModelProfile:
    """Read-only view of a profile file: what each exit costs and how accurate it is."""

    def __init__(self, data: Dict[str, Any], *, path: Optional[Path] = None) -> None:
        where = path or '<profile>'
        try:
            if data.get('format') != PROFILE_FORMAT:
                raise ValueError(f'format {data.get("format")!r}, expected {PROFILE_FORMAT!r}')
            self.thread_counts: Tuple[int, ...] = tuple(int(t) for t in data['thread_counts'])
            exits = data['exits']
            self.exit_accuracy: Tuple[float, ...] = tuple(float(e['accuracy']) for e in exits)
            self.temperature: Tuple[float, ...] = tuple(float(e['temperature']) for e in exits)
            self.flops: Tuple[int, ...] = tuple(int(e['flops']) for e in exits)
            self.stage_flops: Tuple[int, ...] = tuple(int(e['stage_flops']) for e in exits)
            self._latency = [{int(t): LatencyStats(**s) for t, s in e['latency_ms'].items()}
                             for e in exits]
            self._stage_latency = [
                {int(t): LatencyStats(**s) for t, s in e['stage_latency_ms'].items()}
                for e in exits]
            self._reliability = [e['reliability'] for e in exits]
            self.threshold_curves = [e['confidence_thresholds'] for e in exits]
            if not exits or not self.thread_counts:
                raise ValueError('no exits or no thread counts')
            for index, entry in enumerate(self._latency + self._stage_latency):
                if set(entry) != set(self.thread_counts):
                    raise ValueError(f'latency entry {index} lacks some thread counts')
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ProfileError(f'{where}: malformed profile: {error}') from None
        self.machine: Dict[str, Any] = dict(data.get('machine', {}))
        self.model: Dict[str, Any] = dict(data.get('model', {}))
        self.data = data
        self.path = path

    @property
    def num_exits(self) -> int:
        """Return the number of exits profiled."""
        return len(self.exit_accuracy)

    @property
    def max_accuracy(self) -> float:
        """Return the best accuracy any exit reaches."""
        return max(self.exit_accuracy)

    def _check(self, exit_index: int, threads: int) -> None:
        if not 0 <= exit_index < self.num_exits:
            raise IndexError(f'exit {exit_index} out of range 0..{self.num_exits - 1}')
        if threads not in self.thread_counts:
            raise KeyError(f'no profile for {threads} threads (have {self.thread_counts})')

    def stage_latency_ms(self, exit_index: int, threads: int, stat: str = 'median') -> float:
        """Latency of stage k plus exit head k alone, when run stage by stage."""
        self._check(exit_index, threads)
        return getattr(self._stage_latency[exit_index][threads], stat)

    def progressive_latency_ms(self, exit_index: int, threads: int,
                               stat: str = 'median') -> float:
        """Latency to reach exit k stage by stage, evaluating every head on the way."""
        return sum(self.stage_latency_ms(k, threads, stat) for k in range(exit_index + 1))

    def exit_latency_ms(self, exit_index: int, threads: int, stat: str = 'median') -> float:
        """Latency to reach exit k evaluating only its head (the plain path to that exit)."""
        self._check(exit_index, threads)
        return getattr(self._latency[exit_index][threads], stat)

    def accuracy_at_confidence(self, exit_index: int, confidence: float) -> float:
        """Return the expected accuracy of an answer of exit k at this calibrated confidence."""
        for entry in self._reliability[exit_index]:
            inside = entry['low'] <= confidence < entry['high'] or (
                entry['high'] >= 1.0 and confidence >= entry['low'])
            if inside:
                if entry['count'] >= 20 and not math.isnan(entry['accuracy']):
                    return float(entry['accuracy'])
                break
        return float(min(max(confidence, 0.0), 1.0))


def default_profile_path(model_path: Union[str, Path, None] = None) -> Path:
    """Return the profile path beside a model file (default: the shipped model's)."""
    model_path = Path(model_path) if model_path is not None else default_model_path()
    return model_path.with_name(model_path.stem + '.profile.json')


def load_profile(path: Union[str, Path, None] = None) -> ModelProfile:
    """Load a profile (default: the shipped model's); raise ProfileError naming the file."""
    path = Path(path) if path is not None else default_profile_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f'{path}: profile file not found') from None
    except (OSError, ValueError) as error:
        raise ProfileError(f'{path}: not a readable JSON profile: {error}') from None
    if not isinstance(data, dict):
        raise ProfileError(f'{path}: malformed profile: top level is not an object')
    return ModelProfile(data, path=path)


def machine_description() -> Dict[str, Any]:
    """Describe this machine (CPU model, cpus, system, Python, torch, date) for reports."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return {
        'hostname': platform.node(), 'cpu': cpu, 'cpus': os.cpu_count(),
        'system': f'{platform.system()} {platform.release()}',
        'python': platform.python_version(), 'torch': str(torch.__version__),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }


def _time_latencies(network: MultiExitNetwork, inputs: torch.Tensor, threads: int,
                    runs: int) -> Tuple[List[LatencyStats], List[LatencyStats]]:
    torch.set_num_threads(threads)
    stage_samples = [[] for _ in range(network.num_exits)]
    exit_samples = [[] for _ in range(network.num_exits)]
    for run in range(runs + 10):  # the first runs warm caches and allocators
        x = inputs[run % len(inputs)].unsqueeze(0)
        state = network.begin(x)
        for index in range(network.num_exits):
            start = time.perf_counter()
            network.step(state)
            if run >= 10:
                stage_samples[index].append(1e3 * (time.perf_counter() - start))
        for index in range(network.num_exits):
            start = time.perf_counter()
            network.run_to(network.begin(x), index)
            if run >= 10:
                exit_samples[index].append(1e3 * (time.perf_counter() - start))
    return ([LatencyStats.of(s) for s in stage_samples],
            [LatencyStats.of(s) for s in exit_samples])


def profile_model(model_path: Union[str, Path, None] = None, *,
                  thread_counts: Optional[Sequence[int]] = None, runs: int = 200,
                  data_root: Path = fashion_mnist.DEFAULT_ROOT) -> Dict[str, Any]:
    """Measure a checkpoint and return its profile as plain data (see ModelProfile)."""
    model = load_checkpoint(model_path)
    network, spec = model.network, model.config.input_spec
    if spec.size != (28, 28) or spec.channels != 1:
        raise ValueError('the profiler evaluates on Fashion-MNIST: it needs a 1x28x28 model')
    thread_counts = list(thread_counts or range(1, (os.cpu_count() or 1) + 1))
    saved_threads = torch.get_num_threads()

    train_images, train_labels = fashion_mnist.load('train', root=data_root)
    _, val_index = split_train_validation(int(model.metrics.get('training', {}).get('seed', 0)))
    val_logits = exit_logits(network, normalize_images(train_images[val_index], spec))
    val_labels = torch.from_numpy(train_labels[val_index])
    test_images, test_labels = fashion_mnist.load('test', root=data_root)
    test_inputs = normalize_images(test_images, spec)
    test_logits = exit_logits(network, test_inputs)
    accuracy = exit_accuracy(test_logits, torch.from_numpy(test_labels))

    served, _ = serving_network(network)  # timed as served
    timings = {t: _time_latencies(served, test_inputs[:256], t, runs) for t in thread_counts}
    torch.set_num_threads(saved_threads)
    flops, per_stage = exit_flops(network, spec), stage_flops(network, spec)
    params = [sum(p.numel() for stage in network.stages[:k + 1] for p in stage.parameters())
              + sum(p.numel() for p in network.heads[k].parameters())
              for k in range(network.num_exits)]
    exits = []
    for k in range(network.num_exits):
        temperature = fit_temperature(val_logits[k], val_labels)
        confidence = calibrated_confidence(val_logits[k], temperature)
        correct = val_logits[k].argmax(1) == val_labels
        exits.append({
            'index': k, 'flops': flops[k], 'stage_flops': per_stage[k], 'params': params[k],
            'accuracy': accuracy[k], 'temperature': temperature,
            'latency_ms': {str(t): vars(timings[t][1][k]) for t in thread_counts},
            'stage_latency_ms': {str(t): vars(timings[t][0][k]) for t in thread_counts},
            'confidence_thresholds': threshold_curve(confidence, correct, THRESHOLDS),
            'reliability': reliability_bins(confidence, correct),
        })
    path = Path(model.path)
    return {
        'format': PROFILE_FORMAT,
        'model': {'file': path.name, 'arch': model.config.arch,
                  'sha256': hashlib.sha256(path.read_bytes()).hexdigest()},
        'machine': machine_description(), 'runs': runs, 'batch_size': 1,
        'thread_counts': thread_counts,
        'accuracy_split': 'fashion-mnist test (10k)',
        'calibration_split': 'fashion-mnist validation (5k held out of train)',
        'exits': exits,
    }


def format_profile_table(profile: ModelProfile) -> str:
    """Human-readable per-exit table (Markdown)."""
    threads = profile.thread_counts
    head = ['exit', 'MFLOPs', 'params', 'acc %', 'T'] + [
        f'{t} thr median / p95 / p99 ms' for t in threads]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for k in range(profile.num_exits):
        entry = profile.data['exits'][k]
        cells = [str(k), f'{profile.flops[k] / 1e6:.1f}', f'{entry["params"] / 1e6:.2f}M',
                 f'{100 * profile.exit_accuracy[k]:.2f}', f'{profile.temperature[k]:.2f}']
        cells += [' / '.join(f'{profile.exit_latency_ms(k, t, s):.2f}'
                             for s in ('median', 'p95', 'p99')) for t in threads]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point of delen-profile."""
    parser = argparse.ArgumentParser(
        prog='delen-profile', description='Profile every exit of a multi-exit checkpoint.')
    parser.add_argument('model', nargs='?', type=Path, help='checkpoint (default: shipped)')
    parser.add_argument('--output', type=Path, help='profile JSON (default: beside the model)')
    parser.add_argument('--threads', type=int, nargs='+', help='thread counts (default: 1..cpus)')
    parser.add_argument('--runs', type=int, default=200, help='timed runs per thread count')
    parser.add_argument('--data-root', type=Path, default=fashion_mnist.DEFAULT_ROOT)
    args = parser.parse_args(argv)
    try:
        data = profile_model(args.model, thread_counts=args.threads, runs=args.runs,
                             data_root=args.data_root)
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f'delen-profile: {error}', file=sys.stderr)
        return 2
    output = args.output or default_profile_path(args.model)
    output.write_text(json.dumps(data, indent=1) + '\n')
    print(format_profile_table(ModelProfile(data, path=output)))
    print(f'wrote {output} (machine: {data["machine"]["cpu"]}, {data["machine"]["cpus"]} cpus)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
