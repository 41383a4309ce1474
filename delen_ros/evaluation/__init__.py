"""
Trace-driven evaluation of exit/thread policies on the real model (no ROS).

Scenarios script tenants, rates, goal changes and a real CPU load; every policy runs the same
trace on a fresh runtime; an offline oracle bounds what any policy could reach.
"""

from .evaluate import evaluate, EvaluationConfig, main, ScenarioResult
from .load import CpuLoad
from .oracle import (exit_correctness, latency_oracle_run, LatencyTable, measure_latencies,
                     oracle_run)
from .runner import PolicyRun, RequestRecord, run_policy
from .scenarios import (Arrival, builtin_scenarios, contention_scenario, goal_change_scenario,
                        GoalChange, LoadPhase, multi_tenant_scenario, rate_change_scenario,
                        RateChange, Scenario, SCENARIOS, TenantPlan)
from .summary import compare, Comparison, summarize, Summary

__all__ = [
    'Arrival', 'Comparison', 'CpuLoad', 'EvaluationConfig', 'GoalChange', 'LatencyTable',
    'LoadPhase', 'PolicyRun', 'RateChange', 'RequestRecord', 'SCENARIOS', 'Scenario',
    'ScenarioResult', 'Summary', 'TenantPlan', 'builtin_scenarios', 'compare',
    'contention_scenario', 'evaluate', 'exit_correctness', 'goal_change_scenario',
    'latency_oracle_run', 'main',
    'measure_latencies', 'multi_tenant_scenario', 'oracle_run', 'rate_change_scenario',
    'run_policy', 'summarize',
]
