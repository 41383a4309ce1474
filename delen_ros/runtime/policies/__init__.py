"""
Exit policies, chosen by name: ``make_policy('confidence:threshold=0.9')``.

Built in: ``static``, ``confidence``, ``budget``. More register with ``register_policy``.
"""

from .base import (available_policies, make_policy, Outcome, parse_policy_spec, Plan, Policy,
                   PolicyError, register_policy, RequestContext)
from .budget import BudgetPolicy
from .confidence import ConfidencePolicy
from .static import StaticPolicy

__all__ = ['BudgetPolicy', 'ConfidencePolicy', 'Outcome', 'Plan', 'Policy', 'PolicyError',
           'RequestContext', 'StaticPolicy', 'available_policies', 'make_policy',
           'parse_policy_spec', 'register_policy']
