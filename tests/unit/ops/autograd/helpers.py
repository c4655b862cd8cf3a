"""What the ``/grad`` unit tests share: limits, a roomy budget, torch's own reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from service.config import Limits
from service.limits import Budget, Deadline
from service.ops.autograd.gradients import Gradient, compute_gradient, plan_gradient

CPU = torch.device("cpu")
Env = Mapping[str, torch.Tensor]
LIMITS = Limits()
"""The service's limits as configured by default (the expression and hessian limits)."""


def big_budget() -> Budget:
    return Budget(1 << 40, 1 << 40, 1e30)


def grad_of(
    text: str,
    inputs: Env,
    wrt: list[str] | None = None,
    *,
    hessian: bool = False,
    budget: Budget | None = None,
    limits: Limits = LIMITS,
) -> Gradient:
    plan = plan_gradient(
        text, inputs, wrt, hessian=hessian, budget=budget or big_budget(), limits=limits
    )
    return compute_gradient(plan, device=CPU, deadline=Deadline(30.0))


def reference(fn: Callable[[Env], torch.Tensor], inputs: Env, wrt: list[str]) -> Gradient:
    """torch's own value and gradients of ``fn`` (leaves that it does not use get zeros)."""
    leaves = {name: t.detach().clone().requires_grad_(name in wrt) for name, t in inputs.items()}
    value = fn(leaves)
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    wanted = [leaves[name] for name in wrt]
    if value.requires_grad and wanted:
        grads = torch.autograd.grad(value, wanted, allow_unused=True, materialize_grads=True)
    else:
        grads = tuple(torch.zeros_like(leaf) for leaf in wanted)
    return Gradient(value.detach(), dict(zip(wrt, grads, strict=True)), None)


def assert_same(got: Gradient, expected: Gradient) -> None:
    assert got.value.dtype == expected.value.dtype
    assert got.value.shape == expected.value.shape
    torch.testing.assert_close(got.value, expected.value, equal_nan=True)
    assert set(got.grads) == set(expected.grads)
    for name, grad in expected.grads.items():
        assert got.grads[name].shape == grad.shape, name
        assert got.grads[name].dtype == grad.dtype, name
        torch.testing.assert_close(got.grads[name], grad, equal_nan=True)
