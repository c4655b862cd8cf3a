"""``POST /tensor/ops`` without HTTP: the request decoded and planned, then run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from schemas.common import Tensor
from schemas.tensors import TensorOpsRequest
from service.errors import LimitExceeded
from service.limits import Deadline
from service.ops.context import ComputeContext
from service.ops.tensors.program import Shaped, plan_program, run_program


@dataclass
class TensorOpsPlan:
    """A program decoded and planned against the limits: what running it needs."""

    inputs: dict[str, torch.Tensor]
    steps: list[dict[str, Any]]
    names: list[str]
    device: torch.device
    seed: int | None
    max_elements: int
    answer: list[Shaped] = field(default_factory=list)
    """The shape and dtype of every tensor returned (the response sized before the work)."""


_DECODED = (Tensor, list)
"""The kinds of step argument that may hold wire tensors."""


def _decode_arg(value: Any, ctx: ComputeContext, where: str) -> Any:
    if isinstance(value, Tensor):
        return ctx.decode(value.root, where)
    if isinstance(value, list):
        return [_decode_arg(item, ctx, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def decode_program(
    ctx: ComputeContext, body: TensorOpsRequest
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The inputs as tensors and the steps as plain dicts, exactly as the interpreter takes
    them. Field by field, not ``model_dump()``: inline tensors are not copied element by
    element."""
    inputs = {name: ctx.decode(t.root, f"inputs.{name}") for name, t in body.inputs.items()}
    steps = []
    for number, step in enumerate(body.steps):
        fields = dict(step.__dict__)  # the model's fields, in their order
        for name, value in fields.items():
            if isinstance(value, _DECODED):
                fields[name] = _decode_arg(value, ctx, f"steps.{number}.{name}")
        steps.append(fields)
    return inputs, steps


def prepare_tensor_ops(ctx: ComputeContext, body: TensorOpsRequest) -> TensorOpsPlan:
    """Decode the inputs and inline tensors, and charge every step's planned output."""
    if len(body.steps) > ctx.limits.max_steps:
        raise LimitExceeded("max_steps", ctx.limits.max_steps, len(body.steps), "the program")
    if body.inputs:
        ctx.budget.charge_objects(len(body.inputs), f"{len(body.inputs):,} inputs")
    inputs, steps = decode_program(ctx, body)
    answer: list[Shaped] = []
    names = plan_program(inputs, steps, body.returns, ctx.budget, answer=answer)
    limit = ctx.limits.max_elements
    return TensorOpsPlan(inputs, steps, names, ctx.device, body.seed, limit, answer)


def compute_tensor_ops(plan: TensorOpsPlan, deadline: Deadline) -> dict[str, Any]:
    """Run the planned program on its device."""
    outputs = run_program(
        plan.inputs,
        plan.steps,
        plan.names,
        device=plan.device,
        deadline=deadline,
        seed=plan.seed,
        max_elements=plan.max_elements,
    )
    return {"outputs": outputs}
