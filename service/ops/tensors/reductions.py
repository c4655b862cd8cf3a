"""Ops along dimensions: reductions ``sum mean std var max min argmax argmin norm``, the
scans ``cumsum softmax``, and ``matmul`` (a sum of products)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from service.codec import DTYPE_NAMES
from service.errors import InvalidInput
from service.ops import products
from service.ops.softmax import softmax
from service.ops.tensors.arguments import dims_arg, dtype_arg
from service.ops.tensors.runtime import Context, OpFn


def _reduce(fn: Callable[..., torch.Tensor]) -> OpFn:
    def run(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
        kwargs: dict[str, Any] = {"keepdim": args["keepdim"]}
        if "dtype" in args and args["dtype"] is not None:
            kwargs["dtype"] = dtype_arg(args)
        if "correction" in args:
            kwargs["correction"] = args["correction"]
        dim = dims_arg(args["dim"])
        if dim is None:
            if kwargs["keepdim"]:
                dim = tuple(range(args["x"].dim()))
            else:
                kwargs.pop("keepdim")
        return fn(args["x"], dim=dim, **kwargs) if dim is not None else fn(args["x"], **kwargs)

    return run


def _extremum(fn: Callable[..., Any]) -> OpFn:
    def run(args: Mapping[str, Any], ctx: Context) -> Any:
        if args["dim"] is None:
            return fn(args["x"])
        values, indices = fn(args["x"], dim=args["dim"], keepdim=args["keepdim"])
        # The values under the step's own name, the indices as "<out>.indices".
        return {"": values, "indices": indices}

    return run


def _arg(fn: Callable[..., torch.Tensor]) -> OpFn:
    return lambda args, ctx: fn(args["x"], dim=args["dim"], keepdim=args["keepdim"])


def _norm(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    x: torch.Tensor = args["x"]
    if not (x.is_floating_point() or x.is_complex()):
        raise InvalidInput(
            f"norm needs a float tensor, x is {DTYPE_NAMES[x.dtype]}; "
            "convert it first with a 'to' step"
        )
    p = {"Infinity": math.inf, "-Infinity": -math.inf}.get(args["p"], args["p"])
    norm: torch.Tensor = torch.norm(x, p=p, dim=dims_arg(args["dim"]), keepdim=args["keepdim"])
    return norm


REDUCTION_OPS: dict[str, OpFn] = {
    "sum": _reduce(torch.sum),
    "mean": _reduce(torch.mean),
    "std": _reduce(torch.std),
    "var": _reduce(torch.var),
    "max": _extremum(torch.max),
    "min": _extremum(torch.min),
    "argmax": _arg(torch.argmax),
    "argmin": _arg(torch.argmin),
    "norm": _norm,
    "cumsum": lambda a, c: torch.cumsum(a["x"], dim=a["dim"], dtype=dtype_arg(a)),
    "softmax": lambda a, c: softmax(a["x"], dim=a["dim"], dtype=dtype_arg(a)),
    "matmul": lambda a, c: products.matmul(a["x"], a["y"]),
}
