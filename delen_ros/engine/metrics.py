"""Batch evaluation helpers shared by training, profiling and tests."""

from typing import List

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import InputSpec
from .network import MultiExitNetwork

__all__ = ['exit_accuracy', 'exit_flops', 'exit_logits', 'normalize_images', 'stage_flops']


def normalize_images(images: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """uint8 images [N, H, W] or [N, H, W, C] to a normalized float tensor [N, C, H, W]."""
    x = torch.tensor(np.asarray(images), dtype=torch.float32).div_(255.0)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] != spec.channels or tuple(x.shape[-2:]) != spec.size:
        raise ValueError(f'images of shape {tuple(x.shape[1:])} do not match the model input '
                         f'{spec.channels}x{spec.height}x{spec.width}')
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


def exit_logits(network: MultiExitNetwork, inputs: torch.Tensor, *,
                batch_size: int = 500) -> torch.Tensor:
    """Logits of every exit for every input: [num_exits, N, num_classes]."""
    was_training = network.training
    network.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            chunks.append(torch.stack(network(inputs[start:start + batch_size])))
    network.train(was_training)
    return torch.cat(chunks, dim=1)


def exit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> List[float]:
    """Top-1 accuracy of each exit from stacked logits [num_exits, N, C]."""
    labels = torch.as_tensor(labels)
    return [float((exit_logit.argmax(dim=1) == labels).float().mean()) for exit_logit in logits]


def stage_flops(network: MultiExitNetwork, spec: InputSpec) -> List[int]:
    """Count the FLOPs (2 per multiply-add) of each stage plus its exit head, at batch 1."""
    flops = []
    state = network.begin(torch.zeros(1, spec.channels, *spec.size))
    was_training = network.training
    network.eval()
    while not state.done:
        with FlopCounterMode(display=False) as counter:
            network.step(state)
        flops.append(int(counter.get_total_flops()))
    network.train(was_training)
    return flops


def exit_flops(network: MultiExitNetwork, spec: InputSpec) -> List[int]:
    """Count the FLOPs to reach each exit when only that exit's head runs (its plain path)."""
    was_training = network.training
    network.eval()
    flops = []
    for index in range(network.num_exits):
        state = network.begin(torch.zeros(1, spec.channels, *spec.size))
        with FlopCounterMode(display=False) as counter:
            network.run_to(state, index)
        flops.append(int(counter.get_total_flops()))
    network.train(was_training)
    return flops
