"""``POST /grad`` without HTTP: the request decoded and planned, then differentiated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from schemas.autograd import GradRequest
from service.limits import Deadline
from service.ops.autograd.gradients import GradientPlan, compute_gradient, plan_gradient
from service.ops.context import ComputeContext


@dataclass
class GradPlan:
    """An expression parsed, checked and charged against the limits, and where to run it."""

    gradient: GradientPlan
    device: torch.device


def prepare_grad(ctx: ComputeContext, body: GradRequest) -> GradPlan:
    """Decode the inputs, then parse the expression and charge its evaluation, backward pass
    and hessian to the context's budget (the expression and hessian limits: ``ctx.limits``)."""
    inputs = {name: ctx.decode(t.root, f"inputs.{name}") for name, t in body.inputs.items()}
    gradient = plan_gradient(
        body.expression,
        inputs,
        body.wrt,
        hessian=body.hessian,
        budget=ctx.budget,
        limits=ctx.limits,
    )
    return GradPlan(gradient, ctx.device)


def compute_grad(plan: GradPlan, deadline: Deadline) -> dict[str, Any]:
    """The value, the gradients and (when asked for) the hessians, on the plan's device."""
    result = compute_gradient(plan.gradient, device=plan.device, deadline=deadline)
    content: dict[str, Any] = {"value": result.value, "grads": result.grads}
    if result.hessians is not None:
        content["hessians"] = result.hessians
    return content
