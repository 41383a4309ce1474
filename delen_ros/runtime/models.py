"""
The family of models a server holds: anytime (multi-exit) and traditional (single-exit).

ALERT (USENIX ATC 2020, Sec. 3) picks a DNN from such a family together with the resource
setting; here each model keeps its own profile, cost model and stage executor, and a policy
picks model x exit x threads per frame. Models that share the input and the classes can
serve the same tenant; one that differs serves only the tenants that pin it.
"""

from dataclasses import dataclass, replace
import functools
import hashlib
from pathlib import Path
import time
from typing import Callable, Iterable, Optional, Tuple, Union

import numpy as np
import torch

from .cost import CostModel
from .energy import EnergyMeter, PowerModel
from .executor import apply_threads, ConditionalExecutor
from ..engine import load_checkpoint, LoadedModel, resolve_model_path, serving_network
from ..engine.profiling import default_profile_path, load_profile, ModelProfile, ProfileError
from ..imaging import ModelInputTransform

__all__ = ['ModelInfo', 'ServedModel', 'load_served_model', 'model_name']


def model_name(path: Union[str, Path, None]) -> str:
    """Return the name a model file is served under: its file name without the suffix."""
    return Path(path).stem if path else 'model'


@dataclass(frozen=True)
class ModelInfo:
    """What the server reports of a model it holds (at start-up and in /diagnostics)."""

    name: str
    path: str
    kind: str
    num_exits: int
    parameters: int
    memory_bytes: int
    load_s: float
    exit_accuracy: Tuple[float, ...]
    final_ms: float
    folded_norms: int = 0

    def describe(self) -> str:
        """One line: name, kind, exits, accuracy, memory, load time, batch norms folded."""
        return (f'{self.name} ({self.kind}, {self.num_exits} exit'
                f'{"s" if self.num_exits != 1 else ""}, final exit '
                f'{100 * self.exit_accuracy[-1]:.2f} % in {self.final_ms:.2f} ms, '
                f'{self.parameters / 1e6:.2f} M parameters, '
                f'{self.memory_bytes / 2 ** 20:.1f} MiB, loaded in {self.load_s:.2f} s, '
                f'{self.folded_norms} batch norms folded)')


class ServedModel:
    """
    One model held by a server: network, profile, cost model, executor and input transform.

    Raises ProfileError (a ValueError) when the profile was made for another model (exit
    count, architecture or file hash differ).
    """

    def __init__(self, name: str, model: LoadedModel, profile: ModelProfile, *,
                 power: PowerModel, meter: EnergyMeter, cost_sigma: float = 2.0,
                 transform: Optional[Callable[[np.ndarray, str], torch.Tensor]] = None,
                 load_s: float = 0.0) -> None:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f'model name must be a non-empty string without spaces around '
                             f'it, got {name!r}')
        check_profile(model, profile)
        network, folded_norms = serving_network(model.network)
        model = replace(model, network=network)
        self.name = name
        self.model = model
        self.profile = profile
        self.config = model.config
        self.spec = model.config.input_spec
        self.num_exits = model.network.num_exits
        self.cost = CostModel(profile, power=power, meter=meter, sigma=cost_sigma)
        self.executor = ConditionalExecutor(model.network, profile, cost=self.cost, meter=meter,
                                            name=name)
        self.transform = transform or ModelInputTransform.from_spec(self.spec)
        tensors = list(model.network.parameters()) + list(model.network.buffers())
        self.info = ModelInfo(
            name=name, path=str(model.path or ''),
            kind='anytime' if self.num_exits > 1 else 'traditional',
            num_exits=self.num_exits,
            parameters=sum(p.numel() for p in model.network.parameters()),
            memory_bytes=sum(t.numel() * t.element_size() for t in tensors),
            load_s=float(load_s), exit_accuracy=tuple(profile.exit_accuracy),
            final_ms=profile.exit_latency_ms(self.num_exits - 1, min(profile.thread_counts)),
            folded_norms=folded_norms)

    def warm_up(self, *, batch_sizes: Iterable[int], thread_counts: Iterable[int]) -> int:
        """
        Run every stage and exit head once per thread count and batch size; return the calls.

        The first call of a convolution at a new input shape or thread count builds its
        kernels: the shipped model's stages and heads took 2.4-4.7 ms more at a new batch size
        than the next time (docs/serving_path.md, "Warm-up"). Not while serving: it sets
        torch's thread count, and puts back the one it found.
        """
        sizes = sorted({int(size) for size in batch_sizes})
        counts = sorted({int(threads) for threads in thread_counts})
        if not sizes or sizes[0] < 1 or not counts or counts[0] < 1:
            raise ValueError(f'warm-up needs positive batch sizes and thread counts, got '
                             f'{sizes} and {counts}')
        spec, network = self.spec, self.model.network
        saved, calls = torch.get_num_threads(), 0
        try:
            with torch.inference_mode():
                for threads in counts:
                    apply_threads(threads)
                    for size in sizes:
                        features = torch.zeros(size, spec.channels, spec.height, spec.width)
                        for stage, head in zip(network.stages, network.heads):
                            features = stage(features)
                            head(features)
                            calls += 2
        finally:
            apply_threads(saved)
        return calls

    def interchangeable_with(self, other: 'ServedModel') -> bool:
        """Return True when both take the same input and answer with the same classes."""
        return not self.difference(other)

    def difference(self, other: 'ServedModel') -> str:
        """Say how this model's input or classes differ from another's ('' when they don't)."""
        if self.spec != other.spec:
            return (f'input {self.spec.channels}x{self.spec.height}x{self.spec.width} against '
                    f'{other.spec.channels}x{other.spec.height}x{other.spec.width} '
                    f'(or its normalization)')
        if self.config.num_classes != other.config.num_classes:
            return f'{self.config.num_classes} classes against {other.config.num_classes}'
        if self.config.class_names != other.config.class_names:
            return 'other class names'
        return ''

    def __repr__(self) -> str:
        return f'ServedModel({self.name!r}, {self.num_exits} exits)'


def check_profile(model: LoadedModel, profile: ModelProfile) -> None:
    """Raise ProfileError, naming the profile, when it was not made for this model."""
    where = profile.path or 'the profile'
    if model.network.num_exits != profile.num_exits:
        raise ProfileError(f'{where}: the model has {model.network.num_exits} exits but its '
                           f'profile {profile.num_exits}: profile another model?')
    arch = profile.model.get('arch')
    if arch and arch != model.config.arch:
        raise ProfileError(f'{where}: profiled architecture {arch!r}, the model is '
                           f'{model.config.arch!r}')
    expected = profile.model.get('sha256')
    if expected and model.path is not None and Path(model.path).is_file():
        found = _sha256(Path(model.path))
        if found != expected:
            raise ProfileError(f'{where}: made for another model file '
                               f'({profile.model.get("file", "?")}, sha256 {expected[:12]}...), '
                               f'not {Path(model.path).name} (sha256 {found[:12]}...); run '
                               'delen_profile on it')


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time: a checked file is read once, a rewritten one again.
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_served_model(path: Union[str, Path, None], profile: Union[str, Path, None] = None, *,
                      name: Optional[str] = None, **options) -> ServedModel:
    """
    Load a checkpoint and its profile (default: beside it) into a ServedModel.

    ``path``: a file, or the name of a shipped model (``fmnist_small_resnet``). Raises
    CheckpointError or ProfileError naming the file.
    """
    started = time.perf_counter()
    model = load_checkpoint(None if path is None else resolve_model_path(path))
    profile_path = profile if profile is not None else default_profile_path(model.path)
    loaded_profile = load_profile(profile_path)
    load_s = time.perf_counter() - started
    check_profile(model, loaded_profile)  # before the cost model and executor are built
    return ServedModel(name or model_name(model.path), model, loaded_profile, load_s=load_s,
                       **options)
