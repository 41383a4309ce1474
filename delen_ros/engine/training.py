"""Training of multi-exit networks: joint, heads-only, and self-distillation of early exits."""

import argparse
from dataclasses import asdict, dataclass, field
import math
import os
from pathlib import Path
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from tqdm import tqdm

from . import fashion_mnist
from .backbones import build_multi_exit
from .checkpoint import save_checkpoint
from .config import InputSpec, MultiExitConfig
from .metrics import exit_accuracy, exit_flops, exit_logits, normalize_images
from .network import MultiExitNetwork

__all__ = ['MODES', 'TrainConfig', 'main', 'split_train_validation', 'train']

MODES = ('joint', 'heads', 'distill')
VALIDATION_SIZE = 5000


@dataclass
class TrainConfig:
    """What to train and how; every field is a command-line option of delen-train."""

    output: Path
    arch: str = 'compact_resnet'
    mode: str = 'joint'
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    exit_weights: Tuple[float, ...] = ()
    distill_temperature: float = 3.0
    use_labels: bool = True
    init: Optional[Path] = None
    seed: int = 0
    threads: int = 0
    work_dir: Optional[Path] = None
    resume: bool = False
    max_steps: int = 0
    eval_limit: int = 0
    data_root: Path = fashion_mnist.DEFAULT_ROOT
    options: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f'unknown mode {self.mode!r}; expected one of {", ".join(MODES)}')
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError('epochs and batch_size must be positive')
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f'lr must be positive, got {self.lr}')
        if self.exit_weights and (any(w < 0 for w in self.exit_weights)
                                  or not any(self.exit_weights)):
            raise ValueError(
                f'exit weights must be non-negative, not all zero: {self.exit_weights}')
        if self.mode == 'joint' and not self.use_labels:
            raise ValueError('joint training needs labels; use mode "distill" to train without')
        if self.mode != 'joint' and self.init is None:
            raise ValueError(f'mode {self.mode!r} trains on a trained backbone: give --init')


def split_train_validation(seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Split the Fashion-MNIST train set into training and held-out validation indices."""
    order = np.random.default_rng(seed).permutation(60000)
    return np.sort(order[VALIDATION_SIZE:]), np.sort(order[:VALIDATION_SIZE])


def _augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop after zero padding, and horizontal flip, per image."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=float(x.min()))
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    out = padded[torch.arange(batch)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(batch, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()


def _exit_loss(logits: List[torch.Tensor], labels: torch.Tensor, config: TrainConfig,
               weights: Sequence[float]) -> torch.Tensor:
    final = logits[-1]
    loss = final.new_zeros(())
    if config.mode == 'distill':
        # Self-distillation (Phuong & Lampert 2019): the final exit teaches the early ones.
        temp = config.distill_temperature
        target = F.softmax(final.detach() / temp, dim=1)
        for weight, early in zip(weights[:-1], logits[:-1]):
            kd = F.kl_div(F.log_softmax(early / temp, dim=1), target, reduction='batchmean')
            loss = loss + weight * kd * temp * temp
            if config.use_labels:
                loss = loss + weight * F.cross_entropy(early, labels)
        return loss
    for weight, exit_logit in zip(weights, logits):
        if weight:
            loss = loss + weight * F.cross_entropy(exit_logit, labels)
    return loss


def _trainable_parameters(network: MultiExitNetwork, mode: str) -> List[nn.Parameter]:
    if mode == 'joint':
        return list(network.parameters())
    # Heads-only and distillation keep the backbone and its classifier frozen.
    network.stages.requires_grad_(False)
    network.heads[-1].requires_grad_(False)
    return [p for head in network.heads[:-1] for p in head.parameters()]


def _set_frozen_eval(network: MultiExitNetwork, mode: str) -> None:
    network.train()
    if mode != 'joint':
        network.stages.eval()
        network.heads[-1].eval()


def _model_config(config: TrainConfig) -> MultiExitConfig:
    return MultiExitConfig(
        arch=config.arch, num_classes=len(fashion_mnist.CLASS_NAMES),
        input_spec=InputSpec(height=28, width=28, channels=1,
                             mean=fashion_mnist.MEAN, std=fashion_mnist.STD),
        class_names=fashion_mnist.CLASS_NAMES, small_input=True,
        options=dict(config.options))


def train(config: TrainConfig) -> Dict[str, object]:
    """Train on Fashion-MNIST, evaluate every exit, and write a serving checkpoint."""
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    model_config = _model_config(config)
    network = build_multi_exit(model_config)
    if config.init is not None:
        from .checkpoint import load_checkpoint
        loaded = load_checkpoint(config.init)
        model_config = loaded.config
        network = loaded.network
    # Default: the final exit counts fully, each early exit half.
    weights = tuple(config.exit_weights) or (0.5,) * (network.num_exits - 1) + (1.0,)
    if len(weights) != network.num_exits:
        raise ValueError(f'{len(weights)} exit weights for {network.num_exits} exits')

    images, labels = fashion_mnist.load('train', root=config.data_root)
    train_index, val_index = split_train_validation(config.seed)
    inputs = normalize_images(images, model_config.input_spec)
    targets = torch.from_numpy(labels)
    x_train, y_train = inputs[train_index], targets[train_index]

    parameters = _trainable_parameters(network, config.mode)
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
        pct_start=0.25)
    start_epoch = resumed_from = 0
    state_path = Path(config.work_dir) / 'last.pt' if config.work_dir else None
    if config.resume and state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location='cpu', weights_only=True)
        network.load_state_dict(state['network'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        generator.set_state(state['generator'])
        start_epoch = resumed_from = int(state['epoch'])
        print(f'resumed from {state_path} after epoch {start_epoch}', file=sys.stderr)

    started = time.monotonic()
    steps = 0
    for epoch in range(start_epoch, config.epochs):
        _set_frozen_eval(network, config.mode)
        order = torch.randperm(len(x_train), generator=generator)
        correct = [0] * network.num_exits
        seen = 0
        running_loss = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch + 1}/{config.epochs}',
                   unit='batch', leave=True, mininterval=2.0)
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            x = _augment(x_train[batch], generator)
            y = y_train[batch]
            logits = network(x)
            loss = _exit_loss(logits, y, config, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(batch)
            running_loss += loss.item() * len(batch)
            for index, exit_logit in enumerate(logits):
                correct[index] += int((exit_logit.argmax(1) == y).sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f'{running_loss / seen:.3f}',
                                acc='/'.join(f'{100 * c / seen:.1f}' for c in correct))
            steps += 1
            if config.max_steps and steps >= config.max_steps:
                break
        bar.close()
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({'network': network.state_dict(), 'optimizer': optimizer.state_dict(),
                        'scheduler': scheduler.state_dict(), 'generator': generator.get_state(),
                        'epoch': epoch + 1}, state_path)
        if config.max_steps and steps >= config.max_steps:
            break
    train_seconds = time.monotonic() - started

    network.eval()
    limit = slice(0, config.eval_limit or None)
    val_index = val_index[limit]
    val_logits = exit_logits(network, inputs[val_index])
    test_images, test_labels = fashion_mnist.load('test', root=config.data_root)
    test_images, test_labels = test_images[limit], test_labels[limit]
    test_logits = exit_logits(network, normalize_images(test_images, model_config.input_spec))
    metrics = {
        'dataset': 'fashion-mnist',
        'exit_accuracy': exit_accuracy(test_logits, torch.from_numpy(test_labels)),
        'validation_exit_accuracy': exit_accuracy(val_logits, targets[val_index]),
        'exit_flops': exit_flops(network, model_config.input_spec),
        'parameters': sum(p.numel() for p in network.parameters()),
        'training': {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            'exit_weights': list(weights),
            'seconds': round(train_seconds, 1),
            'steps': steps,
            'resumed_from_epoch': resumed_from,
            'evaluated_test_images': len(test_labels),
            'torch': str(torch.__version__),
            'threads': torch.get_num_threads(),
            'machine': f'{platform.machine()} {os.cpu_count()} cpus',
            'validation_split': f'{VALIDATION_SIZE} train images held out (seed {config.seed})',
        },
    }
    save_checkpoint(config.output, network, model_config, metrics=metrics)
    return metrics


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='delen-train', description='Train a multi-exit network on Fashion-MNIST.')
    parser.add_argument('--output', type=Path, required=True, help='checkpoint to write (.pt)')
    parser.add_argument('--arch', default='compact_resnet')
    parser.add_argument('--mode', choices=MODES, default='joint',
                        help='joint: all exits; heads: heads only on a frozen backbone; '
                             'distill: early exits learn from the final exit')
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=0.1)
    parser.add_argument('--weight-decay', type=float, default=5e-4)
    parser.add_argument('--exit-weights', type=float, nargs='+', default=[],
                        help='loss weight per exit (default: 0.5 each, 1.0 for the last)')
    parser.add_argument('--widths', type=int, nargs='+',
                        help='compact_resnet stage widths (default: 24 64 128 256)')
    parser.add_argument('--num-exits', type=int,
                        help='exits (compact_resnet: one per width, or 1 for a traditional '
                             'single-exit network)')
    parser.add_argument('--distill-temperature', type=float, default=3.0)
    parser.add_argument('--no-labels', action='store_true',
                        help='distill mode only: ignore labels (pure self-distillation)')
    parser.add_argument('--init', type=Path, help='start from this checkpoint')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--work-dir', type=Path, help='where resumable training state goes')
    parser.add_argument('--resume', action='store_true', help='continue from --work-dir')
    parser.add_argument('--max-steps', type=int, default=0, help='stop early (smoke runs)')
    parser.add_argument('--eval-limit', type=int, default=0,
                        help='evaluate on the first N images only (smoke runs; 0: all)')
    parser.add_argument('--data-root', type=Path, default=fashion_mnist.DEFAULT_ROOT)
    return parser


def _model_options(args: argparse.Namespace) -> Dict[str, object]:
    options: Dict[str, object] = {}
    if args.widths:
        options['widths'] = list(args.widths)
    if args.num_exits:
        options['num_exits'] = int(args.num_exits)
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point of delen-train."""
    args = _parser().parse_args(argv)
    try:
        config = TrainConfig(
            output=args.output, arch=args.arch, mode=args.mode, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            exit_weights=tuple(args.exit_weights),
            distill_temperature=args.distill_temperature, use_labels=not args.no_labels,
            init=args.init, seed=args.seed, threads=args.threads, work_dir=args.work_dir,
            resume=args.resume, max_steps=args.max_steps,
            eval_limit=args.eval_limit, data_root=args.data_root,
            options=_model_options(args))
        metrics = train(config)
    except (ValueError, FileNotFoundError) as error:
        print(f'delen-train: {error}', file=sys.stderr)
        return 2
    accuracy = ' '.join(f'{100 * a:.2f}%' for a in metrics['exit_accuracy'])
    print(f'wrote {config.output}: test accuracy per exit {accuracy}, '
          f'{metrics["training"]["seconds"]:.0f} s of training')
    return 0


if __name__ == '__main__':
    sys.exit(main())
