"""The evaluator: every intermediate charged on the meta device, the same shapes for real."""

from __future__ import annotations

import time

import pytest
import torch

from service.errors import LimitExceeded
from service.limits import Budget
from service.ops.autograd.evaluate import META, Evaluation, evaluate
from service.ops.autograd.gradients import plan_gradient
from service.ops.autograd.parse import parse_expression
from tests.unit.ops.autograd.helpers import CPU, LIMITS
from tests.unit.ops.autograd.test_functions import CASES, INPUTS


def test_intermediates_are_charged_before_anything_is_allocated() -> None:
    x = torch.ones(20000, 1)
    y = torch.ones(1, 20000)  # x + y would be 4·10^8 elements
    budget = Budget(1 << 22, 1 << 24, 1e12)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient(
            "sum(x + y)", {"x": x, "y": y}, None, hessian=False, budget=budget, limits=LIMITS
        )
    assert time.perf_counter() - start < 1.0
    assert exc.value.details["limit"] == "max_elements"
    assert exc.value.details["requested"] == 20000 * 20000
    assert exc.value.details["column"] == 4


def test_matmul_flops_are_charged() -> None:
    a, b = torch.ones(300, 400), torch.ones(400, 500)
    budget = Budget(1 << 30, 1 << 30, 1e8)
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient(
            "sum(a @ b)", {"a": a, "b": b}, None, hessian=False, budget=budget, limits=LIMITS
        )
    assert exc.value.details["limit"] == "max_flops"
    ok = Budget(1 << 30, 1 << 30, 1e9)
    plan_gradient("sum(a @ b)", {"a": a, "b": b}, None, hessian=False, budget=ok, limits=LIMITS)
    assert ok.flops >= 2 * 300 * 400 * 500


def test_the_meta_pass_and_the_real_pass_agree_on_shapes() -> None:
    for text, _ in CASES:
        expression = parse_expression(text, INPUTS, limits=LIMITS)
        meta = evaluate(expression, {k: v.to(META) for k, v in INPUTS.items()}, Evaluation(META))
        real = evaluate(expression, INPUTS, Evaluation(CPU))
        if isinstance(real, torch.Tensor):
            assert isinstance(meta, torch.Tensor)
            assert (meta.shape, meta.dtype) == (real.shape, real.dtype), text
