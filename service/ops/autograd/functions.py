"""The functions an expression of ``POST /grad`` may call: torch's, by name, with their
parameters, and the names with a fixed value (``pi``, ``e``, ``inf``).

A function is called by keyword from the parsed call (``spec.fn(**arguments)``), so each
entry states its parameter names and defaults; :mod:`.check` resolves a call against them
before anything is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional

from service.errors import ErrorCode, InvalidInput
from service.ops import products
from service.ops.softmax import softmax

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "inf": math.inf}
"""Names with a fixed value."""

Value = torch.Tensor | int | float | bool | None | tuple[int, ...]
"""What an expression node evaluates to."""
Number = int | float | bool
"""A plain number in an expression (a literal, a constant, arithmetic on them)."""


@dataclass(frozen=True)
class FunctionSpec:
    """A function callable from an expression: torch's, with its parameter names."""

    fn: Callable[..., torch.Tensor]
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    tensors: tuple[str, ...] = ("input",)
    """Parameters that must be tensors: a plain number there becomes a 0-d tensor."""
    matmul: bool = False
    """FLOPs are those of ``matmul(input, other)`` rather than one per element."""

    @property
    def required(self) -> tuple[str, ...]:
        """The parameters without a default: a call must give each of them."""
        return tuple(p for p in self.params if p not in self.defaults)

    def signature(self, name: str) -> str:
        """The function as the docs show it, e.g. ``clamp(input, min=None, max=None)``."""
        parts = [p if p not in self.defaults else f"{p}={self.defaults[p]!r}" for p in self.params]
        return f"{name}({', '.join(parts)})"


def _all_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(tensor.dim()))


def _reduction(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def run(input: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
        if dim is None:
            if keepdim and input.dim():
                return fn(input, dim=_all_dims(input), keepdim=True)
            return fn(input)
        return fn(input, dim=dim, keepdim=keepdim)

    return run


def _prod(input: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    if dim is None:
        out = torch.prod(input)
        return out.reshape([1] * input.dim()) if keepdim else out
    return torch.prod(input, dim, keepdim=keepdim)


def _spread(
    fn: Callable[..., torch.Tensor],
) -> Callable[..., torch.Tensor]:
    def run(
        input: torch.Tensor,
        dim: Any = None,
        correction: float = 1,
        keepdim: bool = False,
    ) -> torch.Tensor:
        return fn(input, dim=dim, correction=correction, keepdim=keepdim)

    return run


def _extremum(
    reduce: Callable[..., Any],
    elementwise: Callable[..., torch.Tensor],
    bound: str,
) -> Callable[..., torch.Tensor]:
    # Python's reading of max(a, b) (the larger of two), torch's of max(x, dim=d).
    def run(
        input: torch.Tensor,
        other: Value = None,
        dim: Any = None,
        keepdim: bool = False,
    ) -> torch.Tensor:
        if other is not None:
            if dim is not None:
                raise InvalidInput(
                    "give a second operand or dim=, not both", code=ErrorCode.INVALID_ARGUMENT
                )
            if isinstance(other, torch.Tensor):
                return elementwise(input, other)
            if bound == "min":
                return torch.clamp(input, min=other)  # type: ignore[arg-type]
            return torch.clamp(input, max=other)  # type: ignore[arg-type]
        if dim is None:
            out: torch.Tensor = reduce(input)
            return out.reshape([1] * input.dim()) if keepdim else out
        values: torch.Tensor = reduce(input, dim=dim, keepdim=keepdim).values
        return values

    return run


def _norm(
    input: torch.Tensor,
    p: float = 2,
    dim: Any = None,
    keepdim: bool = False,
) -> torch.Tensor:
    norm: torch.Tensor = torch.norm(input, p=p, dim=dim, keepdim=keepdim)
    return norm


def _where(condition: torch.Tensor, input: Value, other: Value) -> torch.Tensor:
    if condition.dtype != torch.bool:
        raise InvalidInput(
            "where: the condition must be a bool tensor, such as a comparison (x > 0)",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return torch.where(condition, input, other)  # type: ignore[arg-type]


def _pow(input: Value, exponent: Value) -> torch.Tensor:
    return torch.pow(input, exponent)  # type: ignore[arg-type]


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> FunctionSpec:
    return FunctionSpec(fn, ("input",))


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw: Any) -> FunctionSpec:
    return FunctionSpec(
        # Positional: torch names the second operand other, mat2, vec or tensor.
        lambda input, other: fn(input, other),  # noqa: PLW0108
        ("input", "other"),
        tensors=("input", "other"),
        **kw,
    )


_REDUCE = ("input", "dim", "keepdim")
_REDUCE_DEFAULTS = {"dim": None, "keepdim": False}

FUNCTIONS: dict[str, FunctionSpec] = {
    # reductions
    "sum": FunctionSpec(_reduction(torch.sum), _REDUCE, _REDUCE_DEFAULTS),
    "mean": FunctionSpec(_reduction(torch.mean), _REDUCE, _REDUCE_DEFAULTS),
    "prod": FunctionSpec(_prod, _REDUCE, _REDUCE_DEFAULTS),
    "max": FunctionSpec(
        _extremum(torch.max, torch.maximum, "min"),
        ("input", "other", "dim", "keepdim"),
        {"other": None, "dim": None, "keepdim": False},
    ),
    "min": FunctionSpec(
        _extremum(torch.min, torch.minimum, "max"),
        ("input", "other", "dim", "keepdim"),
        {"other": None, "dim": None, "keepdim": False},
    ),
    "norm": FunctionSpec(
        _norm, ("input", "p", "dim", "keepdim"), {"p": 2, "dim": None, "keepdim": False}
    ),
    "var": FunctionSpec(
        _spread(torch.var),
        ("input", "dim", "correction", "keepdim"),
        {"dim": None, "correction": 1, "keepdim": False},
    ),
    "std": FunctionSpec(
        _spread(torch.std),
        ("input", "dim", "correction", "keepdim"),
        {"dim": None, "correction": 1, "keepdim": False},
    ),
    "logsumexp": FunctionSpec(
        lambda input, dim, keepdim: torch.logsumexp(input, dim=dim, keepdim=keepdim),
        _REDUCE,
        {"keepdim": False},
    ),
    "softmax": FunctionSpec(
        lambda input, dim: softmax(input, dim=dim),
        ("input", "dim"),
    ),
    "log_softmax": FunctionSpec(
        lambda input, dim: torch.log_softmax(input, dim=dim),
        ("input", "dim"),
    ),
    "cumsum": FunctionSpec(
        lambda input, dim: torch.cumsum(input, dim=dim),
        ("input", "dim"),
    ),
    "cumprod": FunctionSpec(
        lambda input, dim: torch.cumprod(input, dim=dim),
        ("input", "dim"),
    ),
    # elementwise, one operand
    "exp": _unary(torch.exp),
    "exp2": _unary(torch.exp2),
    "expm1": _unary(torch.expm1),
    "log": _unary(torch.log),
    "log2": _unary(torch.log2),
    "log10": _unary(torch.log10),
    "log1p": _unary(torch.log1p),
    "sqrt": _unary(torch.sqrt),
    "rsqrt": _unary(torch.rsqrt),
    "square": _unary(torch.square),
    "reciprocal": _unary(torch.reciprocal),
    "abs": _unary(torch.abs),
    "sign": _unary(torch.sign),
    "floor": _unary(torch.floor),
    "ceil": _unary(torch.ceil),
    "round": _unary(torch.round),
    "sin": _unary(torch.sin),
    "cos": _unary(torch.cos),
    "tan": _unary(torch.tan),
    "asin": _unary(torch.asin),
    "acos": _unary(torch.acos),
    "atan": _unary(torch.atan),
    "sinh": _unary(torch.sinh),
    "cosh": _unary(torch.cosh),
    "tanh": _unary(torch.tanh),
    "asinh": _unary(torch.asinh),
    "acosh": _unary(torch.acosh),
    "atanh": _unary(torch.atanh),
    "erf": _unary(torch.erf),
    "erfc": _unary(torch.erfc),
    # activations
    "sigmoid": _unary(torch.sigmoid),
    "logsigmoid": _unary(functional.logsigmoid),
    "relu": _unary(torch.relu),
    "gelu": _unary(functional.gelu),
    "silu": _unary(functional.silu),
    "mish": _unary(functional.mish),
    "selu": _unary(functional.selu),
    "softsign": _unary(functional.softsign),
    "softplus": FunctionSpec(
        lambda input, beta, threshold: functional.softplus(input, beta=beta, threshold=threshold),
        ("input", "beta", "threshold"),
        {"beta": 1.0, "threshold": 20.0},
    ),
    "leaky_relu": FunctionSpec(
        functional.leaky_relu,
        ("input", "negative_slope"),
        {"negative_slope": 0.01},
    ),
    "elu": FunctionSpec(
        functional.elu,
        ("input", "alpha"),
        {"alpha": 1.0},
    ),
    # elementwise, several operands
    "pow": FunctionSpec(_pow, ("input", "exponent"), tensors=()),
    "clamp": FunctionSpec(
        lambda input, min, max: torch.clamp(input, min=min, max=max),
        ("input", "min", "max"),
        {"min": None, "max": None},
    ),
    "where": FunctionSpec(_where, ("condition", "input", "other"), tensors=("condition",)),
    "maximum": _binary(torch.maximum),
    "minimum": _binary(torch.minimum),
    "atan2": _binary(torch.atan2),
    # linear algebra and shapes
    "matmul": _binary(products.matmul, matmul=True),
    "mm": _binary(products.widening(torch.mm), matmul=True),
    "mv": _binary(products.widening(torch.mv), matmul=True),
    "dot": _binary(products.widening(torch.dot), matmul=True),
    "outer": _binary(torch.outer),
    "trace": _unary(torch.trace),
    "t": _unary(torch.t),
    "transpose": FunctionSpec(
        torch.transpose,
        ("input", "dim0", "dim1"),
    ),
    "reshape": FunctionSpec(
        torch.reshape,
        ("input", "shape"),
    ),
}
"""Every function an expression may call, by name."""


def function_signatures() -> list[str]:
    """Each function with its parameters and defaults, e.g. ``sum(input, dim=None, …)``."""
    return [spec.signature(name) for name, spec in FUNCTIONS.items()]
