"""
Exit policies, chosen by name: ``make_policy('confidence:threshold=0.9')``.

Built in: ``static``, ``confidence``, ``budget``. Every other module of this package is
imported too, so a policy module dropped here registers itself (``register_policy``);
policies defined elsewhere register when their module is imported.
"""

import importlib
import pkgutil

from .base import (available_cores, available_policies, make_policy, Outcome,
                   parse_policy_spec, Plan, Policy, PolicyError, register_policy,
                   RequestContext, thread_counts_left)
from .budget import BudgetPolicy
from .confidence import ConfidencePolicy
from .static import StaticPolicy

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['BudgetPolicy', 'ConfidencePolicy', 'Outcome', 'Plan', 'Policy', 'PolicyError',
           'RequestContext', 'StaticPolicy', 'available_cores', 'available_policies',
           'make_policy', 'parse_policy_spec', 'register_policy', 'thread_counts_left']
