"""
Battery / thermal governor (no ROS import).

``Governor`` turns readings into one ``Adjustment`` with hysteresis and staleness;
``AdjustedGoals`` is the server's side: base goals x adjustments -> effective goals.
"""

from .adjustment import adjust_goal, AdjustedGoals, Adjustment, ALL_TENANTS
from .config import (GovernorConfig, POWER_SUPPLY_STATUS_CHARGING, POWER_SUPPLY_STATUS_FULL,
                     PowerState, ThermalState)
from .governor import Governor, GovernorDecision, IGNORE_REASONS

__all__ = [
    'ALL_TENANTS', 'AdjustedGoals', 'Adjustment', 'Governor', 'GovernorConfig',
    'GovernorDecision', 'IGNORE_REASONS', 'POWER_SUPPLY_STATUS_CHARGING',
    'POWER_SUPPLY_STATUS_FULL', 'PowerState', 'ThermalState', 'adjust_goal',
]
