"""Activation functions (tutorial chapter 6.3), as the rest of the service uses them.

The work is in three modules of one job each: :mod:`service.ops.nn.registry` (the table of
functions and the lookup by name), :mod:`service.ops.nn.binding` (a request's functions with
their parameters' values) and :mod:`service.ops.nn.evaluation` (values, derivatives by
autograd and their cost). This module gathers their public names, which other domains
import from here (the convolution route's activation, for one).
"""

from __future__ import annotations

from service.ops.nn.binding import BoundActivation, bind
from service.ops.nn.evaluation import (
    BACKWARD_FACTOR,
    ELEMENTWISE_FLOPS,
    JACOBIAN_CHUNK_ELEMENTS,
    Evaluation,
    as_input,
    charge,
    evaluate,
)
from service.ops.nn.registry import (
    ACTIVATIONS,
    DEFAULT_FUNCTIONS,
    Activation,
    Param,
    ParamKind,
    ParamValue,
    find_activation,
)

__all__ = [
    "ACTIVATIONS",
    "BACKWARD_FACTOR",
    "DEFAULT_FUNCTIONS",
    "ELEMENTWISE_FLOPS",
    "JACOBIAN_CHUNK_ELEMENTS",
    "Activation",
    "BoundActivation",
    "Evaluation",
    "Param",
    "ParamKind",
    "ParamValue",
    "as_input",
    "bind",
    "charge",
    "evaluate",
    "find_activation",
]
