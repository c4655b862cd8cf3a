"""Factory ops: ``tensor eye zeros ones full arange linspace rand randn randint``.

Each checks the size it is asked for as a shape (elements, and no dimension longer than
the element limit even beside a 0) before it allocates. On the ``meta`` pass the factories
whose shape follows from their arguments return an empty meta tensor of that shape
directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from service.codec import check_shape
from service.errors import InvalidInput
from service.ops.tensors.arguments import dtype_arg, size_arg
from service.ops.tensors.runtime import META, Context, OpFn


def _random(
    draw: Callable[..., torch.Tensor], args: Mapping[str, Any], ctx: Context, **kwargs: Any
) -> torch.Tensor:
    # Drawn on the CPU so a seed gives the same numbers on every device.
    size = size_arg(args, ctx, f"{draw.__name__} of size {list(args['size'])}")
    device = META if ctx.is_meta else torch.device("cpu")
    out = draw(
        *kwargs.pop("pos", ()),
        size,
        generator=ctx.generator(args.get("seed")),
        dtype=dtype_arg(args),
        device=device,
        **kwargs,
    )
    return out if ctx.is_meta else out.to(ctx.device)


def _full(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    size = size_arg(args, ctx, f"full of size {list(args['size'])}")
    return torch.full(size, args["fill_value"], dtype=dtype_arg(args), device=ctx.device)


def _sized(fn: Callable[..., torch.Tensor]) -> OpFn:
    def run(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
        size = size_arg(args, ctx, f"{fn.__name__} of size {list(args['size'])}")
        return fn(size, dtype=dtype_arg(args), device=ctx.device)

    return run


def _planned(shape: list[int], dtype: torch.dtype | None) -> torch.Tensor:
    # A factory's shape and dtype are known from its arguments. torch's meta versions of
    # eye, arange and linspace run Python reference code (50-300 µs); this costs 2 µs.
    return torch.empty(shape, dtype=dtype or torch.get_default_dtype(), device=META)


def _eye(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    n, m = args["n"], args.get("m")
    check_shape([n, n if m is None else m], ctx.max_elements, f"eye({n}, {m})")
    if ctx.is_meta:
        return _planned([n, n if m is None else m], dtype_arg(args))
    if m is None:
        return torch.eye(n, dtype=dtype_arg(args), device=ctx.device)
    return torch.eye(n, m, dtype=dtype_arg(args), device=ctx.device)


def _arange(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    start, end, step = args["start"], args["end"], args["step"]
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step)):
        raise InvalidInput(
            f"arange: start, end and step must be finite, got {start}, {end}, {step}"
        )
    if step == 0:
        raise InvalidInput("arange: step must not be zero")
    count = max(0, math.ceil((end - start) / step))
    if count > ctx.max_elements:  # the one way a shape [count] fails check_shape
        check_shape([count], ctx.max_elements, f"arange({start}, {end}, {step})")
    if ctx.is_meta:
        integral = all(isinstance(v, int) for v in (start, end, step))
        return _planned([count], dtype_arg(args) or (torch.int64 if integral else None))
    return torch.arange(start, end, step, dtype=dtype_arg(args), device=ctx.device)


def _linspace(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    check_shape([args["steps"]], ctx.max_elements, f"linspace with {args['steps']} steps")
    if ctx.is_meta:
        return _planned([args["steps"]], dtype_arg(args))
    return torch.linspace(
        args["start"], args["end"], args["steps"], dtype=dtype_arg(args), device=ctx.device
    )


def _tensor(args: Mapping[str, Any], ctx: Context) -> torch.Tensor:
    data: torch.Tensor = args["data"]
    return data.to(device=ctx.device, dtype=dtype_arg(args) or data.dtype)


FACTORY_OPS: dict[str, OpFn] = {
    "tensor": _tensor,
    "eye": _eye,
    "zeros": _sized(torch.zeros),
    "ones": _sized(torch.ones),
    "full": _full,
    "arange": _arange,
    "linspace": _linspace,
    "rand": lambda a, c: _random(torch.rand, a, c),
    "randn": lambda a, c: _random(torch.randn, a, c),
    "randint": lambda a, c: _random(torch.randint, a, c, pos=(a["low"], a["high"])),
}
