"""What a ``/tensor/ops`` step costs: its outputs counted before it runs, every output a
shape, matmul by its dtype's rate and the other ops by their element passes."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from schemas.tensors import TensorOpsRequest
from service.calibration import Throughput
from service.errors import ErrorCode, InvalidInput, LimitExceeded
from service.limits import MATMUL_READ_PASSES, OBJECT_SECONDS, Budget
from service.ops.context import ComputeContext
from service.ops.tensors.costs import PIECE_SECONDS, element_passes, output_count
from service.ops.tensors.handlers import decode_program, prepare_tensor_ops
from service.ops.tensors.program import plan_program, warm_up
from tests.conftest import make_settings

# Rates fixed as a calibrated CPU's: float16 matmuls 100 times slower than float32.
RATES = Throughput("cpu", {"float32": 1e11, "float16": 1e9}, 1e9)


def budget(**limits: Any) -> Budget:
    values: dict[str, Any] = {
        "max_elements": 1 << 25,
        "max_total_elements": 1 << 27,
        "max_flops": 2e12,
        "throughput": RATES,
        "max_seconds": 30.0,
        "max_objects": 1_000_000,
    }
    values.update(limits)
    return Budget(
        values.pop("max_elements"),
        values.pop("max_total_elements"),
        values.pop("max_flops"),
        **values,
    )


def compile_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps as the route hands them to the interpreter (the schema fills defaults)."""
    request = TensorOpsRequest.model_validate({"steps": steps})
    ctx = ComputeContext(make_settings(max_elements=1 << 25).limits, torch.device("cpu"))
    return decode_program(ctx, request)[1]


def plan(steps: list[dict[str, Any]], charged: Budget | None = None) -> Budget:
    """Plan ``steps`` against ``charged`` (default :func:`budget`) and return it."""
    charged = charged or budget()
    plan_program({}, compile_steps(steps), None, charged)
    return charged


def refused_fast(steps: list[dict[str, Any]], charged: Budget | None = None) -> LimitExceeded:
    """The refusal of planning ``steps``, which takes well under a second."""
    compiled = compile_steps(steps)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as refusal:
        plan_program({}, compiled, None, charged or budget())
    assert time.perf_counter() - start < 0.5
    return refusal.value


@pytest.fixture(scope="module", autouse=True)
def _meta_kernels_loaded() -> None:
    warm_up()  # as the service does at start-up: torch loads its meta kernels on first use


# --- outputs counted before the step runs ----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5, 7, 10])
@pytest.mark.parametrize("pieces", [1, 2, 3, 20])
def test_the_count_of_pieces_is_torchs(size: int, pieces: int) -> None:
    x = torch.zeros(size, 2)
    args = {"x": x, "split_size_or_sections": pieces, "dim": 0}
    assert output_count("split", args) == len(torch.split(x, pieces, 0))
    args = {"x": x, "chunks": pieces, "dim": 0}
    assert output_count("chunk", args) == len(torch.chunk(x, pieces, 0))
    sections = {"x": torch.zeros(0, 2), "split_size_or_sections": [0] * pieces, "dim": 0}
    assert output_count("split", sections) == len(torch.split(torch.zeros(0, 2), [0] * pieces))


@pytest.mark.parametrize(
    ("step", "pieces"),
    [
        pytest.param({"op": "split", "x": "z", "split_size_or_sections": 1}, 4_000_000, id="split"),
        pytest.param({"op": "chunk", "x": "z", "chunks": 4_000_000}, 4_000_000, id="chunk"),
        pytest.param(
            {"op": "chunk", "x": "e", "chunks": 2**62}, 2**62, id="chunk-of-an-empty-tensor"
        ),
        pytest.param(
            # (the schema takes at most 2**20 sizes: more are a 422 before this)
            {"op": "split", "x": "e", "split_size_or_sections": [0] * 1_048_000},
            1_048_000,
            id="split-into-listed-sections",
        ),
    ],
)
def test_pieces_over_max_objects_are_refused_before_torch_builds_them(
    step: dict[str, Any], pieces: int
) -> None:
    """4M pieces once took 24 s and 2.9 GB (the meta pass builds every piece too)."""
    steps = [
        {"op": "zeros", "size": [4_000_000], "out": "z"},
        {"op": "zeros", "size": [0], "out": "e"},
        step,
    ]
    refusal = refused_fast(steps)
    assert refusal.limit == "max_objects"
    assert refusal.code is ErrorCode.OBJECTS_LIMIT
    assert refusal.details["requested"] >= pieces
    assert refusal.details["step"] == 2


def test_pieces_under_the_limits_are_charged_as_time() -> None:
    charged = plan(
        [
            {"op": "zeros", "size": [10_000], "out": "z"},
            {"op": "split", "x": "z", "split_size_or_sections": 1},
        ]
    )
    assert charged.objects == 1 + 10_000
    assert charged.seconds >= 10_000 * (OBJECT_SECONDS + PIECE_SECONDS)
    # Pieces that would take longer than the time limit are refused although they fit
    # max_objects.
    refusal = refused_fast(
        [
            {"op": "zeros", "size": [900_000], "out": "z"},
            {"op": "split", "x": "z", "split_size_or_sections": 1},
        ],
        budget(max_seconds=10.0),
    )
    assert refusal.limit == "request_timeout_s"
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET


# --- every output is a shape -------------------------------------------------------------------


def test_a_ninth_dimension_is_refused_at_the_step_that_makes_it() -> None:
    steps = [{"op": "zeros", "size": [1], "out": "a"}] + [
        {"op": "unsqueeze", "x": "a", "dim": 0, "out": "a"} for _ in range(64)
    ]
    with pytest.raises(InvalidInput) as refusal:
        plan(steps)
    assert refusal.value.code is ErrorCode.TOO_MANY_DIMS
    assert refusal.value.details == {"ndim": 9, "max_ndim": 8, "step": 8}
    plan(steps[:8])  # eight dimensions are fine


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([{"op": "zeros", "size": [0, 2**40]}], id="zeros"),
        pytest.param([{"op": "eye", "n": 0, "m": 2**63 - 1}], id="eye"),
        pytest.param(
            [
                {"op": "zeros", "size": [0], "out": "e"},
                {"op": "reshape", "x": "e", "shape": [0, 2**62]},
            ],
            id="reshape",
        ),
        pytest.param(
            [
                {"op": "zeros", "size": [0], "out": "e"},
                {"op": "view", "x": "e", "shape": [2**62, 0]},
            ],
            id="view",
        ),
        pytest.param(
            [
                {"op": "zeros", "size": [0, 1], "out": "e"},
                {"op": "expand", "x": "e", "size": [0, 2**62]},
            ],
            id="expand",
        ),
        pytest.param(
            [
                {"op": "zeros", "size": [0, 1], "out": "e"},
                {"op": "repeat", "x": "e", "repeats": [1, 2**62]},
            ],
            id="repeat",
        ),
    ],
)
def test_an_empty_tensor_may_not_be_longer_than_max_elements(steps: list[dict[str, Any]]) -> None:
    refusal = refused_fast(steps)
    assert refusal.limit == "max_elements"
    assert refusal.details["requested"] > refusal.details["allowed"]
    assert refusal.details["step"] == len(steps) - 1


# --- work by its real algorithm ----------------------------------------------------------------


def _matmul(side: int, dtype: str) -> list[dict[str, Any]]:
    return [
        {"op": "zeros", "size": [side, side], "dtype": dtype, "out": "a"},
        {"op": "matmul", "x": "a", "y": "a"},
    ]


def test_a_float16_matmul_is_timed_at_the_float16_rate() -> None:
    refusal = refused_fast(_matmul(4096, "float16"))
    assert refusal.limit == "request_timeout_s"
    assert refusal.code is ErrorCode.OVER_TIME_BUDGET
    assert refusal.details["requested"] == pytest.approx(2 * 4096**3 / 1e9, rel=0.01)
    assert refusal.details["step"] == 1
    # The same product in float32 is predicted at 1.4 s, and 0.13 s for reading its operands.
    reads = MATMUL_READ_PASSES * 2 * 4096**2 / 1e9
    expected = 2 * 4096**3 / 1e11 + reads
    assert plan(_matmul(4096, "float32")).seconds == pytest.approx(expected, rel=0.05)
    # 2048² in float16 is 17 s at 1 GFLOP/s: under the limit of 30 s, over one of 10 s.
    assert plan(_matmul(2048, "float16")).seconds == pytest.approx(2 * 2048**3 / 1e9, rel=0.01)
    assert refused_fast(_matmul(2048, "float16"), budget(max_seconds=10.0)).code is (
        ErrorCode.OVER_TIME_BUDGET
    )


def test_factories_are_charged_by_the_elements_they_fill() -> None:
    zeros = plan([{"op": "zeros", "size": [1000, 1000]}])
    assert zeros.elements == 10**6
    assert zeros.seconds == pytest.approx(10**6 / 1e9 + OBJECT_SECONDS)
    randn = plan([{"op": "randn", "size": [1000, 1000]}])
    assert randn.seconds == pytest.approx(17 * 10**6 / 1e9 + OBJECT_SECONDS)


def _passes(op: str, x: torch.Tensor, **args: Any) -> float:
    """``op``'s passes over ``x``; its output is x's shape, a scalar for a whole reduction."""
    shape = () if "dim" in args and args["dim"] is None else x.shape
    out = torch.empty(shape, dtype=x.dtype, device="meta")
    return element_passes(op, {"x": x, **args}, [out])


def test_element_passes_follow_the_algorithm_and_the_dtype() -> None:
    x32 = torch.empty(1000, device="meta")
    x16 = torch.empty(1000, dtype=torch.float16, device="meta")
    assert _passes("add", x32, y=x32) == 2000  # both operands read once
    assert _passes("exp", x32) > _passes("add", x32, y=x32)
    assert _passes("pow", x32, exponent=2.5) > _passes("exp", x32)
    assert _passes("softmax", x32, dim=0) > _passes("sum", x32, dim=None)
    assert _passes("std", x32, dim=None) > _passes("mean", x32, dim=None)
    assert _passes("norm", x32, p=3) > _passes("norm", x32, p=2)
    for op in ("add", "exp", "pow", "std", "argmax", "softmax"):
        assert _passes(op, x16) > _passes(op, x32), op
    # A reduction that casts first reads its input once more.
    assert _passes("sum", x32, dtype="float64") == _passes("sum", x32) + 1000
    # Views read nothing; reshape copies a strided tensor.
    assert _passes("transpose", x32) == 0
    strided = torch.empty(30, 40, device="meta").t()
    assert _passes("reshape", strided) == 1200
    assert _passes("reshape", torch.empty(30, 40, device="meta")) == 0


@pytest.mark.parametrize("steps", [10, 20])
def test_float16_element_passes_reach_the_time_limit_first(steps: int) -> None:
    def program(dtype: str) -> list[dict[str, Any]]:
        return [{"op": "randn", "size": [2048, 2048], "dtype": dtype, "out": "x"}] + [
            {"op": "pow", "x": "x", "exponent": 2.5, "out": "x"} for _ in range(steps)
        ]

    # 4.2M elements: 0.27 s a float16 pow at 64 passes, 0.07 s in float32.
    if steps == 20:
        refusal = refused_fast(program("float16"), budget(max_seconds=5.0))
        assert refusal.code is ErrorCode.OVER_TIME_BUDGET
        assert refusal.details["step"] < steps
    else:
        assert plan(program("float16"), budget(max_seconds=5.0)).seconds < 5.0
    assert plan(program("float32"), budget(max_seconds=5.0)).seconds < 5.0


def test_inputs_and_names_to_return_are_counted() -> None:
    limits = make_settings(max_objects=100).limits
    many_inputs = {
        "inputs": {f"x{i}": [0.0] for i in range(200)},
        "steps": [{"op": "clone", "x": "x0"}],
    }
    many_names = {"steps": [{"op": "ones", "size": [1]}], "return": ["out"] * 200}
    for body in (many_inputs, many_names):
        ctx = ComputeContext(limits, torch.device("cpu"))
        with pytest.raises(LimitExceeded) as refusal:
            prepare_tensor_ops(ctx, TensorOpsRequest.model_validate(body))
        assert refusal.value.limit == "max_objects"
        assert refusal.value.details["requested"] > 100
    few = {"inputs": {f"x{i}": [0.0] for i in range(50)}, "steps": [{"op": "clone", "x": "x0"}]}
    prepare_tensor_ops(
        ComputeContext(limits, torch.device("cpu")), TensorOpsRequest.model_validate(few)
    )


@pytest.mark.parametrize(("op", "measured"), [("var", 32), ("argmax", 29), ("sum", 6.4)])
def test_a_reduction_along_a_short_dimension_pays_for_each_output(op: str, measured: float) -> None:
    """Along a dimension of 2 a reduction writes an output for every 2 elements it reads; on
    a CPU, var then took 32 passes of its input, argmax 29 and a float64 sum 6.4 (along a long
    dimension: 4, 2 and 1)."""
    n = 1 << 16
    x = torch.empty(n, 2, dtype=torch.float64, device="meta")
    per_output = element_passes(op, {"x": x, "dim": 1}, [torch.empty(n, device="meta")])
    assert per_output >= measured * x.numel()
    long = torch.empty(2, n, dtype=torch.float64, device="meta")
    along_long = element_passes(op, {"x": long, "dim": 1}, [torch.empty(2, device="meta")])
    whole = element_passes(op, {"x": long, "dim": None}, [torch.empty((), device="meta")])
    assert along_long < 1.01 * whole < per_output / 2  # two outputs cost next to nothing


def _allocated_beyond_output(fn: Any) -> int:
    """Bytes torch's CPU allocator handed out while ``fn`` ran, less its result's."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiled:
        result = fn()
    allocated = sum(max(event.self_cpu_memory_usage, 0) for event in profiled.events())
    return allocated - result.numel() * result.element_size()


@pytest.mark.parametrize(
    ("dtype", "step"),
    [
        ("uint8", {"op": "sum", "x": "x"}),
        ("bool", {"op": "sum", "x": "x", "dim": 1}),
        ("int32", {"op": "cumsum", "x": "x", "dim": 0}),
        ("uint8", {"op": "sum", "x": "x", "dtype": "int32"}),
        ("float16", {"op": "mean", "x": "x", "dtype": "float32"}),
        ("float32", {"op": "softmax", "x": "x", "dim": 0, "dtype": "float64"}),
        ("int64", {"op": "sum", "x": "x"}),
        ("float32", {"op": "cumsum", "x": "x", "dim": 1}),
    ],
)
def test_an_accumulating_step_is_charged_the_copy_it_sums_in(
    dtype: str, step: dict[str, Any]
) -> None:
    """``sum`` of uint8 first copies x to int64 (8 times its bytes); the copy is charged as
    elements (8 bytes at most each), against what torch's allocator really hands out."""
    shape = [256, 1024]
    made = {"op": "ones", "size": shape, "dtype": dtype, "out": "x"}
    charged = plan([made, {**step, "out": "y"}])
    x = torch.ones(shape, dtype=getattr(torch, dtype))
    args = {k: v for k, v in step.items() if k not in ("op", "x")}
    if "dtype" in args:
        args["dtype"] = getattr(torch, args["dtype"])
    fn = getattr(torch, step["op"])
    out = fn(x, **args)
    copy = charged.elements - x.numel() - out.numel()
    allocated = _allocated_beyond_output(lambda: fn(x, **args))
    assert copy * 8 + 64 >= allocated  # a few bytes of scalars besides
    assert copy <= x.numel()
    if allocated <= 64:
        assert copy == 0  # nothing charged that torch does not make
