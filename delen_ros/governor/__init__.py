"""Battery / thermal budget governor: per-tenant budgets with hysteresis (no ROS import)."""

from .budgets import Adjustment, Budgets
from .config import (GovernorConfig, POWER_SUPPLY_STATUS_CHARGING, POWER_SUPPLY_STATUS_FULL,
                     PowerState, ThermalState)
from .governor import Governor, GovernorDecision, IGNORE_REASONS

__all__ = [
    'Adjustment', 'Budgets', 'Governor', 'GovernorConfig', 'GovernorDecision',
    'IGNORE_REASONS', 'POWER_SUPPLY_STATUS_CHARGING', 'POWER_SUPPLY_STATUS_FULL', 'PowerState',
    'ThermalState',
]
