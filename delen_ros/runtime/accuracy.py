"""
Expected accuracy of one answer given its exit and calibrated confidence, from the profile.

The profile's confidence-threshold curves give, per exit, the coverage and accuracy of the
answers whose confidence reaches each threshold; differencing neighbouring thresholds gives the
accuracy of the answers *between* them, a finer curve at high confidence (0.9, 0.95, 0.99)
than the ten reliability bins. Buckets with fewer than ``min_count`` calibration answers are
merged with their neighbours; without threshold curves the profile's reliability bins are used.
"""

import bisect
import math
from typing import List, Tuple

__all__ = ['AccuracyCurve']


class AccuracyCurve:
    """Per-exit piecewise-constant map from calibrated confidence to expected accuracy."""

    def __init__(self, profile, *, min_count: int = 20) -> None:
        self.profile = profile
        self._lows: List[List[float]] = []
        self._accuracy: List[List[float]] = []
        for exit_index in range(profile.num_exits):
            buckets = self._buckets(profile, exit_index, min_count)
            self._lows.append([low for low, _ in buckets])
            self._accuracy.append([accuracy for _, accuracy in buckets])

    @staticmethod
    def _buckets(profile, exit_index: int, min_count: int) -> List[Tuple[float, float]]:
        try:
            curve = profile.threshold_curves[exit_index]
            total = sum(b['count'] for b in profile.data['exits'][exit_index]['reliability'])
        except (AttributeError, IndexError, KeyError, TypeError):
            return []
        points = sorted((float(p['threshold']), float(p['coverage']), float(p['accuracy']))
                        for p in curve
                        if p.get('coverage', 0) > 0 and not math.isnan(p.get('accuracy', 0)))
        if not points or total <= 0:
            return []
        buckets = []
        # From the top down: the answers with confidence >= t_i and < the bucket above.
        upper_cov = upper_correct = 0.0
        pending = None
        for threshold, coverage, accuracy in reversed(points):
            count = (coverage - upper_cov) * total
            correct = coverage * accuracy - upper_correct
            if pending is not None:
                count += pending[0]
                correct += pending[1]
            if count >= min_count:
                buckets.append((threshold, min(max(correct * total / count, 0.0), 1.0)))
                pending = None
            else:
                pending = (count, correct)
            upper_cov, upper_correct = coverage, coverage * accuracy
        if pending is not None and buckets:
            # Too few answers at the bottom: fold them into the lowest bucket's range.
            buckets[-1] = (points[0][0], buckets[-1][1])
        buckets.reverse()
        return buckets

    def __call__(self, exit_index: int, confidence: float) -> float:
        """Return the expected accuracy of an answer of ``exit_index`` at this confidence."""
        lows = self._lows[exit_index]
        position = bisect.bisect_right(lows, confidence) - 1
        if position < 0:
            return self.profile.accuracy_at_confidence(exit_index, confidence)
        return self._accuracy[exit_index][position]
