"""Elementwise ops: ``add sub mul div pow clamp neg abs exp log sqrt sin cos tanh sigmoid
relu``, broadcasting as torch does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from service.errors import InvalidInput
from service.ops.tensors.runtime import Context, OpFn


def _clamp(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    if args["min"] is None and args["max"] is None:
        raise InvalidInput("clamp: give min, max or both")
    return torch.clamp(args["x"], min=args["min"], max=args["max"])


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> OpFn:
    return lambda args, ctx: fn(args["x"])


ELEMENTWISE_OPS: dict[str, OpFn] = {
    "add": lambda a, c: torch.add(a["x"], a["y"], alpha=a["alpha"]),
    "sub": lambda a, c: torch.sub(a["x"], a["y"], alpha=a["alpha"]),
    "mul": lambda a, c: torch.mul(a["x"], a["y"]),
    "div": lambda a, c: torch.div(a["x"], a["y"], rounding_mode=a["rounding_mode"]),
    "pow": lambda a, c: torch.pow(a["x"], a["exponent"]),
    "clamp": _clamp,
    "neg": _unary(torch.neg),
    "abs": _unary(torch.abs),
    "exp": _unary(torch.exp),
    "log": _unary(torch.log),
    "sqrt": _unary(torch.sqrt),
    "sin": _unary(torch.sin),
    "cos": _unary(torch.cos),
    "tanh": _unary(torch.tanh),
    "sigmoid": _unary(torch.sigmoid),
    "relu": _unary(torch.relu),
}
