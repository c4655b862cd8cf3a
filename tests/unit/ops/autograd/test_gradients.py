"""Planning and differentiating an expression: values, gradients and hessians against
torch's own autograd on the same inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn import functional

from service.api.compute import runs_on_one_thread
from service.config import Limits
from service.errors import InvalidInput, LimitExceeded, OpError, ServiceError
from service.limits import Deadline
from service.ops.autograd.gradients import compute_gradient, plan_gradient
from tests.unit.ops.autograd.helpers import (
    CPU,
    LIMITS,
    Env,
    assert_same,
    big_budget,
    grad_of,
    reference,
)

# --- the tutorial's chapter 5 ----------------------------------------------------------------


def test_chapter_5_exactly() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    result = grad_of("sum(x**2 + 2*x + 1)", {"x": x})
    assert result.value.dtype == torch.float32
    assert result.value.shape == ()
    assert result.value.item() == 54.0
    # The tutorial prints [[4, 6], [8, 10]]; the gradient of x² + 2x + 1 is 2x + 2.
    torch.testing.assert_close(result.grads["x"], 2 * x + 2)
    assert result.grads["x"].tolist() == [[4.0], [6.0], [8.0], [10.0]]
    leaf = x.clone().requires_grad_(True)
    torch.sum(leaf**2 + 2 * leaf + 1).backward()
    assert leaf.grad is not None
    torch.testing.assert_close(result.grads["x"], leaf.grad)


# --- inputs and wrt -------------------------------------------------------------------------


def test_wrt_selects_inputs_and_unused_inputs_get_zeros() -> None:
    inputs = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([3.0]), "n": torch.tensor([1, 2])}
    result = grad_of("sum(x * n)", inputs, ["y", "x", "x"])
    assert list(result.grads) == ["y", "x"]
    assert result.grads["y"].tolist() == [0.0]
    assert result.grads["x"].tolist() == [1.0, 2.0]
    default = grad_of("sum(x * n)", inputs)
    assert list(default.grads) == ["x", "y"]  # every floating input, not the integer one


def test_a_value_that_depends_on_no_input_has_zero_gradients() -> None:
    result = grad_of("sum(x > 0) + 1", {"x": torch.tensor([1.0, -2.0])})
    assert result.value.dtype == torch.int64
    assert result.value.item() == 2
    assert result.grads["x"].tolist() == [0.0, 0.0]


def test_no_inputs_gives_a_value_and_no_gradients() -> None:
    result = grad_of("2 ** 10 + pi", {})
    assert result.grads == {}
    assert result.value.item() == pytest.approx(1024 + math.pi)


# --- hypothesis: random compositions against torch -------------------------------------------

Expr = tuple[str, Callable[[Env], torch.Tensor]]
SAFE_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "gelu": functional.gelu,
    "silu": functional.silu,
    "softplus": functional.softplus,
    "abs": torch.abs,
    "exp": torch.exp,
}
LEAVES: list[Expr] = [
    ("x", lambda e: e["x"]),
    ("y", lambda e: e["y"]),
    ("(m @ x)", lambda e: e["m"] @ e["x"]),
    ("0.5", lambda e: 0.5),  # type: ignore[list-item,return-value]
    ("2", lambda e: 2),  # type: ignore[list-item,return-value]
]


def _unary(child: Expr, name: str) -> Expr:
    text, fn = child
    torch_fn = SAFE_UNARY[name]

    def run(e: Env) -> torch.Tensor:
        value = fn(e)
        return torch_fn(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    return f"{name}({text})", run


def _binary(left: Expr, right: Expr, symbol: str) -> Expr:
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
    }
    (lt, lf), (rt, rf) = left, right
    return f"({lt} {symbol} {rt})", lambda e: ops[symbol](lf(e), rf(e))


def _special(child: Expr, kind: str) -> Expr:
    text, fn = child

    def tensor(e: Env) -> torch.Tensor:
        value = fn(e)
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    if kind == "pow":
        return f"({text}) ** 2", lambda e: fn(e) ** 2
    if kind == "clamp":
        return f"clamp({text}, min=-1, max=1.5)", lambda e: torch.clamp(tensor(e), -1, 1.5)
    if kind == "where":
        return (
            f"where({text} > 0, {text}, 0.1 * ({text}))",
            lambda e: torch.where(tensor(e) > 0, tensor(e), 0.1 * tensor(e)),
        )
    if kind == "log":
        return f"log(abs({text}) + 1)", lambda e: torch.log(torch.abs(tensor(e)) + 1)
    if kind == "sqrt":
        return f"sqrt({text} ** 2 + 1)", lambda e: torch.sqrt(tensor(e) ** 2 + 1)
    if kind == "max":
        return f"max({text}, y)", lambda e: torch.maximum(tensor(e), e["y"])
    return f"(mean({text}) * x)", lambda e: torch.mean(tensor(e)) * e["x"]


def expressions_strategy() -> st.SearchStrategy[Expr]:
    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.one_of(
            st.builds(_unary, children, st.sampled_from(list(SAFE_UNARY))),
            st.builds(_binary, children, children, st.sampled_from(["+", "-", "*", "/"])),
            st.builds(
                _special,
                children,
                st.sampled_from(["pow", "clamp", "where", "log", "sqrt", "max", "mean"]),
            ),
        )

    return st.recursive(st.sampled_from(LEAVES), extend, max_leaves=8)


RANDOM_INPUTS = {
    "x": torch.tensor([0.3, -1.1, 2.0]),
    "y": torch.tensor([-0.4, 0.8, 1.3]),
    "m": torch.tensor([[0.5, -0.2, 0.1], [0.0, 1.0, -0.7], [0.3, 0.3, 0.3]]),
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions_strategy(), st.sampled_from(["sum", "mean", "norm"]))
def test_random_compositions_match_torch(expr: Expr, reduce: str) -> None:
    text, fn = expr
    reducer = {"sum": torch.sum, "mean": torch.mean, "norm": torch.norm}[reduce]

    def scalar(e: Env) -> torch.Tensor:
        value = fn(e)
        return reducer(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    try:
        expected = reference(scalar, RANDOM_INPUTS, list(RANDOM_INPUTS))
    except (RuntimeError, ZeroDivisionError):  # e.g. norm of an integer, 2 / (2 - 2)
        with pytest.raises((OpError, InvalidInput)):
            grad_of(f"{reduce}({text})", RANDOM_INPUTS)
        return
    assert_same(grad_of(f"{reduce}({text})", RANDOM_INPUTS), expected)


# --- hessians --------------------------------------------------------------------------------

HESSIAN_CASES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("sum(w * x**2) + dot(w, x)", lambda x, w: torch.sum(w * x**2) + torch.dot(w, x)),
    ("sum(sin(x) * exp(w))", lambda x, w: torch.sum(torch.sin(x) * torch.exp(w))),
    ("norm(x) ** 2 + sum(w) ** 3", lambda x, w: torch.norm(x) ** 2 + torch.sum(w) ** 3),
    ("sum(x) + 2 * sum(w)", lambda x, w: torch.sum(x) + 2 * torch.sum(w)),  # linear: zeros
    ("logsumexp(x * w, 0)", lambda x, w: torch.logsumexp(x * w, 0)),
]


@pytest.mark.parametrize(("text", "fn"), HESSIAN_CASES, ids=[text for text, _ in HESSIAN_CASES])
def test_hessian_matches_torch_autograd_functional(text: str, fn: Callable[..., Any]) -> None:
    x = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    w = torch.tensor([0.5, 1.5, -0.25], dtype=torch.float64)
    result = grad_of(text, {"x": x, "w": w}, hessian=True)
    expected = torch.autograd.functional.hessian(fn, (x, w))
    assert result.hessians is not None
    for i, a in enumerate(["x", "w"]):
        for j, b in enumerate(["x", "w"]):
            torch.testing.assert_close(result.hessians[a][b], expected[i][j])


def test_hessian_blocks_have_the_shapes_of_both_inputs() -> None:
    w = torch.tensor([[0.5, -1.0, 0.2], [0.1, 0.3, -0.4]], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)

    def fn(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(torch.tanh(w @ x) ** 2)

    result = grad_of("sum(tanh(w @ x) ** 2)", {"w": w, "x": x}, hessian=True)
    expected = torch.autograd.functional.hessian(fn, (w, x))
    assert result.hessians is not None
    assert result.hessians["w"]["x"].shape == (2, 3, 3)
    assert result.hessians["x"]["w"].shape == (3, 2, 3)
    for i, a in enumerate(["w", "x"]):
        for j, b in enumerate(["w", "x"]):
            torch.testing.assert_close(result.hessians[a][b], expected[i][j])


def test_hessian_of_0d_inputs() -> None:
    s, t = torch.tensor(2.0, dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)
    result = grad_of("s**3 * sum(t) + s * t[0] ** 2", {"s": s, "t": t}, hessian=True)
    expected = torch.autograd.functional.hessian(
        lambda s, t: s**3 * torch.sum(t) + s * t[0] ** 2, (s, t)
    )
    assert result.hessians is not None
    assert result.hessians["s"]["s"].shape == ()
    assert result.hessians["s"]["t"].shape == (1,)
    assert result.hessians["t"]["t"].shape == (1, 1)
    for i, a in enumerate(["s", "t"]):
        for j, b in enumerate(["s", "t"]):
            torch.testing.assert_close(result.hessians[a][b], expected[i][j])


def test_hessian_of_a_value_that_ignores_its_inputs_is_zero() -> None:
    result = grad_of("sum(x > 0) * 1.5", {"x": torch.ones(2)}, hessian=True)
    assert result.hessians is not None
    assert result.hessians["x"]["x"].tolist() == [[0.0, 0.0], [0.0, 0.0]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions_strategy())
def test_random_hessians_match_torch(expr: Expr) -> None:
    text, fn = expr
    inputs = {name: t.double() for name, t in RANDOM_INPUTS.items() if name != "m"}
    inputs["m"] = RANDOM_INPUTS["m"].double()

    def scalar(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = fn({"x": x, "y": y, "m": inputs["m"]})
        return torch.sum(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    try:
        expected = torch.autograd.functional.hessian(scalar, (inputs["x"], inputs["y"]))
    except (RuntimeError, ZeroDivisionError):  # e.g. silu of an integer, 2 / (2 - 2)
        with pytest.raises((OpError, InvalidInput)):
            grad_of(f"sum({text})", inputs, ["x", "y"], hessian=True)
        return
    result = grad_of(f"sum({text})", inputs, ["x", "y"], hessian=True)
    assert result.hessians is not None
    for i, a in enumerate(["x", "y"]):
        for j, b in enumerate(["x", "y"]):
            torch.testing.assert_close(
                result.hessians[a][b],
                expected[i][j].to(result.hessians[a][b].dtype),
                equal_nan=True,
            )


def test_hessian_over_its_limit_is_refused_before_computing() -> None:
    limit = LIMITS.max_hessian_elements
    inputs = {"x": torch.ones(limit), "y": torch.ones(1)}
    grad_of("sum(x) ** 2", {"x": torch.ones(limit)}, hessian=True)  # at the limit: fine
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient(
            "sum(x) * sum(y)", inputs, None, hessian=True, budget=big_budget(), limits=LIMITS
        )
    assert exc.value.details == {
        "limit": "max_hessian_elements",
        "allowed": limit,
        "requested": limit + 1,
    }
    assert exc.value.code == "hessian_elements_limit"


def test_a_configured_hessian_limit_is_enforced() -> None:
    limits = Limits(max_hessian_elements=4)
    two = {"x": torch.ones(2, dtype=torch.float64), "y": torch.ones(2, dtype=torch.float64)}
    result = grad_of("sum(x) * sum(y ** 2)", two, hessian=True, limits=limits)  # 4: at the limit
    expected = torch.autograd.functional.hessian(
        lambda x, y: torch.sum(x) * torch.sum(y**2), (two["x"], two["y"])
    )
    assert result.hessians is not None
    torch.testing.assert_close(result.hessians["x"]["y"], expected[0][1])
    inputs = {"x": torch.ones(3), "y": torch.ones(2)}
    budget = big_budget()
    with pytest.raises(LimitExceeded) as exc:
        plan_gradient("sum(x) * sum(y)", inputs, None, hessian=True, budget=budget, limits=limits)
    assert exc.value.details == {"limit": "max_hessian_elements", "allowed": 4, "requested": 5}
    assert exc.value.code == "hessian_elements_limit"
    assert "5 input elements (x, y)" in exc.value.message
    assert budget.elements < 5 * 5  # refused before the hessian was charged


# --- errors ----------------------------------------------------------------------------------


def test_a_non_scalar_value_suggests_sum() -> None:
    with pytest.raises(InvalidInput) as exc:
        grad_of("x**2 + 1", {"x": torch.ones(4, 1)})
    assert exc.value.code == "not_scalar"
    assert "sum(x**2 + 1)" in exc.value.message
    assert exc.value.details["shape"] == [4, 1]


def test_one_element_values_of_any_shape_are_scalars() -> None:
    result = grad_of("x[None, :1] * 3", {"x": torch.tensor([2.0, 5.0])})
    assert result.value.shape == (1, 1)
    assert result.grads["x"].tolist() == [3.0, 0.0]


def test_integer_gradients_say_to_use_a_float_dtype() -> None:
    n = torch.tensor([1, 2])
    with pytest.raises(InvalidInput) as exc:
        plan_gradient("sum(n)", {"n": n}, None, hessian=False, budget=big_budget(), limits=LIMITS)
    assert exc.value.code == "integer_gradient"
    assert "float" in exc.value.message
    with pytest.raises(InvalidInput) as exc:
        inputs = {"n": n, "x": torch.ones(2)}
        plan_gradient(
            "sum(n * x)", inputs, ["n"], hessian=False, budget=big_budget(), limits=LIMITS
        )
    assert exc.value.code == "integer_gradient"
    with pytest.raises(InvalidInput) as exc:
        plan_gradient("sum(n)", {"n": n}, ["q"], hessian=False, budget=big_budget(), limits=LIMITS)
    assert exc.value.code == "unknown_name"


# --- time -----------------------------------------------------------------------------------


def test_the_deadline_stops_a_long_hessian() -> None:
    plan = plan_gradient(
        "sum(x**3)", {"x": torch.ones(500)}, None, hessian=True, budget=big_budget(), limits=LIMITS
    )
    deadline = Deadline(30.0)
    deadline.cancelled = True
    with pytest.raises(ServiceError) as exc:
        compute_gradient(plan, device=CPU, deadline=deadline)
    assert exc.value.status_code == 504


def test_each_hessian_row_is_a_serial_step() -> None:
    """A hessian's rows run one after another, each many small kernels: on a busy machine,
    1,024 rows back through a zero-safe prod took 13 s to the 504 on two threads waiting
    for each other, and run on one thread of the worker (0.3 ms a row)."""
    x = torch.linspace(-1, 1, 1024)
    x[3] = 0
    budget = big_budget()
    plan_gradient(
        "sum(prod(reshape(x, (2, -1)), 1))",
        {"x": x},
        None,
        hessian=True,
        budget=budget,
        limits=LIMITS,
    )
    assert budget.serial_steps == 1 + 1024
    assert runs_on_one_thread(budget, threads=2)
    plain = big_budget()
    plan_gradient("sum(x * x)", {"x": x}, None, hessian=False, budget=plain, limits=LIMITS)
    assert plain.serial_steps == 1
