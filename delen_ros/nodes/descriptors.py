"""ParameterDescriptors with description, range and step, as rqt shows them."""

from typing import Optional, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

__all__ = ['bool_parameter', 'float_parameter', 'int_parameter', 'string_array_parameter',
           'string_parameter']

INT32_MAX = 2 ** 31 - 1


def float_parameter(description: str, low: float, high: float, step: float = 0.0, *,
                    read_only: bool = False) -> ParameterDescriptor:
    """Describe a double parameter in [low, high] (step 0: any value in the range)."""
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_DOUBLE, description=description, read_only=read_only,
        additional_constraints=f'{low:g} to {high:g}',
        floating_point_range=[FloatingPointRange(from_value=float(low), to_value=float(high),
                                                 step=float(step))])


def int_parameter(description: str, low: int, high: int, step: int = 1, *,
                  read_only: bool = False) -> ParameterDescriptor:
    """Describe an integer parameter in [low, high]."""
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER, description=description, read_only=read_only,
        additional_constraints=f'{low} to {high}',
        integer_range=[IntegerRange(from_value=int(low), to_value=int(high), step=int(step))])


def string_parameter(description: str, *, choices: Sequence[str] = (),
                     constraints: Optional[str] = None,
                     read_only: bool = False) -> ParameterDescriptor:
    """Describe a string parameter; ``choices`` are listed (the node enforces them)."""
    if constraints is None:
        constraints = 'one of: ' + ', '.join(choices) if choices else ''
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING, description=description, read_only=read_only,
        additional_constraints=constraints)


def bool_parameter(description: str, *, read_only: bool = False) -> ParameterDescriptor:
    """Describe a boolean parameter."""
    return ParameterDescriptor(type=ParameterType.PARAMETER_BOOL, description=description,
                               read_only=read_only)


def string_array_parameter(description: str, *, constraints: str = '',
                           read_only: bool = False) -> ParameterDescriptor:
    """Describe a string array parameter."""
    return ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING_ARRAY, description=description,
        read_only=read_only, additional_constraints=constraints)
