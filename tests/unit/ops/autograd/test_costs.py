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
from service.ops.autograd.evaluate import BACKWARD_COPIES, META, Evaluation, evaluate
from service.ops.autograd.gradients import (
    HESSIAN_NODE_SECONDS,
    HESSIAN_ROW_SECONDS,
    plan_gradient,
)
from service.ops.autograd.parse import parse_expression
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
    wrt = options.pop("wrt", None)
    plan_gradient(text, inputs, wrt, budget=charged, limits=LIMITS, **options)
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


# --- a broadcast matmul's copies, a quadratic backward ---------------------------------------


def test_a_broadcast_matmul_charges_its_copies_and_their_gradients() -> None:
    """[64, 1, 1, 256] @ [1, 64, 256, 1]: each operand copied out to the batch of 64 × 64,
    and in the backward pass each one's gradient over that batch before it is summed."""
    x, y = torch.zeros(64, 1, 1, 256), torch.zeros(1, 64, 256, 1)
    copy = 64 * 64 * 256
    evaluation = Evaluation(META)
    expression = parse_expression("x @ y", {"x": x, "y": y}, limits=LIMITS)
    evaluate(expression, {"x": x.to(META), "y": y.to(META)}, evaluation)
    assert evaluation.passes == 2 * x.numel() + 2 * copy  # read the operands, copy them
    assert evaluation.flops == 2 * 64 * 64 * 256
    charged = plan("sum(x @ y)", {"x": x, "y": y}, hessian=False)
    operands, outputs = 2 * x.numel(), 64 * 64 + 1
    assert charged.elements == 2 * operands + outputs + 2 * copy + 2 * copy
    # A total that the forward pass fits in and its backward pass does not.
    refusal = refused_fast(
        "sum(x @ y)",
        {"x": x, "y": y},
        hessian=False,
        charged=budget(max_total_elements=charged.elements - 1),
    )
    assert isinstance(refusal, LimitExceeded)
    assert refusal.limit == "max_total_elements"
    assert refusal.details["column"] == 4
    assert "backward" in refusal.message
    # A copy over the per-tensor limit is refused before the forward pass.
    refusal = refused_fast(
        "sum(x @ y)", {"x": x, "y": y}, hessian=False, charged=budget(max_elements=copy - 1)
    )
    assert isinstance(refusal, LimitExceeded)
    assert refusal.details == {
        "limit": "max_elements",
        "allowed": copy - 1,
        "requested": copy,
        "column": 4,
    }
    # Without batch dimensions on both sides nothing is copied.
    folded = plan("sum(x @ w)", {"x": x, "w": torch.zeros(256, 3)}, hessian=False)
    assert folded.elements < 2 * x.numel() + 2 * 64 * 3 + 256 * 3 * 2 + 1


def test_cumprods_backward_for_a_hessian_is_charged_quadratically() -> None:
    """With a zero in its input, torch's cumprod backward building a graph (a hessian's
    first pass) keeps n²/2 elements and more, and each hessian row goes back through them."""
    w, text = torch.ones(1), "sum(cumprod(w * z, 0))"
    z = torch.ones(16000)
    linear = plan(text, {"w": w, "z": z}, hessian=False, wrt=["w"])
    # Linear without a hessian: the tensors, and the backward's temporaries (8 a value).
    assert linear.elements < (10 + BACKWARD_COPIES["cumprod"]) * z.numel()
    refusal = refused_fast(text, {"w": w, "z": z}, hessian=True, wrt=["w"])
    assert isinstance(refusal, LimitExceeded)
    assert refusal.limit == "max_total_elements"
    assert refusal.details["column"] == 4
    assert "cumprod" in refusal.message
    # The length of the scanned dimension squared, times the other dimensions.
    n, m = 2000, 8
    for shape, dim, kept in [((n,), 0, n * n), ((n, m), 0, m * n * n), ((m, n), 0, n * m * m)]:
        inputs, scan = {"w": w, "z": torch.ones(shape)}, f"sum(cumprod(w * z, {dim}))"
        charged = plan(scan, inputs, hessian=True, wrt=["w"])
        extra = charged.elements - plan(scan, inputs, hessian=False, wrt=["w"]).elements
        assert kept <= extra <= 2 * kept + 4096 * shape[dim] + 1
    along = plan(
        "sum(cumprod(w * z, -1))", {"w": w, "z": torch.ones(m, n)}, hessian=True, wrt=["w"]
    )
    assert along.elements >= m * n * n
    # Each row of the hessian goes back through the graph: 256 rows of n = 256, 10 s on a
    # CPU (measured), are over a limit of 10 s; 16 rows are not.
    z = torch.ones(256)
    refusal = refused_fast(
        text,
        {"w": torch.ones(256), "z": z},
        hessian=True,
        wrt=["w"],
        charged=budget(max_seconds=10.0),
    )
    assert isinstance(refusal, LimitExceeded)
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    assert plan(text, {"w": torch.ones(16), "z": z[:16]}, hessian=True, wrt=["w"]).seconds < 1.0
    # A small one runs, as torch computes it.
    z = torch.tensor([2.0, 0.0, 3.0, 0.5])
    w = torch.tensor([0.5, 1.5, -1.0, 2.0])
    result = grad_of(text, {"w": w, "z": z}, ["w"], hessian=True)
    expected = torch.autograd.functional.hessian(lambda w: torch.sum(torch.cumprod(w * z, 0)), w)
    assert result.hessians is not None
    torch.testing.assert_close(result.hessians["w"]["w"], expected)


@pytest.mark.parametrize(
    "call",
    [
        "cumsum(w * z, 0)",
        "prod(w * z, 0)",
        "prod(w * z)",
        "softmax(w * z, 0)",
        "log_softmax(w * z, 0)",
        "logsumexp(w * z, 0)",
        "norm(w * z)",
        "var(w * z)",
        "std(w * z)",
    ],
)
def test_the_other_scans_stay_linear_for_a_hessian(call: str) -> None:
    """Their backward with a graph is linear in their input (measured at n = 4000 with a
    zero: 2 ms, where cumprod's takes 2 s)."""
    inputs = {"w": torch.ones(1), "z": torch.ones(16000)}
    charged = plan(f"sum({call})", inputs, hessian=True, wrt=["w"])
    assert charged.elements < 10 * 16000


def test_a_reduction_along_a_short_dimension_pays_for_each_output() -> None:
    """var along a dimension of 2 writes an output for every 2 elements it reads, and each
    costs about as much as 28 elements read (a CPU took 32 passes of its input where 4 are
    charged for the reading); along a long dimension that cost is nothing."""
    n = 1 << 16
    passes = {}
    for shape in ((n, 2), (2, n)):
        x = torch.zeros(shape, device=META)
        evaluation = Evaluation(META)
        expression = parse_expression("var(x, 1)", {"x": x}, limits=LIMITS)
        evaluate(expression, {"x": x}, evaluation)
        passes[shape] = evaluation.passes
    read = 2 * n
    assert passes[(n, 2)] >= 30 * read
    assert passes[(2, n)] < 10 * read
