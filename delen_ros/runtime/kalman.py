"""
One scalar Kalman filter of a slowdown factor (measured / profiled), for every user.

ALERT (USENIX ATC 2020, Sec. 4.2) tracks the ratio of observed to profiled latency with a
scalar Kalman filter whose *process* noise adapts to recent corrections, so a lasting jump
(a competitor arrives) gets through within a few observations. The runtime's cost model needs
the same filter with an adaptive *measurement* noise and clipped innovations (a single
preempted stage must not drag the estimate), plus a conservative upper bound. Both are the
same recursion; ``SlowdownFilter`` has the knobs of both:

- ``forgetting`` (ALERT's alpha): ``Q_n = max(Q0, alpha Q_{n-1} + (1 - alpha) (K y)^2)``;
  None keeps Q at ``process_noise``;
- ``noise_decay``: ``R_n = R_{n-1} + decay (y^2 - R_{n-1})`` (0 keeps R fixed);
- ``clip``: innovations limited to ``clip`` predictive sd (inf: not clipped);
- ``upper`` = max(mean + ``sigma`` sd, largest of the last ``window`` ratios, 0.5) x
  (1 + ``margin``): the conservative factor for hard bounds.

``KalmanConfig`` and ``alert_filter`` build ALERT's configuration; ``CostModel`` uses the
cost-model one (``SlowdownFilter(measurement_std=..., sigma=...)``).
"""

import collections
from dataclasses import dataclass
import math
from typing import Deque, Optional, Tuple

__all__ = ['KalmanConfig', 'SlidingMax', 'SlowdownFilter', 'alert_filter']


class SlidingMax:
    """Maximum of the last ``window`` values, in O(1) amortized per value."""

    __slots__ = ('window', 'count', '_values')

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f'window must be positive, got {window}')
        self.window = int(window)
        self.count = 0
        # (index, value) with values decreasing: the front is the maximum.
        self._values: Deque[Tuple[int, float]] = collections.deque()

    def add(self, value: float) -> None:
        """Append one value (the oldest falls out of the window)."""
        self.count += 1
        values = self._values
        while values and values[-1][1] <= value:
            values.pop()
        values.append((self.count, value))
        if values[0][0] <= self.count - self.window:
            values.popleft()

    @property
    def value(self) -> float:
        """Return the maximum of the window (0 when empty)."""
        return self._values[0][1] if self._values else 0.0


class SlowdownFilter:
    """
    Scalar Kalman filter of a ratio (1.0 = as profiled), with adaptive noise.

    ``mean`` and ``variance`` describe the estimate; ``std`` the spread of the next single
    observation without process noise (the cost model's), ``predictive_std`` with it
    (ALERT's: estimate, process and measurement noise together); ``upper`` the conservative
    factor (see the module docstring).
    """

    __slots__ = ('window', 'sigma', 'margin', 'clip', 'forgetting', 'process_floor',
                 'noise_decay', 'min_mean', '_recent', 'mean', 'variance', 'process_noise',
                 'noise', 'count', 'upper')

    def __init__(self, *, initial: float = 1.0, variance: float = 0.25,
                 process_noise: float = 1e-3, measurement_std: float = 0.1,
                 noise_decay: float = 0.05, sigma: float = 2.0, window: int = 0,
                 margin: float = 0.0, clip: float = 3.0, forgetting: Optional[float] = None,
                 min_mean: float = 0.0) -> None:
        if not (initial > 0 and variance >= 0 and process_noise >= 0 and measurement_std > 0
                and 0 <= noise_decay <= 1 and window >= 0 and sigma >= 0 and margin >= 0
                and clip > 0 and min_mean >= 0):
            raise ValueError('SlowdownFilter: initial, measurement_std and clip must be '
                             'positive; variance, process_noise, sigma, window, margin and '
                             'min_mean non-negative; noise_decay in [0, 1]')
        if forgetting is not None and not 0.0 <= forgetting < 1.0:
            raise ValueError(f'forgetting must be in [0, 1), got {forgetting}')
        self.window = int(window)
        self.sigma = float(sigma)
        self.margin = float(margin)
        self.clip = float(clip)
        self.forgetting = None if forgetting is None else float(forgetting)
        self.process_floor = float(process_noise)
        self.noise_decay = float(noise_decay)
        self.min_mean = float(min_mean)
        self._recent = SlidingMax(window) if window else None
        self.mean = float(initial)
        self.variance = float(variance)
        self.process_noise = float(process_noise)
        self.noise = float(measurement_std) ** 2
        self.count = 0
        self.upper = self._upper()

    def update(self, ratio: float) -> None:
        """Fold in one observed ratio (ignored unless positive and finite)."""
        if not 0.0 < ratio < math.inf:
            return
        prior = self.variance + self.process_noise
        innovation = ratio - self.mean
        if self.clip < math.inf:
            limit = self.clip * math.sqrt(prior + self.noise)
            innovation = min(max(innovation, -limit), limit)
        gain = prior / (prior + self.noise)
        correction = gain * innovation
        mean = self.mean + correction
        self.mean = mean if mean > self.min_mean else self.min_mean
        self.variance = (1.0 - gain) * prior
        if self.noise_decay:
            self.noise += self.noise_decay * (innovation * innovation - self.noise)
        if self.forgetting is not None:
            alpha = self.forgetting
            adapted = alpha * self.process_noise + (1.0 - alpha) * correction * correction
            self.process_noise = adapted if adapted > self.process_floor else self.process_floor
        self.count += 1
        if self._recent is not None:
            self._recent.add(ratio)
        self.upper = self._upper()

    def _upper(self) -> float:
        bound = self.mean + self.sigma * math.sqrt(self.variance + self.noise)
        return max(bound, self.recent_max, 0.5) * (1.0 + self.margin)

    @property
    def std(self) -> float:
        """Return the standard deviation of the next observation (no process noise)."""
        return math.sqrt(self.variance + self.noise)

    @property
    def predictive_std(self) -> float:
        """Return the standard deviation of the next observation, process noise included."""
        return math.sqrt(self.variance + self.process_noise + self.noise)

    @property
    def recent_max(self) -> float:
        """Largest ratio among the last ``window`` observations (0 without a window)."""
        return self._recent.value if self._recent is not None else 0.0

    def __repr__(self) -> str:
        return (f'SlowdownFilter(mean={self.mean:.3f}, std={self.predictive_std:.3f}, '
                f'upper={self.upper:.3f}, n={self.count})')


@dataclass(frozen=True)
class KalmanConfig:
    """
    ALERT's filter parameters (Sec. 4.2).

    ``measurement_noise`` is R (variance of one observed ratio), ``process_noise_floor`` Q0,
    ``forgetting`` the weight alpha of the previous Q.
    """

    initial: float = 1.0
    initial_variance: float = 0.1
    measurement_noise: float = 0.01
    process_noise_floor: float = 1e-3
    forgetting: float = 0.7

    def __post_init__(self):
        for name in ('initial', 'measurement_noise'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f'{name} must be positive and finite, got {value}')
        for name in ('initial_variance', 'process_noise_floor'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} must be finite and >= 0, got {value}')
        if not 0.0 <= self.forgetting < 1.0:
            raise ValueError(f'forgetting must be in [0, 1), got {self.forgetting}')


def alert_filter(config: Optional[KalmanConfig] = None) -> SlowdownFilter:
    """Return ALERT's filter: adaptive process noise, fixed R, no clipping, mean >= 0.05."""
    config = config or KalmanConfig()
    return SlowdownFilter(
        initial=config.initial, variance=config.initial_variance,
        process_noise=config.process_noise_floor,
        measurement_std=math.sqrt(config.measurement_noise), noise_decay=0.0,
        clip=math.inf, forgetting=config.forgetting, min_mean=0.05)
