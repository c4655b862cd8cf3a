"""A ``/tensor/ops`` program planned, then run.

A program runs twice: first on the ``meta`` device, where every step yields its output's
shape and dtype without storage, so element and FLOP limits are charged before any memory
is allocated (:func:`plan_program`); then, if it fits, on the real device
(:func:`run_program`). The interpreter itself is :mod:`service.ops.tensors.interpreter`,
the ops are listed in :mod:`service.ops.tensors.table`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.tensors.interpreter import execute
from service.ops.tensors.runtime import META, Context, Value
from service.ops.tensors.table import OPS

__all__ = [
    "META",
    "OPS",
    "Context",
    "Value",
    "execute",
    "plan_program",
    "run_program",
    "warm_up",
]


def plan_program(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    returns: Sequence[str] | None,
    budget: Budget,
) -> list[str]:
    """Run the program on ``meta`` (shapes and dtypes only) and charge it to ``budget``.

    Raises before anything is allocated if a step is over a limit or invalid. Returns the
    names to return (``returns``, default: what the last step stored).
    """
    meta = Context(META, budget=budget, max_elements=budget.max_elements)
    if returns:
        budget.charge_objects(len(returns), f"{len(returns):,} names to return")
    planned, last = execute(inputs, steps, meta)
    names = list(returns) if returns else last
    missing = [name for name in names if name not in planned]
    if missing:
        raise InvalidInput(
            f"return: unknown names {missing}; known: {', '.join(sorted(planned))}",
            details={"unknown": missing, "known": sorted(planned)},
            code=ErrorCode.UNKNOWN_NAME,
        )
    return names


def run_program(
    inputs: Mapping[str, torch.Tensor],
    steps: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    device: torch.device,
    deadline: Deadline | None = None,
    seed: int | None = None,
    max_elements: int = 1 << 62,
) -> dict[str, Value]:
    """Run a planned program on ``device``; return the values called ``names``."""
    real = Context(device, deadline=deadline, seed=seed, max_elements=max_elements)
    env, _ = execute(inputs, steps, real)
    return {name: env[name] for name in names}


def warm_up() -> None:
    """Run a small program through the common ops once.

    torch loads many of its meta-device kernels on first use, which costs a second or more;
    paying it at start-up keeps that out of the first requests.
    """
    steps: list[dict[str, Any]] = [
        {"op": "arange", "start": 0, "end": 16, "step": 1, "dtype": "float32", "out": "a"},
        {"op": "reshape", "x": "a", "shape": [2, 2, 4], "out": "a"},
        {"op": "index", "x": "a", "index": "[:, 1, :-1]", "out": "b"},
        {"op": "cat", "tensors": ["a", "a"], "dim": 0, "out": "c"},
        {"op": "stack", "tensors": ["a", "a"], "dim": 0, "out": "c"},
        {"op": "sum", "x": "a", "dim": 0, "keepdim": False, "dtype": None, "out": "c"},
        {"op": "t", "x": "b", "out": "c"},
        {"op": "matmul", "x": "b", "y": "c", "out": "c"},
        {"op": "add", "x": "a", "y": 1, "alpha": 1, "out": "c"},
        {"op": "expand", "x": "b", "size": [3, 2, 3], "out": "c"},
        {"op": "transpose", "x": "a", "dim0": 0, "dim1": 1, "out": "c"},
        {"op": "softmax", "x": "a", "dim": 0, "dtype": None, "out": "c"},
        {"op": "max", "x": "a", "dim": 0, "keepdim": False, "out": "c"},
    ]
    names = plan_program({}, steps, None, Budget(1 << 20, 1 << 20, 1e9))
    run_program({}, steps, names, device=torch.device("cpu"))
