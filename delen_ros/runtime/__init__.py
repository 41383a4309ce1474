"""
Dělen serving runtime (no ROS): goals, conditions, policies, EDF scheduling, energy, stats.

Start with ``InferenceServer`` (see docs/runtime.md); ROS nodes are a thin layer over it.
"""

from .accuracy import AccuracyCurve
from .conditions import (accuracy_reached, all_of, always, any_of, Condition,
                         confidence_at_least, exit_reached, ExitStatus, is_last_exit, never,
                         next_stage_fits, next_stage_fits_energy, next_stage_fits_latency)
from .cost import CostModel, SlowdownFilter, StageCost
from .energy import (available_platforms, default_platform, detect_meter, EnergyMeter,
                     EnergyReading, HwmonEnergyMeter, HwmonPowerMeter, Ina3221Meter,
                     platform_path, PlatformError, PowerModel, PowerSetting, RaplMeter)
from .executor import apply_threads, calibrated_top1, ConditionalExecutor, Execution
from .goals import Goal, GoalError, GoalKind, parse_goal
from .policies import (available_cores, available_policies, BudgetPolicy, ConfidencePolicy,
                       make_policy, Outcome, parse_policy_spec, Plan, Policy, PolicyError,
                       register_policy, RequestContext, StaticPolicy)
from .scheduler import EdfScheduler, Request
from .server import InferenceResult, InferenceServer, InputError, TenantConfig
from .stats import StatsSnapshot, TenantStats

__all__ = [
    'AccuracyCurve', 'BudgetPolicy', 'Condition', 'ConditionalExecutor', 'ConfidencePolicy',
    'CostModel', 'EdfScheduler', 'EnergyMeter', 'EnergyReading', 'Execution', 'ExitStatus', 'Goal',
    'GoalError', 'GoalKind', 'HwmonEnergyMeter', 'HwmonPowerMeter', 'Ina3221Meter',
    'InferenceResult', 'InferenceServer', 'InputError', 'Outcome', 'Plan', 'PlatformError',
    'Policy', 'PolicyError', 'PowerModel', 'PowerSetting', 'RaplMeter', 'Request',
    'RequestContext', 'SlowdownFilter', 'StageCost', 'StaticPolicy', 'StatsSnapshot',
    'TenantConfig', 'TenantStats', 'accuracy_reached', 'all_of', 'always', 'any_of',
    'apply_threads', 'available_cores', 'available_platforms', 'available_policies',
    'calibrated_top1',
    'confidence_at_least', 'default_platform', 'detect_meter', 'exit_reached', 'is_last_exit',
    'make_policy', 'never', 'next_stage_fits', 'next_stage_fits_energy',
    'next_stage_fits_latency', 'parse_goal', 'parse_policy_spec', 'platform_path',
    'register_policy',
]
