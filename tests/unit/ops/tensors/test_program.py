"""The ``/tensor/ops`` interpreter without HTTP: meta pass vs real pass, budget, seeds, errors."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, get_args

import pytest
import torch

from schemas.tensors import TensorOpsRequest, TensorStepUnion
from service.errors import ComputeTimeout, InvalidInput, LimitExceeded, OpError
from service.limits import Budget, Deadline, estimate_matmul_flops
from service.ops.context import ComputeContext
from service.ops.tensors import shapes
from service.ops.tensors.handlers import decode_program
from service.ops.tensors.program import (
    META,
    OPS,
    Context,
    execute,
    plan_program,
    run_program,
    warm_up,
)
from tests.api.test_tensor_ops import INPUTS, OP_CASES, RANDOM_CASES
from tests.conftest import make_settings

CPU = torch.device("cpu")
SETTINGS = make_settings()


def compile_program(
    body: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Inputs and plain steps exactly as the route hands them to the interpreter."""
    request = TensorOpsRequest.model_validate(body)
    return decode_program(ComputeContext(SETTINGS.limits, torch.device("cpu")), request)


def big_budget() -> Budget:
    return Budget(1 << 40, 1 << 40, 1e30)


def run(body: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    inputs, steps = compile_program(body)
    request = TensorOpsRequest.model_validate(body)
    budget = kwargs.pop("budget", None) or big_budget()
    answer: list[Any] = []
    names = plan_program(inputs, steps, request.returns, budget, answer=answer)
    options: dict[str, Any] = {"device": CPU, "deadline": Deadline(30.0), "seed": request.seed}
    options.update(kwargs)
    outputs = run_program(inputs, steps, names, **options)
    # The plan knows the answer's tensors (the response is sized from them before the work).
    assert answer == [(tuple(t.shape), t.dtype) for t in _tensors_in(outputs)]
    return outputs


def _tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    if isinstance(items, list | tuple) or isinstance(value, dict):
        return [t for item in items for t in _tensors_in(item)]
    return []


# --- the op table and the schema agree -------------------------------------------------------


def test_ops_table_matches_the_schema_union() -> None:
    union = get_args(TensorStepUnion)[0]
    schema_ops = {get_args(model.model_fields["op"].annotation)[0] for model in get_args(union)}
    assert schema_ops == set(OPS)


# --- the meta pass predicts the real one -----------------------------------------------------


META_CASES = [
    pytest.param({"inputs": INPUTS, "steps": [{**step, "out": "r"}]}, id=name)
    for name, step, _ in OP_CASES
] + [
    pytest.param({"seed": 3, "steps": [{**step, "out": "r"}]}, id=name)
    for name, step, _ in RANDOM_CASES
]


@pytest.mark.parametrize("body", META_CASES)
def test_meta_pass_predicts_shapes_and_dtypes(body: dict[str, Any]) -> None:
    """Limits are charged on the meta pass, so its shapes must be the real ones."""
    inputs, steps = compile_program(body)
    planned, planned_last = execute(inputs, steps, Context(META, budget=big_budget()))
    real, real_last = execute(inputs, steps, Context(CPU, seed=3))
    assert planned_last == real_last
    for name in real_last:
        got, want = planned[name], real[name]
        assert isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
        assert got.device.type == "meta"
        assert want.device.type == "cpu"
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype, name


def test_meta_pass_predicts_info() -> None:
    body = {
        "inputs": {"b": INPUTS["b"], "col": INPUTS["col"]},
        "steps": [
            {"op": "transpose", "x": "b", "dim0": 0, "dim1": 2, "out": "t"},
            {"op": "info", "x": "t", "out": "i1"},
            {"op": "expand", "x": "col", "size": [3, 2, 4], "out": "e"},
            {"op": "info", "x": "e", "out": "i2"},
            {"op": "index", "x": "b", "index": "[:, 1::2, None]", "out": "s"},
            {"op": "info", "x": "s", "out": "i3"},
        ],
    }
    inputs, steps = compile_program(body)
    planned, _ = execute(inputs, steps, Context(META))
    real, _ = execute(inputs, steps, Context(CPU))
    for name in ("i1", "i2", "i3"):
        assert planned[name] == real[name]
    assert real["i1"]["is_contiguous"] is False  # type: ignore[index]


def test_limits_refuse_before_the_real_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program over a limit never reaches the real device, not even its first step."""
    seen: list[str] = []
    zeros = OPS["zeros"]

    def spy(args: Mapping[str, Any], ctx: Context) -> Any:
        seen.append(ctx.device.type)
        return zeros(args, ctx)

    monkeypatch.setitem(OPS, "zeros", spy)
    body = {
        "steps": [
            {"op": "zeros", "size": [100000, 1], "out": "x"},
            {"op": "zeros", "size": [1, 100000], "out": "y"},
            {"op": "add", "x": "x", "y": "y"},
        ]
    }
    with pytest.raises(LimitExceeded) as refusal:
        run(body, budget=Budget.from_settings(SETTINGS))
    assert refusal.value.limit == "max_elements"
    assert refusal.value.details["requested"] == 10**10
    assert refusal.value.details["step"] == 2
    assert seen == ["meta", "meta"]
    seen.clear()
    run({"steps": body["steps"][:2]}, budget=Budget.from_settings(SETTINGS))
    assert seen == ["meta", "meta", "cpu", "cpu"]


def test_huge_factory_is_refused_in_milliseconds() -> None:
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as refusal:
        run(
            {"steps": [{"op": "zeros", "size": [1000000, 1000000]}]},
            budget=Budget(1 << 22, 1 << 24, 1e10),
        )
    assert time.perf_counter() - start < 0.5
    assert refusal.value.details["requested"] == 10**12


# --- the budget ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([5], [5]),
        ([3, 4], [4, 2]),
        ([4], [4, 6]),
        ([3, 4], [4]),
        ([2, 3, 4], [2, 4, 5]),
        ([7, 1, 3, 4], [5, 4, 2]),
        ([2, 3, 4], [4]),
    ],
)
def test_matmul_flops_are_charged_exactly(x: list[int], y: list[int]) -> None:
    """2·(output elements)·k, as torch's own output shape says."""
    out = torch.matmul(torch.empty(x, device=META), torch.empty(y, device=META))
    flops = 2 * max(out.numel(), 1) * x[-1]
    assert estimate_matmul_flops(x, y) == flops
    body = {
        "inputs": {
            "x": {"data": [0.0] * math.prod(x), "shape": x},
            "y": {"data": [0.0] * math.prod(y), "shape": y},
        },
        "steps": [{"op": "matmul", "x": "x", "y": "y"}],
    }
    run(body, budget=Budget(1 << 30, 1 << 30, flops))
    with pytest.raises(LimitExceeded) as refusal:
        run(body, budget=Budget(1 << 30, 1 << 30, flops - 1))
    assert refusal.value.limit == "max_flops"
    assert refusal.value.details["requested"] == flops


def test_inputs_and_outputs_count_toward_the_total() -> None:
    body = {
        "inputs": {"a": {"data": [0.0] * 100, "shape": [10, 10]}},
        "steps": [{"op": "ones", "size": [10, 10]}, {"op": "add", "x": "a", "y": "out"}],
    }
    run(body, budget=Budget(100, 300, 1e9))
    with pytest.raises(LimitExceeded) as refusal:
        run(body, budget=Budget(100, 299, 1e9))
    assert refusal.value.limit == "max_total_elements"
    assert refusal.value.details["requested"] == 300


def test_the_real_pass_checks_the_deadline() -> None:
    deadline = Deadline(30.0)
    deadline.cancelled = True
    with pytest.raises(ComputeTimeout):
        run({"steps": [{"op": "ones", "size": [2]}]}, deadline=deadline)


# --- seeds -----------------------------------------------------------------------------------


def test_generators() -> None:
    assert Context(META, seed=1).generator(None) is None
    assert Context(META).generator(5) is None
    ctx = Context(CPU, seed=1)
    stream = ctx.generator(None)
    assert stream is ctx.generator(None)  # one stream for the request
    own = ctx.generator(5)
    assert own is not stream and own is not ctx.generator(5)  # a fresh one per seeded step
    assert own is not None and stream is not None
    assert torch.equal(
        torch.rand(4, generator=own), torch.rand(4, generator=torch.Generator().manual_seed(5))
    )
    assert torch.equal(
        torch.rand(4, generator=stream), torch.rand(4, generator=torch.Generator().manual_seed(1))
    )


def test_meta_pass_draws_nothing_from_the_stream() -> None:
    """The request's stream starts at the seed on the real pass, whatever the meta pass did."""
    body = {
        "seed": 21,
        "steps": [
            {"op": "randn", "size": [3], "out": "a"},
            {"op": "randn", "size": [3], "out": "b"},
        ],
        "return": ["a", "b"],
    }
    out = run(body)
    g = torch.Generator().manual_seed(21)
    assert torch.equal(out["a"], torch.randn(3, generator=g))
    assert torch.equal(out["b"], torch.randn(3, generator=g))


# --- results and errors ----------------------------------------------------------------------


def test_several_results_are_named_after_out() -> None:
    body = {
        "inputs": {"a": INPUTS["a"]},
        "steps": [
            {"op": "chunk", "x": "a", "chunks": 3, "dim": 1, "out": "c"},
            {"op": "min", "x": "a", "dim": 0, "out": "lo"},
            {"op": "info", "x": "a", "out": "meta"},
        ],
    }
    inputs, steps = compile_program(body)
    env, last = execute(inputs, steps, Context(CPU))
    assert {"c.0", "c.1", "c.2", "lo", "lo.indices", "meta"} <= set(env)
    assert last == ["meta"]
    assert isinstance(env["meta"], dict)


def test_default_return_is_what_the_last_step_stored() -> None:
    body = {"inputs": {"a": INPUTS["a"]}, "steps": [{"op": "max", "x": "a", "dim": 1, "out": "m"}]}
    assert set(run(body)) == {"m", "m.indices"}


def test_unknown_return_name() -> None:
    with pytest.raises(InvalidInput) as error:
        run({"steps": [{"op": "ones", "size": [1], "out": "o"}], "return": ["o", "nope"]})
    assert error.value.code == "unknown_name"
    assert error.value.details["unknown"] == ["nope"]


def test_torch_errors_name_the_step() -> None:
    body = {
        "inputs": {"a": INPUTS["a"]},
        "steps": [{"op": "neg", "x": "a"}, {"op": "reshape", "x": "out", "shape": [4, -1]}],
    }
    with pytest.raises(OpError) as error:
        run(body)
    assert error.value.message.startswith("step 1 (reshape): ")
    assert error.value.details == {"step": 1, "op": "reshape"}
    assert error.value.status_code == 422


def test_service_errors_name_the_step_once() -> None:
    body = {"steps": [{"op": "ones", "size": [1]}, {"op": "clamp", "x": "out"}]}
    with pytest.raises(InvalidInput) as error:
        run(body)
    assert error.value.message.startswith("step 1 (clamp): clamp:")
    assert error.value.message.count("step 1") == 1
    assert error.value.details["step"] == 1


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([{"op": "full", "size": [2], "fill_value": 2**70}], id="full"),
        pytest.param(
            [{"op": "ones", "size": [2]}, {"op": "mul", "x": "out", "y": 2**70}], id="mul"
        ),
        pytest.param(
            [{"op": "rand", "size": [4]}, {"op": "std", "x": "out", "correction": 2**70}],
            id="std",
        ),
        pytest.param([{"op": "arange", "start": 2**70, "end": 2**70 + 3}], id="arange"),
    ],
)
def test_integers_beyond_int64_are_floats(steps: list[dict[str, Any]]) -> None:
    """An integer beyond 64 bits is a float, as it arrives over JSON: torch never sees a
    Python int it cannot hold (it would raise OverflowError)."""
    floats = [
        {
            key: float(value) if isinstance(value, int) and abs(value) >= 2**63 else value
            for key, value in step.items()
        }
        for step in steps
    ]
    got, expected = run({"steps": steps})["out"], run({"steps": floats})["out"]
    assert got.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(got, expected, equal_nan=True)


@pytest.mark.parametrize("bound", [math.inf, -math.inf, math.nan])
def test_arange_needs_finite_bounds(bound: float) -> None:
    for step in ({"op": "arange", "end": bound}, {"op": "arange", "start": bound, "end": 1}):
        with pytest.raises(InvalidInput, match="finite"):
            run({"steps": [step]})
    with pytest.raises(InvalidInput, match="finite"):
        run({"steps": [{"op": "arange", "end": 1, "step": bound}]})


def test_arange_zero_step() -> None:
    with pytest.raises(InvalidInput, match="zero"):
        run({"steps": [{"op": "arange", "end": 3, "step": 0}]})


def test_warm_up_runs() -> None:
    warm_up()


def _same_pieces(got: Any, expected: Any) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.shape, a.stride(), a.data_ptr()) == (b.shape, b.stride(), b.data_ptr())


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_split_and_chunk_in_several_calls_give_torchs_pieces(
    monkeypatch: pytest.MonkeyPatch, dim: int
) -> None:
    """Past ``PIECES_PER_CALL`` pieces, split and chunk are made a block of pieces per torch
    call (each call holds the interpreter lock): the same views as one call makes."""
    monkeypatch.setattr(shapes, "PIECES_PER_CALL", 3)
    made: list[int] = []
    split_once = torch.split

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(len(pieces := split_once(*args, **kwargs)))
        return pieces

    monkeypatch.setattr(torch, "split", counted)
    x = torch.arange(60.0).reshape(3, 20)
    split, chunk = OPS["split"], OPS["chunk"]
    for size in (1, 2, 3, 7, 20, 25):
        args = {"x": x, "split_size_or_sections": size, "dim": dim}
        _same_pieces(split(args, None), split_once(x, size, dim=dim))  # type: ignore[arg-type]
    for chunks in (1, 4, 5, 7, 11, 19, 20, 40):
        args = {"x": x, "chunks": chunks, "dim": dim}
        _same_pieces(chunk(args, None), torch.chunk(x, chunks, dim=dim))  # type: ignore[arg-type]
    empty = torch.zeros(2, 0)
    for chunks in (1, 5, 9):
        args = {"x": empty, "chunks": chunks, "dim": 1}
        _same_pieces(chunk(args, None), torch.chunk(empty, chunks, dim=1))  # type: ignore[arg-type]
    assert max(made) == 3


def test_split_into_sections_in_several_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shapes, "PIECES_PER_CALL", 2)
    x = torch.arange(40.0).reshape(2, 20)
    for sections in ([1] * 20, [2, 3, 4, 5, 6], [0, 0, 5, 5, 5, 5, 0]):
        args = {"x": x, "split_size_or_sections": sections, "dim": 1}
        _same_pieces(OPS["split"](args, None), torch.split(x, sections, dim=1))  # type: ignore[arg-type]
    for bad in ([1, 2, 3], [-1, 21, 0]):  # torch's own refusals
        with pytest.raises(RuntimeError):
            OPS["split"]({"x": x, "split_size_or_sections": bad, "dim": 1}, None)  # type: ignore[arg-type]
