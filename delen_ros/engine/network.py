"""
Multi-exit networks that run stage by stage and resume where they stopped.

Conditional execution as in Dělen (IoTDI 2023, Sec. 3): a request runs stage k, evaluates exit k,
and either stops or resumes from the stored features without recomputing earlier stages.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn

__all__ = ['ExitHead', 'ExitState', 'MultiExitNetwork']


class ExitHead(nn.Sequential):
    """Early-exit classifier: one 3x3 conv (strided on large maps), pooling, linear layer."""

    def __init__(self, in_channels: int, num_classes: int, *, hidden_channels: int = 64,
                 stride: int = 1) -> None:
        if in_channels < 1 or num_classes < 2 or hidden_channels < 1:
            raise ValueError(
                f'invalid exit head: in_channels={in_channels}, num_classes={num_classes}, '
                f'hidden_channels={hidden_channels}')
        if stride not in (1, 2):
            raise ValueError(f'exit head stride must be 1 or 2, got {stride}')
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(hidden_channels, num_classes),
        )


@dataclass
class ExitState:
    """Where a request stands: the features after the last stage run, and the next exit."""

    features: torch.Tensor
    next_exit: int
    num_exits: int

    @property
    def done(self) -> bool:
        """Return True once every stage has run."""
        return self.next_exit >= self.num_exits


class MultiExitNetwork(nn.Module):
    """
    A backbone cut into stages, with one exit head after each stage.

    The last head is the backbone's own classifier; one stage with its classifier is a
    traditional (single-exit) network, served like any other. ``forward`` returns every
    exit's logits (for training); ``begin``/``step`` run one stage at a time (for serving).
    """

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(stages) < 1:
            raise ValueError('a network needs at least one stage and its classifier')
        if len(stages) != len(heads):
            raise ValueError(f'{len(stages)} stages but {len(heads)} exit heads; need one each')
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    @property
    def num_exits(self) -> int:
        """Return the number of exits (= stages)."""
        return len(self.stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Logits of every exit, first to last."""
        logits = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            logits.append(head(x))
        return logits

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """Run the plain backbone: every stage, then only the final classifier."""
        for stage in self.stages:
            x = stage(x)
        return self.heads[-1](x)

    def begin(self, x: torch.Tensor) -> ExitState:
        """Start a request on a normalized input batch [B, C, H, W]."""
        if x.dim() != 4:
            raise ValueError(f'expected an input batch [B, C, H, W], got shape {tuple(x.shape)}')
        return ExitState(features=x, next_exit=0, num_exits=self.num_exits)

    def step(self, state: ExitState, *, evaluate_head: bool = True) -> Optional[torch.Tensor]:
        """
        Run the next stage and, unless told not to, its exit head; return that exit's logits.

        Skipping an intermediate head (``evaluate_head=False``) returns None; the final exit's
        head always runs.
        """
        index = state.next_exit
        if index >= state.num_exits:
            raise RuntimeError(f'all {state.num_exits} exits have already run')
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self.step(state, evaluate_head=evaluate_head)
        state.features = self.stages[index](state.features)
        state.next_exit = index + 1
        if evaluate_head or state.next_exit == state.num_exits:
            return self.heads[index](state.features)
        return None

    def run_to(self, state: ExitState, exit_index: int) -> torch.Tensor:
        """Resume up to ``exit_index`` (inclusive), evaluating only that exit's head."""
        if not state.next_exit <= exit_index < self.num_exits:
            raise ValueError(
                f'cannot run to exit {exit_index}: next exit is {state.next_exit}, '
                f'network has {self.num_exits}')
        logits = None
        while state.next_exit <= exit_index:
            logits = self.step(state, evaluate_head=state.next_exit == exit_index)
        return logits
