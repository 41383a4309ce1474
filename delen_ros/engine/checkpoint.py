"""Checkpoints that carry everything needed to serve, loaded without unpickling code."""

from dataclasses import dataclass, field
import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from .backbones import build_multi_exit
from .config import MultiExitConfig
from .network import MultiExitNetwork

__all__ = ['CHECKPOINT_FORMAT', 'CheckpointError', 'LoadedModel', 'default_model_path',
           'load_checkpoint', 'resolve_model_path', 'save_checkpoint']

CHECKPOINT_FORMAT = 'delen_ros.multi_exit/1'
_DEFAULT_MODEL = 'fmnist_compact_resnet.pt'


class CheckpointError(ValueError):
    """A model file is missing, unreadable or does not match its architecture (one line)."""


@dataclass
class LoadedModel:
    """A network in eval mode with its config and the metrics stored beside the weights."""

    network: MultiExitNetwork
    config: MultiExitConfig
    metrics: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None


def default_model_path() -> Path:
    """Return the shipped model's path: share/delen_ros/models when installed, else the source."""
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / 'models' / _DEFAULT_MODEL]
    # Installed layout: <prefix>/lib/python3.X/site-packages/delen_ros/engine/checkpoint.py
    for parent in here.parents:
        candidates.append(parent / 'share' / 'delen_ros' / 'models' / _DEFAULT_MODEL)
    candidates.append(here.parents[2] / 'models' / _DEFAULT_MODEL)
    return next((c for c in candidates if c.is_file()), candidates[-1])


def resolve_model_path(entry: Union[str, Path]) -> Path:
    """
    Return the file a model entry names: a path, or the name of a shipped model.

    A bare name (no folder, e.g. ``fmnist_small_resnet``) that is not a file here names a
    model shipped beside the default one (share/delen_ros/models when installed).
    """
    path = Path(entry)
    if path.exists() or len(path.parts) != 1:
        return path
    return default_model_path().with_name(path.name if path.suffix == '.pt'
                                          else path.name + '.pt')


def save_checkpoint(path: Union[str, Path], network: MultiExitNetwork, config: MultiExitConfig,
                    *, metrics: Optional[Dict[str, Any]] = None) -> Path:
    """Write weights, config and metrics as plain tensors and data (loadable weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        'format': CHECKPOINT_FORMAT,
        'config': config.to_dict(),
        # Plain data only, so weights_only loading accepts it (no version objects, no paths).
        'metrics': json.loads(json.dumps(metrics or {}, default=str)),
        'state_dict': {k: v.detach().cpu().contiguous() for k, v in
                       network.state_dict().items()},
    }
    tmp = path.with_name(path.name + '.tmp')
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _first_line(error: BaseException) -> str:
    # The first sentence of the first line: torch appends paragraphs of advice.
    text = str(error).strip().splitlines()
    return text[0].split('. ')[0].rstrip('.') if text else type(error).__name__


def load_checkpoint(path: Union[str, Path, None] = None) -> LoadedModel:
    """Load a checkpoint (default: the shipped model); raise CheckpointError naming the file."""
    path = Path(path) if path is not None else default_model_path()
    if path.is_dir():
        raise CheckpointError(f'{path}: is a directory, not a model file')
    if not path.is_file():
        raise CheckpointError(f'{path}: model file not found')
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f'{path}: not a readable checkpoint (truncated or corrupt?): '
            f'{_first_line(error)}') from None
    if not isinstance(payload, dict) or payload.get('format') != CHECKPOINT_FORMAT:
        found = payload.get('format') if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f'{path}: not a delen_ros multi-exit checkpoint (format {found!r}, expected '
            f'{CHECKPOINT_FORMAT!r})')
    try:
        config = MultiExitConfig.from_dict(payload['config'])
        network = build_multi_exit(config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f'{path}: bad model config: {_first_line(error)}') from None
    state = payload.get('state_dict')
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: no state_dict in checkpoint')
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state)
                        if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        details = []
        for name, keys in (('missing', missing), ('unexpected', unexpected),
                           ('shape-mismatched', mismatched)):
            if keys:
                details.append(f'{len(keys)} {name} tensors (e.g. {keys[0]})')
        raise CheckpointError(
            f'{path}: weights do not match architecture {config.arch!r}: {", ".join(details)}')
    network.load_state_dict(state)
    network.eval()
    return LoadedModel(network=network, config=config, metrics=dict(payload.get('metrics', {})),
                       path=path)
