"""Confidence calibration of each exit by temperature scaling (Guo et al., ICML 2017)."""

from typing import Dict, List

import torch
import torch.nn.functional as F

__all__ = ['calibrated_confidence', 'fit_temperature', 'reliability_bins', 'threshold_curve']


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, steps: int = 200) -> float:
    """Temperature minimizing the negative log-likelihood of held-out logits [N, C]."""
    logits = logits.detach().float()
    labels = torch.as_tensor(labels)
    log_temperature = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=steps)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_temperature.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_temperature.detach().exp().clamp(0.05, 20.0))


def calibrated_confidence(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Top-1 softmax probability after temperature scaling, per row."""
    return F.softmax(logits.float() / temperature, dim=-1).max(dim=-1).values


def threshold_curve(confidence: torch.Tensor, correct: torch.Tensor,
                    thresholds: List[float]) -> List[Dict[str, float]]:
    """Coverage and accuracy of the answers whose confidence reaches each threshold."""
    curve = []
    for threshold in thresholds:
        kept = confidence >= threshold
        count = int(kept.sum())
        curve.append({
            'threshold': float(threshold),
            'coverage': count / max(len(confidence), 1),
            'accuracy': float(correct[kept].float().mean()) if count else float('nan'),
        })
    return curve


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor,
                     num_bins: int = 10) -> List[Dict[str, float]]:
    """Accuracy of the answers in each confidence bin (a reliability diagram)."""
    bins = []
    edges = torch.linspace(0.0, 1.0, num_bins + 1)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence >= low) & ((confidence < high) | (high >= 1.0))
        count = int(inside.sum())
        bins.append({
            'low': float(low), 'high': float(high), 'count': count,
            'accuracy': float(correct[inside].float().mean()) if count else float('nan'),
        })
    return bins
