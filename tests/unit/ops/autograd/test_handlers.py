"""``POST /grad`` without HTTP: prepare against a context's limits, then compute."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

from schemas.autograd import CHAPTER_5, HESSIAN_EXAMPLE, GradRequest
from service.config import Limits
from service.errors import LimitExceeded
from service.limits import Deadline
from service.ops.autograd.handlers import GradPlan, compute_grad, prepare_grad
from service.ops.context import ComputeContext
from tests.unit.ops.autograd.helpers import CPU


def context(**limits: Any) -> ComputeContext:
    return ComputeContext(Limits(**limits), CPU)


def run(body: dict[str, Any], ctx: ComputeContext | None = None) -> dict[str, Any]:
    plan = prepare_grad(ctx or context(), GradRequest.model_validate(body))
    return compute_grad(plan, Deadline(30.0))


def test_chapter_5_through_prepare_and_compute() -> None:
    content = run(CHAPTER_5)
    x = torch.tensor(CHAPTER_5["inputs"]["x"]["data"], requires_grad=True)
    value = torch.sum(x**2 + 2 * x + 1)
    (expected,) = torch.autograd.grad(value, [x])
    assert set(content) == {"value", "grads"}
    torch.testing.assert_close(content["value"], value.detach())
    torch.testing.assert_close(content["grads"]["x"], expected)


def test_hessians_are_in_the_content_when_asked_for() -> None:
    content = run(HESSIAN_EXAMPLE)
    x = torch.tensor(HESSIAN_EXAMPLE["inputs"]["x"]["data"])
    w = torch.tensor(HESSIAN_EXAMPLE["inputs"]["w"])
    expected = torch.autograd.functional.hessian(
        lambda x, w: torch.sum(w * x**2) + torch.dot(w, x), (x, w)
    )
    for i, a in enumerate(HESSIAN_EXAMPLE["wrt"]):
        for j, b in enumerate(HESSIAN_EXAMPLE["wrt"]):
            torch.testing.assert_close(content["hessians"][a][b], expected[i][j])


def test_prepare_charges_the_context_budget() -> None:
    ctx = context()
    a = torch.ones(30, 40)
    body = {"expression": "sum(a @ t(a))", "inputs": {"a": a.tolist()}}
    prepare_grad(ctx, GradRequest.model_validate(body))
    assert ctx.budget.elements >= 2 * a.numel()  # the input and its gradient
    assert ctx.budget.flops >= 2 * 30 * 40 * 30  # the matmul, forward


@pytest.mark.parametrize(
    ("limits", "body", "limit", "allowed", "requested"),
    [
        (
            {"max_expression_length": 8},
            {"expression": "sum(x * 2)"},
            "max_expression_length",
            8,
            10,
        ),
        ({"max_expression_nodes": 4}, {"expression": "sum(x * 2)"}, "max_expression_nodes", 4, 5),
        ({"max_expression_depth": 2}, {"expression": "sum(x * 2)"}, "max_expression_depth", 2, 3),
        (
            {"max_hessian_elements": 2},
            {"expression": "sum(x * 2)", "hessian": True},
            "max_hessian_elements",
            2,
            3,
        ),
        ({"max_elements": 2}, {"expression": "sum(x * 2)"}, "max_elements", 2, 3),
        ({"max_flops": 1}, {"expression": "sum(x * 2)"}, "max_flops", 1, 3.0),
    ],
    ids=["length", "nodes", "depth", "hessian", "elements", "flops"],
)
def test_prepare_refuses_over_the_context_limits(
    limits: dict[str, Any], body: dict[str, Any], limit: str, allowed: float, requested: float
) -> None:
    ctx = context(**limits)
    request = GradRequest.model_validate({**body, "inputs": {"x": [1.0, 2.0, 3.0]}})
    with pytest.raises(LimitExceeded) as exc:
        prepare_grad(ctx, request)
    assert exc.value.details["limit"] == limit
    assert exc.value.details["allowed"] == allowed
    assert exc.value.details["requested"] == requested


def test_the_plan_is_plain_data_that_survives_pickling() -> None:
    plan = prepare_grad(context(), GradRequest.model_validate(HESSIAN_EXAMPLE))
    copy = pickle.loads(pickle.dumps(plan))
    assert isinstance(copy, GradPlan)
    assert copy.device == plan.device
    here, there = compute_grad(plan, Deadline(30.0)), compute_grad(copy, Deadline(30.0))
    torch.testing.assert_close(there["value"], here["value"])
    for name, grad in here["grads"].items():
        torch.testing.assert_close(there["grads"][name], grad)
    for a, row in here["hessians"].items():
        for b, block in row.items():
            torch.testing.assert_close(there["hessians"][a][b], block)
