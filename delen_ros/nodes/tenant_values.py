"""
A run-time tenant's name and parameter values, checked as the parameter table says (no ROS).

``~/add_tenant`` takes a name and some of the ``<tenant>.*`` parameters; these checks give the
same answers declaring them at start-up would (type, range, choices), before anything is
declared, so a refused request leaves nothing behind.
"""

import math
import re
from typing import Any, Collection, Dict, Mapping

from .parameters import tenant_defaults, TENANT_PARAMETERS

__all__ = ['check_tenant_name', 'tenant_values']

_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
_SPECS = {spec.name: spec for spec in TENANT_PARAMETERS}


def check_tenant_name(name: Any, *, existing: Collection[str]) -> str:
    """Return ``name`` if it can name a new tenant (a ROS name token not in use)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f'tenant name must be a ROS name token (a letter, then letters, '
                         f'digits or _), got {name!r}')
    if name in existing:
        raise ValueError(f'tenant {name!r} already exists')
    return name


def _typed(spec, value: Any) -> Any:
    if spec.kind == 'double':
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{spec.name} must be a number, got {value!r}')
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f'{spec.name} must be finite, got {value!r}')
    elif spec.kind == 'integer':
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{spec.name} must be an integer, got {value!r}')
    elif spec.kind == 'bool':
        if not isinstance(value, bool):
            raise ValueError(f'{spec.name} must be true or false, got {value!r}')
    elif spec.kind == 'string_array':
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f'{spec.name} must be a list of strings, got {value!r}')
        value = list(value)
    elif not isinstance(value, str):
        raise ValueError(f'{spec.name} must be a string, got {value!r}')
    if spec.minimum is not None and not spec.minimum <= value <= spec.maximum:
        raise ValueError(f'{spec.name} must be within {spec.minimum:g}..{spec.maximum:g}, '
                         f'got {value!r}')
    if spec.choices and value not in spec.choices:
        raise ValueError(f'{spec.name} must be one of {", ".join(spec.choices)}, got {value!r}')
    return value


def tenant_values(name: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    """Return the defaults of tenant ``name`` with ``given`` applied, each value checked."""
    values = tenant_defaults(name)
    for field, value in given.items():
        spec = _SPECS.get(field)
        if spec is None:
            raise ValueError(f'unknown tenant parameter {field!r} (known: '
                             f'{", ".join(sorted(_SPECS))})')
        values[field] = _typed(spec, value)
    return values
