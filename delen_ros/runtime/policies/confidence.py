"""
``confidence``: stop once the calibrated confidence passes a threshold.

The classic early-exit rule of BranchyNet (Teerapittayanon et al., ICPR 2016) and SDN
(Kaya et al., ICML 2019), on temperature-calibrated confidences; it ignores the goal's bounds.
"""

from typing import Any, Dict, Optional

from .base import Policy, register_policy
from ..conditions import confidence_at_least, ExitStatus

__all__ = ['ConfidencePolicy']


@register_policy
class ConfidencePolicy(Policy):
    """Stop at the first exit whose calibrated confidence reaches ``threshold``."""

    name = 'confidence'

    def __init__(self, *, threshold: float = 0.9, threads: Optional[int] = None) -> None:
        super().__init__(threads=threads)
        self.condition = confidence_at_least(threshold)
        self.threshold = float(threshold)

    def should_stop(self, status: ExitStatus) -> bool:
        """Confident enough."""
        return status.confidence >= self.threshold

    def params(self) -> Dict[str, Any]:
        """Return threshold (and threads when fixed)."""
        return {'threshold': self.threshold, **super().params()}
