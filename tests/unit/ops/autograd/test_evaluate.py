"""The evaluator: every intermediate charged on the meta device, the same shapes for real."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from service.errors import LimitExceeded
from service.limits import Budget
from service.ops.autograd.evaluate import META, Evaluation, evaluate
from service.ops.autograd.gradients import plan_gradient
from service.ops.autograd.parse import parse_expression
from tests.unit.ops.autograd.helpers import CPU, LIMITS, grad_of
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


HUGE = 2**63 - 1


@pytest.mark.parametrize(
    ("subscript", "numpy_index", "shape"),
    [
        # torch's own arithmetic: "integer multiplication overflow" (NumPy: [0])
        (f"x[::{HUGE}]", np.s_[::HUGE], (4,)),
        (f"x[::{HUGE}]", np.s_[::HUGE], (4, 4)),  # torch alone: negative strides
        (f"x[:, ::{HUGE}]", np.s_[:, ::HUGE], (0, 2)),  # torch alone: a [0, -1] tensor
        (f"x[{HUGE}:]", np.s_[HUGE:], (3,)),
        (f"x[-{HUGE}:{HUGE}, 1::{HUGE}]", np.s_[-HUGE:HUGE, 1::HUGE], (3, 2)),
    ],
)
def test_subscripts_with_huge_steps_and_bounds_give_numpys_answer(
    subscript: str, numpy_index: object, shape: tuple[int, ...]
) -> None:
    data = np.arange(float(np.prod(shape)), dtype=np.float32).reshape(shape)
    inputs = {"x": torch.from_numpy(data)}
    expression = parse_expression(subscript, inputs, limits=LIMITS)
    meta = evaluate(expression, {"x": inputs["x"].to(META)}, Evaluation(META))
    real = evaluate(expression, inputs, Evaluation(CPU))
    assert isinstance(real, torch.Tensor) and isinstance(meta, torch.Tensor)
    expected = data[numpy_index]  # type: ignore[index]
    assert tuple(real.shape) == tuple(meta.shape) == expected.shape
    assert np.array_equal(real.numpy(), expected)


def test_a_huge_step_has_the_gradient_of_numpys_selection() -> None:
    x = torch.arange(4.0)
    got = grad_of(f"sum(x[::{HUGE}])", {"x": x})
    assert got.value.item() == 0.0
    torch.testing.assert_close(got.grads["x"], torch.tensor([1.0, 0.0, 0.0, 0.0]))
