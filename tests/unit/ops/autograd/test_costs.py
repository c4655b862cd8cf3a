"""What ``/grad`` charges before it evaluates anything: every intermediate as a shape, FLOPs
at their dtype's rate, element passes, the backward pass, and each hessian row's own cost."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from service.calibration import Throughput
from service.errors import ErrorCode, InvalidInput, LimitExceeded, ServiceError
from service.limits import Budget
from service.ops.autograd.gradients import (
    HESSIAN_NODE_SECONDS,
    HESSIAN_ROW_SECONDS,
    plan_gradient,
)
from tests.unit.ops.autograd.helpers import LIMITS, grad_of

# Rates fixed as a calibrated CPU's: float16 matmuls 100 times slower than float32.
RATES = Throughput("cpu", {"float32": 1e11, "float16": 1e9}, 1e9)


def budget(**limits: Any) -> Budget:
    return Budget(
        limits.pop("max_elements", 1 << 25),
        limits.pop("max_total_elements", 1 << 27),
        limits.pop("max_flops", 2e12),
        throughput=RATES,
        max_seconds=limits.pop("max_seconds", 30.0),
        max_objects=limits.pop("max_objects", 1_000_000),
    )


def plan(text: str, inputs: dict[str, torch.Tensor], **options: Any) -> Budget:
    charged = options.pop("charged", None) or budget()
    plan_gradient(text, inputs, None, budget=charged, limits=LIMITS, **options)
    return charged


def refused_fast(text: str, inputs: dict[str, torch.Tensor], **options: Any) -> ServiceError:
    start = time.perf_counter()
    with pytest.raises(ServiceError) as refusal:
        plan(text, inputs, **options)
    assert time.perf_counter() - start < 0.5
    return refusal.value


@pytest.fixture(scope="module", autouse=True)
def _meta_kernels_loaded() -> None:
    # torch loads its meta kernels on first use (a second or more); the service at start-up.
    plan("sum(a @ a + sin(a) ** 2)", {"a": torch.ones(2, 2)}, hessian=False)


def test_a_float16_matmul_is_timed_at_the_float16_rate() -> None:
    a16 = torch.zeros(4096, 4096, dtype=torch.float16)
    refusal = refused_fast("sum(a @ a)", {"a": a16}, hessian=False)
    assert isinstance(refusal, LimitExceeded)
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    assert refusal.details["requested"] >= 2 * 4096**3 / 1e9
    # In float32 the forward and backward passes are predicted at 4 s.
    charged = plan("sum(a @ a)", {"a": a16.float()}, hessian=False)
    forward = 2 * 4096**3 / 1e11
    assert 3 * forward <= charged.seconds < 3 * forward + 1.0


def test_the_backward_pass_is_charged_at_the_forwards_dtype() -> None:
    x16 = torch.zeros(1000, dtype=torch.float16)
    seconds = {
        dtype: plan("sum(exp(x) * x)", {"x": x16.to(dtype)}, hessian=False).seconds
        for dtype in (torch.float16, torch.float32)
    }
    assert seconds[torch.float16] > 2 * seconds[torch.float32]


def test_every_hessian_row_costs_a_pass_through_the_expression() -> None:
    """A 1000-node expression over 1024 elements: 1024 backward passes from Python, 14 s
    on a CPU (measured), predicted at 20 s: over a limit of 10 s, refused before the
    expression is evaluated even on ``meta``."""
    term = "sum(sin(x) * cos(x) * exp(x) * x)"
    wide = " + ".join([term] * 60)
    x = torch.rand(1024)
    refusal = refused_fast(wide, {"x": x}, hessian=True, charged=budget(max_seconds=10.0))
    assert isinstance(refusal, LimitExceeded)
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    assert refusal.details["requested"] >= 1024 * 900 * HESSIAN_NODE_SECONDS
    # Fewer rows or a shorter expression fit.
    assert plan(wide, {"x": x[:64]}, hessian=True, charged=budget(max_seconds=10.0)).seconds < 10
    charged = plan(term, {"x": x}, hessian=True)
    nodes = 16  # the expression, 4 calls and their 4 names, 3 products, 4 times x
    assert charged.seconds >= 1024 * (HESSIAN_ROW_SECONDS + nodes * HESSIAN_NODE_SECONDS)
    assert charged.seconds < 30.0
    assert charged.objects >= 1024


def test_hessian_blocks_and_gradients_are_counted_as_objects() -> None:
    inputs = {f"x{i}": torch.zeros(0) for i in range(64)}
    text = " + ".join(f"sum(x{i})" for i in range(64))
    charged = plan(text, inputs, hessian=True)
    assert charged.objects >= 64 + 64 + 64 * 64  # inputs, gradients, blocks
    refusal = refused_fast(text, inputs, hessian=True, charged=budget(max_objects=1000))
    assert isinstance(refusal, LimitExceeded)
    assert refusal.limit == "max_objects"


def test_inputs_are_counted_before_the_expression_is_parsed() -> None:
    inputs = {f"x{i}": torch.zeros(1) for i in range(2000)}
    refusal = refused_fast("sum(x0)", inputs, hessian=False, charged=budget(max_objects=1000))
    assert isinstance(refusal, LimitExceeded)
    assert refusal.limit == "max_objects"
    assert refusal.details["requested"] == 2000


@pytest.mark.parametrize(
    "text",
    [
        "sum(reshape(z, (0, 4611686018427387904)))",
        "sum(reshape(z, (4611686018427387904, 0)) * 2)",
    ],
)
def test_an_empty_intermediate_may_not_have_an_astronomical_dimension(text: str) -> None:
    refusal = refused_fast(text, {"z": torch.zeros(0)}, hessian=False)
    assert isinstance(refusal, LimitExceeded)
    assert refusal.limit == "max_elements"
    assert "column" in refusal.details


def test_a_ninth_dimension_of_an_intermediate_is_422() -> None:
    nine = "sum(x[None, None, None, None, None, None, None, None, None])"
    refusal = refused_fast(nine, {"x": torch.ones(1)}, hessian=False)
    assert isinstance(refusal, InvalidInput)
    assert refusal.code is ErrorCode.TOO_MANY_DIMS
    eight = "sum(x[None, None, None, None, None, None, None])"
    assert grad_of(eight, {"x": torch.ones(2)}).value == 2.0
