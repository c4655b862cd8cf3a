"""The ``/tensor/ops`` interpreter: named tensors, steps in order, torch's own functions.

Steps are plain dicts (``op`` plus torch's parameter names) whose tensor arguments are
names, tensors or Python numbers. :func:`execute` resolves them, charges the tensors the
step will return (counted from its arguments), runs the op from
:data:`~service.ops.tensors.table.OPS` and charges what it produced (every output as a
shape) and its work (:mod:`~service.ops.tensors.costs`) to the context's budget; on the
``meta`` device that is the plan, on a real device the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from service.errors import ErrorCode, InvalidInput, OpError, ServiceError
from service.memory import allocation_failed
from service.ops.tensors.costs import charge_outputs, charge_work
from service.ops.tensors.runtime import Context, Value
from service.ops.tensors.table import OPS

#: The step arguments that name (or hold) one tensor; ``tensors`` holds a list of them.
TENSOR_ARGS = ("x", "y", "exponent", "data")

_NON_FINITE_SCALARS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _resolve(
    value: Any, env: Mapping[str, Value], ctx: Context, where: str, *, scalar_ok: bool = False
) -> Any:
    if isinstance(value, str):
        if value not in env and value in _NON_FINITE_SCALARS:
            # A non-finite number written as JSON allows: a Python scalar where one may
            # stand (y, exponent), else a 0-d tensor, as torch.tensor(float("nan")).
            number = _NON_FINITE_SCALARS[value]
            return number if scalar_ok else torch.tensor(number, device=ctx.device)
        if value not in env:
            known = ", ".join(sorted(env)) or "none yet"
            raise InvalidInput(
                f"{where}: unknown tensor {value!r}; known names: {known}",
                details={"name": value, "known": sorted(env)},
                code=ErrorCode.UNKNOWN_NAME,
            )
        found = env[value]
        if not isinstance(found, torch.Tensor):
            raise InvalidInput(f"{where}: {value!r} is an info result, not a tensor")
        return found
    if isinstance(value, torch.Tensor):
        if ctx.budget is not None:  # an inline tensor: it counts like an input
            ctx.budget.charge_shape(value.shape, where)
        return value.to(ctx.device)
    return value  # a Python number


def _store(result: Any, out: str) -> dict[str, Value]:
    if isinstance(result, torch.Tensor):
        return {out: result}
    if isinstance(result, (tuple, list)):
        return {f"{out}.{i}": piece for i, piece in enumerate(result)}
    if isinstance(result, dict) and "" in result:
        return {(out if key == "" else f"{out}.{key}"): value for key, value in result.items()}
    return {out: result}  # an info dict


def execute(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    ctx: Context,
) -> tuple[dict[str, Value], list[str]]:
    """Run the steps; return every named value and the names the last step stored."""
    env: dict[str, Value] = {name: t.to(ctx.device) for name, t in inputs.items()}
    if ctx.budget is not None:
        for name, tensor in env.items():
            assert isinstance(tensor, torch.Tensor)
            ctx.budget.charge_shape(tensor.shape, f"input {name!r}")
    last: list[str] = []
    for number, step in enumerate(steps):
        op = step["op"]
        where = f"step {number} ({op})"
        args = dict(step)
        del args["op"], args["out"]
        for key in TENSOR_ARGS:
            if key in args:
                scalar_ok = key in ("y", "exponent")
                args[key] = _resolve(args[key], env, ctx, f"{where}.{key}", scalar_ok=scalar_ok)
        if "tensors" in args:
            args["tensors"] = [
                _resolve(v, env, ctx, f"{where}.tensors[{i}]")
                for i, v in enumerate(args["tensors"])
            ]
        try:
            if ctx.budget is not None:
                # Counted from the arguments: torch's meta pass builds every piece too.
                charge_outputs(op, args, ctx.budget, where)
            result = OPS[op](args, ctx)
        except ServiceError as exc:
            if not exc.message.startswith("step "):
                exc.message = f"{where}: {exc.message}"
            exc.details.setdefault("step", number)
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # ArithmeticError: torch's OverflowError for a Python int beyond int64 (a fill
            # value, a scalar operand, a correction), which would otherwise be a 500.
            if allocation_failed(exc):
                raise
            raise OpError(f"{where}: {exc}", details={"step": number, "op": op}) from exc
        stored = _store(result, step["out"])
        if ctx.budget is not None:
            tensors = [v for v in stored.values() if isinstance(v, torch.Tensor)]
            try:
                for name, value in stored.items():
                    if isinstance(value, torch.Tensor):
                        ctx.budget.charge_shape(value.shape, f"{where} output {name!r}")
                charge_work(op, args, tensors, ctx.budget, where)
            except ServiceError as exc:
                exc.details.setdefault("step", number)  # as for limits checked inside ops
                raise
        if ctx.deadline is not None:
            ctx.deadline.check()
        env.update(stored)
        last = list(stored)
    return env, last
